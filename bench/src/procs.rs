//! Child processes (backend, proxies) and what `/proc` says about them.
//!
//! Every child is registered by PID. [`Proc`] stops its child on drop (so a panic or an early
//! error stops everything), and [`install_ctrlc`] stops all registered children on Ctrl-C.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// On Ctrl-C (or SIGTERM), stops every registered child by PID and exits 130.
pub fn install_ctrlc() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        let pids: Vec<u32> = children().clone();
        for &pid in &pids {
            signal(pid, Signal::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(500));
        for &pid in &pids {
            signal(pid, Signal::SIGKILL);
        }
        eprintln!(
            "strangler-bench: interrupted; stopped {} processes",
            pids.len()
        );
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// Sends `sig` to `pid`, ignoring errors (it may have exited).
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// A running child, stopped (SIGTERM, then SIGKILL after 5 s) when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        children().push(child.id());
        Ok(Proc {
            name: name.to_string(),
            child,
            stopped: false,
        })
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the child has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited early: {status}", self.name);
        }
        Ok(())
    }

    /// Sends SIGTERM, waits up to 5 s, then kills.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let pid = self.child.id();
        signal(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        children().retain(|&p| p != pid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 (bound, then released for the child to take).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}

/// Polls until `ready` returns true, failing after `timeout` or when `proc` exits.
pub fn wait_ready(
    proc: &mut Proc,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        proc.check_alive()?;
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after {timeout:?}", proc.name);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Fields of `/proc/PID/stat` after the command name: index 0 is field 3 (state).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc stat")?;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// User + system CPU time of `pid` (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// `pid` and its direct children (NGINX's master and workers).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let ppid = stat_fields(p)
                .ok()
                .and_then(|f| f.get(1).and_then(|s| s.parse::<u32>().ok()));
            if ppid == Some(pid) {
                pids.push(p);
            }
        }
    }
    pids
}

/// CPU ticks summed over a set of PIDs.
pub fn cpu_ticks_all(pids: &[u32]) -> anyhow::Result<u64> {
    pids.iter().map(|&p| cpu_ticks(p)).sum()
}

/// A `VmRSS:`-style line of `/proc/PID/status`, in KiB.
pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
            let n = rest
                .split_whitespace()
                .next()
                .context("empty status line")?;
            return Ok(n.parse()?);
        }
    }
    bail!("no {key} in /proc/{pid}/status")
}

/// Registers a child started outside [`Proc`] (a load generator) for the Ctrl-C handler.
pub fn register(pid: u32) {
    children().push(pid);
}

/// Forgets a child registered with [`register`].
pub fn unregister(pid: u32) {
    children().retain(|&p| p != pid);
}

/// Like [`Command::output`], with the child registered for the Ctrl-C handler meanwhile.
pub fn output_registered(cmd: &mut Command) -> std::io::Result<std::process::Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    register(pid);
    let out = child.wait_with_output();
    unregister(pid);
    out
}
