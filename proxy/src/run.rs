//! `strangler run`: load the config, bind the listeners, serve until SIGTERM or SIGINT, then
//! drain.
//!
//! Threads: one worker per core (`--workers`), each a single-threaded tokio runtime running
//! its own accept loop on the shared listening socket and keeping its own upstream connection
//! pools, as NGINX's workers do. A request is handled start to finish on one thread: no work
//! stealing, no cross-thread wake-ups between the client and upstream connections. The main
//! thread runs the control plane: signals, the reload triggers and the admin API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::Admin;
use crate::config::{Limits, DEFAULT_ADMIN, DEFAULT_LISTEN};
use crate::handover::{self, Role, UpgradeSocket};
use crate::metrics::Metrics;
use crate::redirect::Redirect;
use crate::reload::{self, Live};
use crate::server::{self, Drain, DrainGuard, Handler, ShutdownRx};
use crate::upstream::Body;

/// Options of `strangler run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The config file.
    pub config: PathBuf,
    /// Overrides the file's `listen`.
    pub listen: Option<SocketAddr>,
    /// Overrides the file's `admin`.
    pub admin: Option<SocketAddr>,
    /// How long in-flight requests get to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// Worker threads serving traffic; `None` for one per core.
    pub workers: Option<usize>,
    /// The Unix socket binary upgrades hand the listening sockets over on.
    pub upgrade_socket: Option<PathBuf>,
}

/// The proxy's request handler.
#[derive(Clone)]
pub struct ProxyHandler {
    /// The live config.
    pub live: Arc<Live>,
    /// Whether the listener terminates TLS (fixed at start, like the address).
    pub tls: bool,
}

impl Handler for ProxyHandler {
    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        // Boxed: the forwarding future is several KiB, and hyper would otherwise copy it
        // into its dispatcher on every request.
        Box::pin(crate::proxy::handle(self.live.clone(), req, peer))
    }

    fn limits(&self) -> Limits {
        self.live.snapshot().config.limits.clone()
    }

    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        if !self.tls {
            return None;
        }
        // A reload cannot drop `tls` from a TLS listener (it is refused), so this is set.
        self.live
            .snapshot()
            .config
            .tls
            .as_ref()
            .map(|t| t.server.clone())
    }
}

