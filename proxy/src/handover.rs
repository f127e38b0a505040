//! Zero-downtime binary upgrades: a new process takes over the listening sockets of the
//! running one, which then drains and exits.
//!
//! `strangler run --upgrade-socket PATH` makes a running proxy listen on a Unix socket at
//! PATH. A new process started with the same flag connects to it and:
//!
//! 1. sends `TAKEOVER`; the old process answers with the roles of its listening sockets
//!    (`listen admin [redirect]`) and the sockets themselves (`SCM_RIGHTS`);
//! 2. starts serving on them, then sends `READY`;
//! 3. the old process answers `DRAINING`, stops accepting, finishes its in-flight requests
//!    (up to `--shutdown-timeout`) and exits 0;
//! 4. the new process replaces the Unix socket at PATH with its own, ready for the next
//!    upgrade.
//!
//! Both processes hold the same listening sockets (not two sockets on one port, as with
//! `SO_REUSEPORT`), so a connection waiting in the kernel's queue is accepted by whichever
//! process asks next and none is reset or refused. Should the new process die before
//! `READY`, the old one keeps serving.
//!
//! rustix passes the descriptors: its `recvmsg` hands received descriptors back as
//! `OwnedFd`s, which turn into listeners without `unsafe` (forbidden in this workspace).

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::TcpListener;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::lock::lock;

/// How long each side waits for the other at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most listening sockets passed (listen, admin, redirect).
const MAX_FDS: usize = 3;

/// The role of a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Where clients connect.
    Listen,
    /// The admin API.
    Admin,
    /// The plain-HTTP redirect listener.
    Redirect,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Listen => "listen",
            Role::Admin => "admin",
            Role::Redirect => "redirect",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        Some(match text {
            "listen" => Role::Listen,
            "admin" => Role::Admin,
            "redirect" => Role::Redirect,
            _ => return None,
        })
    }
}

/// Listening sockets received from the previous process, and the line back to it.
pub struct Takeover {
    /// The sockets by role.
    pub listeners: Vec<(Role, TcpListener)>,
    stream: UnixStream,
}

impl Takeover {
    /// Takes the listener with `role` out of the set.
    pub fn take(&mut self, role: Role) -> Option<TcpListener> {
        let i = self.listeners.iter().position(|(r, _)| *r == role)?;
        Some(self.listeners.remove(i).1)
    }

    /// Tells the previous process this one is serving, so it drains and exits.
    pub fn ready(self) -> anyhow::Result<()> {
        let mut stream = self.stream;
        stream.write_all(b"READY\n").context("send READY")?;
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .context("read the old process's answer")?;
        if line.trim() != "DRAINING" {
            bail!("unexpected answer from the old process: {:?}", line.trim());
        }
        Ok(())
    }
}

/// Asks the process listening at `path` for its sockets. `Ok(None)` when no process is
/// there (no socket file, or a stale one nobody listens on): the caller binds its own.
pub fn take_over(path: &Path) -> anyhow::Result<Option<Takeover>> {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e).with_context(|| format!("connect to {}", path.display())),
    };
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    (&stream)
        .write_all(b"TAKEOVER\n")
        .context("send TAKEOVER")?;

    let mut payload = [0u8; 256];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut payload)];
    let got = rustix::net::recvmsg(&stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
        .context("receive the listening sockets")?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    let text = std::str::from_utf8(&payload[..got.bytes]).context("roles are not text")?;
    let roles: Vec<Role> = text
        .split_whitespace()
        .map(|r| Role::parse(r).with_context(|| format!("unknown socket role `{r}`")))
        .collect::<anyhow::Result<_>>()?;
    if roles.len() != fds.len() {
        bail!(
            "the old process named {} sockets but sent {}",
            roles.len(),
            fds.len()
        );
    }
    let listeners = roles
        .into_iter()
        .zip(fds)
        .map(|(role, fd)| (role, TcpListener::from(fd)))
        .collect();
    Ok(Some(Takeover { listeners, stream }))
}

/// The listening sockets on offer to a new process; `None` once handed over or shut down.
type Offered = Mutex<Option<Vec<(Role, TcpListener)>>>;

/// The running side: serves takeover requests on the Unix socket at its path.
pub struct UpgradeSocket {
    path: PathBuf,
    /// Identifies the socket file this process made, so it removes only its own.
    inode: (u64, u64),
    /// Copies of the listening sockets to hand over; dropped at shutdown so the port stops
    /// accepting once the workers close theirs.
    listeners: Arc<Offered>,
}

impl UpgradeSocket {
    /// Binds the Unix socket at `path` (replacing a stale one or the previous process's) and
    /// serves takeover requests from a thread of its own. `on_takeover` runs once a new
    /// process is serving; the caller then drains and exits.
    pub fn serve(
        path: &Path,
        listeners: Vec<(Role, TcpListener)>,
        on_takeover: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<UpgradeSocket> {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", path.display())),
        }
        let unix = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
        let meta = std::fs::metadata(path)?;
        let listeners = Arc::new(Mutex::new(Some(listeners)));
        let shared = listeners.clone();
        std::thread::Builder::new()
            .name("strangler-upgrade".into())
            .spawn(move || accept_takeovers(unix, shared, on_takeover))
            .context("start the upgrade thread")?;
        Ok(UpgradeSocket {
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            listeners,
        })
    }

    /// Stops offering the sockets, and removes the socket file if it is still this
    /// process's (after a takeover it is the new process's).
    pub fn close(&self) {
        lock(&self.listeners).take();
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.inode {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn accept_takeovers(
    unix: UnixListener,
    listeners: Arc<Offered>,
    on_takeover: impl FnOnce() + Send + 'static,
) {
    for stream in unix.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade socket accept failed");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        match hand_over(&stream, &listeners) {
            Ok(true) => {
                tracing::info!("a new process took over the listening sockets; draining");
                lock(&listeners).take();
                on_takeover();
                return;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "binary upgrade failed; still serving")
            }
        }
    }
}

/// One takeover conversation. `Ok(true)` when the new process said it is serving.
fn hand_over(stream: &UnixStream, listeners: &Offered) -> anyhow::Result<bool> {
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).context("read the request")?;
    if line.trim() != "TAKEOVER" {
        bail!(
            "unexpected request on the upgrade socket: {:?}",
            line.trim()
        );
    }
    {
        let guard = lock(listeners);
        let Some(list) = guard.as_ref() else {
            return Ok(false);
        };
        let roles: Vec<&str> = list.iter().map(|(r, _)| r.as_str()).collect();
        let roles = roles.join(" ");
        let fds: Vec<_> = list.iter().map(|(_, l)| l.as_fd()).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            bail!("too many sockets to pass");
        }
        rustix::net::sendmsg(
            stream,
            &[IoSlice::new(roles.as_bytes())],
            &mut control,
            SendFlags::empty(),
        )
        .context("send the listening sockets")?;
    }
    tracing::info!("listening sockets sent to a new process; waiting for it to serve");
    line.clear();
    reader
        .read_line(&mut line)
        .context("wait for the new process")?;
    if line.trim() != "READY" {
        bail!("the new process did not become ready ({:?})", line.trim());
    }
    let mut w = stream;
    w.write_all(b"DRAINING\n").context("send DRAINING")?;
    Ok(true)
}
