//! Starting the backend and the strangler proxy from the release binaries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::httpc;
use crate::procs::{self, Proc};

/// Where the release binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    /// Directory holding `strangler` and `bench-backend`.
    pub dir: PathBuf,
}

impl Bins {
    /// Checks both binaries exist.
    pub fn new(dir: PathBuf) -> anyhow::Result<Bins> {
        for b in ["strangler", "bench-backend"] {
            if !dir.join(b).is_file() {
                bail!(
                    "{} not found: build first with `cargo build --release -p strangler -p strangler-bench`",
                    dir.join(b).display()
                );
            }
        }
        Ok(Bins { dir })
    }
}

/// Starts `bench-backend` on a free port and waits until it answers.
pub fn backend(bins: &Bins, work: &Path, name: &str) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = procs::free_addr()?;
    let mut cmd = Command::new(bins.dir.join("bench-backend"));
    cmd.arg("--listen").arg(addr.to_string());
    let mut p = Proc::spawn(name, cmd, &work.join(format!("{name}.log")))?;
    procs::wait_ready(&mut p, Duration::from_secs(10), || {
        httpc::answers(addr, "/small")
    })?;
    Ok((p, addr))
}

/// A running strangler proxy.
#[derive(Debug)]
pub struct Strangler {
    /// The process.
    pub proc: Proc,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The admin API.
    pub admin: SocketAddr,
    /// Its config file.
    pub config: PathBuf,
}

/// Writes `yaml` to `dir/routes.yaml` and starts `strangler run` on it (access log off:
/// `RUST_LOG=warn`, as NGINX runs with `access_log off`).
pub fn strangler(bins: &Bins, dir: &Path, name: &str, yaml: &str) -> anyhow::Result<Strangler> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("routes.yaml");
    std::fs::write(&config, yaml).with_context(|| format!("writing {}", config.display()))?;
    let listen = procs::free_addr()?;
    let admin = procs::free_addr()?;
    let mut cmd = Command::new(bins.dir.join("strangler"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--admin")
        .arg(admin.to_string())
        .env("RUST_LOG", "warn");
    let log = dir.join(format!("{name}.log"));
    let mut proc = Proc::spawn(name, cmd, &log)?;
    procs::wait_ready(&mut proc, Duration::from_secs(30), || {
        matches!(httpc::request(admin, "GET", "/healthz"), Ok((200, _)))
            && httpc::answers(listen, "/small")
    })
    .with_context(|| format!("see {}", log.display()))?;
    Ok(Strangler {
        proc,
        listen,
        admin,
        config,
    })
}