/// The error `run` fails with when the config is invalid; the diagnostics were printed.
#[derive(Debug, thiserror::Error)]
#[error("invalid config")]
pub struct InvalidConfig;

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let display = opts.config.display().to_string();
    let metrics = Arc::new(Metrics::new());
    let (live, warnings) = match Live::load(&opts.config, metrics) {
        Ok(loaded) => loaded,
        Err(diags) => {
            for d in &diags {
                eprintln!("{}", d.display(&display));
            }
            return Err(InvalidConfig.into());
        }
    };
    for w in &warnings {
        eprintln!("{}", w.display(&display));
    }
    let live = Arc::new(live);
    let snap = live.snapshot();
    let default_addr = |s: &str| s.parse::<SocketAddr>().context("default address");
    let listen_addr = match opts.listen.or(snap.config.listen) {
        Some(a) => a,
        None => default_addr(DEFAULT_LISTEN)?,
    };
    let admin_addr = match opts.admin.or(snap.config.admin) {
        Some(a) => a,
        None => default_addr(DEFAULT_ADMIN)?,
    };
    let tls = snap.config.tls.is_some();
    let redirect_addr = snap.config.tls.as_ref().and_then(|t| t.redirect_http);
    if !admin_addr.ip().is_loopback() && snap.config.admin_token.is_none() {
        tracing::warn!(admin = %admin_addr, "the admin API is off loopback without a token: it answers 401 to everything but /healthz (set admin_token_file or STRANGLER_ADMIN_TOKEN)");
    }

    // The listening sockets: from the process being upgraded, else bound here.
    let mut takeover = match &opts.upgrade_socket {
        Some(path) => handover::take_over(path)
            .with_context(|| format!("binary upgrade through {}", path.display()))?,
        None => None,
    };
    let mut socket = |role: Role, addr: SocketAddr, what: &str| -> anyhow::Result<_> {
        if let Some(l) = takeover.as_mut().and_then(|t| t.take(role)) {
            l.set_nonblocking(true)?;
            let inherited = l.local_addr()?;
            if inherited != addr {
                tracing::warn!(%inherited, configured = %addr, "{what}: keeping the inherited socket; a new address needs a full restart");
            }
            return Ok(l);
        }
        bind(addr).with_context(|| format!("cannot bind {what} on {addr}"))
    };
    let listener = socket(Role::Listen, listen_addr, "the listener")?;
    let admin_listener = socket(Role::Admin, admin_addr, "the admin API")?;
    let redirect_listener = match redirect_addr {
        Some(addr) => Some(socket(Role::Redirect, addr, "the HTTP redirect")?),
        None => None,
    };
    // Copies kept to hand over at the next upgrade.
    let mut to_hand_over = vec![
        (Role::Listen, listener.try_clone()?),
        (Role::Admin, admin_listener.try_clone()?),
    ];
    if let Some(l) = &redirect_listener {
        to_hand_over.push((Role::Redirect, l.try_clone()?));
    }
    let workers = opts
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    crate::striped::set_workers(workers);

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let drain = Drain::default();
    let guard = drain.guard().context("drain")?;
    let limits = snap.config.limits.clone();
    drop(snap);

    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let listener = listener
            .try_clone()
            .context("cannot share the listening socket")?;
        let handler = ProxyHandler {
            live: live.clone(),
            tls,
        };
        let (limits, shutdown, guard) = (limits.clone(), shutdown_rx.clone(), guard.clone());
        let thread = std::thread::Builder::new()
            .name(format!("strangler-worker-{i}"))
            .spawn(move || {
                crate::striped::enter_worker(i);
                worker(listener, limits, handler, shutdown, guard)
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    // Each worker holds its own handle on the socket; when they all close theirs at shutdown
    // the port stops accepting.
    drop(listener);

    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("strangler-control")
        .build()
        .context("cannot start the control runtime")?;
    let result = control.block_on(async {
        let _watcher = reload::watch_file(live.clone())
            .with_context(|| format!("cannot watch {display}"))?;
        reload::watch_sighup(live.clone()).context("cannot install the SIGHUP handler")?;
        tokio::spawn(crate::promotion::run(
            live.promotions().clone(),
            live.shadow().clone(),
        ));
        let admin_listener = TcpListener::from_std(admin_listener)?;
        tokio::spawn(server::serve(
            admin_listener,
            limits.clone(),
            Admin::new(live.clone(), admin_addr),
            shutdown_rx.clone(),
            guard.clone(),
        ));
        match redirect_listener {
            Some(l) => {
                tokio::spawn(server::serve(
                    TcpListener::from_std(l)?,
                    limits,
                    Redirect { live: live.clone() },
                    shutdown_rx,
                    guard,
                ));
            }
            // Draining waits for every guard: this one must not outlive the servers.
            None => drop((guard, shutdown_rx)),
        }
        tracing::info!(
            listen = %listen_addr,
            admin = %admin_addr,
            tls,
            redirect_http = ?redirect_addr,
            workers,
            config = %opts.config.display(),
            version = &live.snapshot().config.version[..12],
            "strangler serving"
        );
        // Serving: let the process being upgraded drain, and offer the sockets onwards.
        if let Some(t) = takeover.take() {
            tokio::task::spawn_blocking(move || t.ready())
                .await
                .context("upgrade task")?
                .context("telling the old process to drain")?;
            tracing::info!("took over the listening sockets; the old process is draining");
        }
        let (taken_tx, mut taken_rx) = tokio::sync::mpsc::channel::<()>(1);
        let upgrade = match &opts.upgrade_socket {
            Some(path) => Some(
                UpgradeSocket::serve(path, to_hand_over, move || {
                    let _ = taken_tx.try_send(());
                })
                .with_context(|| format!("cannot serve the upgrade socket {}", path.display()))?,
            ),
            None => {
                drop(to_hand_over);
                None
            }
        };
        tokio::select! {
            r = wait_for_signal() => r?,
            Some(()) = taken_rx.recv() => {}
        }
        if let Some(u) = &upgrade {
            u.close();
        }
        tracing::info!(timeout = ?opts.shutdown_timeout, "shutting down: no new connections, draining in-flight requests");
        let _ = shutdown_tx.send(true);
        if drain.wait(opts.shutdown_timeout).await {
            tracing::info!("drained; bye");
        } else {
            tracing::warn!("shutdown deadline passed with requests still in flight; closing them");
        }
        anyhow::Ok(())
    });
    // Workers whose connections drained have returned; the rest end with the process.
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
    result
}

/// One worker: a single-threaded runtime serving the shared listener.
fn worker(
    listener: std::net::TcpListener,
    limits: Limits,
    handler: ProxyHandler,
    shutdown: ShutdownRx,
    guard: DrainGuard,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a worker runtime");
            return;
        }
    };
    crate::logging::buffer_this_thread();
    runtime.block_on(async move {
        tokio::spawn(crate::logging::flush_periodically());
        tokio::spawn(crate::http1_client::sweep_idle(
            std::time::Duration::from_secs(15),
        ));
        match TcpListener::from_std(listener) {
            // Returns once its connections have finished after shutdown; the control
            // thread's drain deadline bounds that.
            Ok(listener) => server::serve(listener, limits, handler, shutdown, guard).await,
            Err(e) => tracing::error!(error = %e, "cannot register the listener"),
        }
    });
    crate::logging::flush();
}

/// Binds a non-blocking listening socket.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
