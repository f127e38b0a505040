//! HAProxy as a second reference proxy (when installed): one process, one thread per core,
//! HTTP keep-alive on both sides.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::httpc;
use crate::procs::{self, Proc};

/// True when `haproxy` is on PATH.
pub fn installed() -> bool {
    Command::new("haproxy").arg("-v").output().is_ok()
}

/// The first line of `haproxy -v`.
pub fn version() -> Option<String> {
    let out = Command::new("haproxy").arg("-v").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// The config: `threads` threads, logging off, connection reuse to the backend.
pub fn config(listen: SocketAddr, backend: SocketAddr, threads: usize) -> String {
    format!(
        r#"global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {listen}
    default_backend app
backend app
    server app1 {backend}
"#
    )
}

/// Starts HAProxy in the foreground in front of `backend` and waits until it answers.
pub fn start(
    dir: &Path,
    backend: SocketAddr,
    threads: usize,
) -> anyhow::Result<(Proc, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let listen = procs::free_addr()?;
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, config(listen, backend, threads))?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    let mut proc = Proc::spawn("haproxy", cmd, &dir.join("haproxy.out"))?;
    procs::wait_ready(&mut proc, Duration::from_secs(10), || {
        httpc::answers(listen, "/small")
    })
    .with_context(|| format!("see {}/haproxy.out", dir.display()))?;
    Ok((proc, listen))
}
