//! `strangler run`: load the config, bind the listeners, serve until SIGTERM or SIGINT, then
//! drain.

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
use crate::metrics::Metrics;
use crate::reload::{self, Live};
use crate::server::{self, Drain, Handler};
use crate::upstream::{Body, ClientCache};

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
}

/// The proxy's request handler.
#[derive(Clone)]
pub struct ProxyHandler {
    /// The live config.
    pub live: Arc<Live>,
}

impl Handler for ProxyHandler {
    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        crate::proxy::handle(self.live.clone(), req, peer)
    }

    fn limits(&self) -> Limits {
        self.live.snapshot().config.limits.clone()
    }
}

/// The error `run` fails with when the config is invalid; the diagnostics were printed.
#[derive(Debug, thiserror::Error)]
#[error("invalid config")]
pub struct InvalidConfig;

/// Serves until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let display = opts.config.display().to_string();
    let metrics = Arc::new(Metrics::new());
    let (live, warnings) = match Live::load(&opts.config, ClientCache::default(), metrics) {
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
    let listener = TcpListener::bind(listen_addr)
        .await
        .with_context(|| format!("cannot listen on {listen_addr}"))?;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot bind the admin API on {admin_addr}"))?;

    let _watcher =
        reload::watch_file(live.clone()).with_context(|| format!("cannot watch {display}"))?;
    reload::watch_sighup(live.clone()).context("cannot install the SIGHUP handler")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let drain = Drain::default();
    let guard = drain.guard().context("drain")?;
    let limits = snap.config.limits.clone();
    drop(snap);
    tokio::spawn(server::serve(
        listener,
        limits.clone(),
        ProxyHandler { live: live.clone() },
        shutdown_rx.clone(),
        guard.clone(),
    ));
    tokio::spawn(server::serve(
        admin_listener,
        limits,
        Admin { live: live.clone() },
        shutdown_rx,
        guard,
    ));
    tracing::info!(
        listen = %listen_addr,
        admin = %admin_addr,
        config = %opts.config.display(),
        version = &live.snapshot().config.version[..12],
        "strangler serving"
    );

    wait_for_signal().await?;
    tracing::info!(timeout = ?opts.shutdown_timeout, "shutting down: no new connections, draining in-flight requests");
    let _ = shutdown_tx.send(true);
    if drain.wait(opts.shutdown_timeout).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("shutdown deadline passed with requests still in flight; closing them");
    }
    Ok(())
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
