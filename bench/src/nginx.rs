//! NGINX as the reference reverse proxy: a generated config under a temp prefix, run in the
//! foreground as the current user.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::httpc;
use crate::procs::{self, Proc};

/// True when `nginx` is on PATH.
pub fn installed() -> bool {
    Command::new("nginx").arg("-v").output().is_ok()
}

/// `nginx -v` (it prints to stderr).
pub fn version() -> Option<String> {
    let out = Command::new("nginx").arg("-v").output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    text.lines()
        .next()
        .map(|l| l.trim_start_matches("nginx version:").trim().to_string())
}

/// The config: `workers` worker processes, access log off, a keep-alive upstream pool.
pub fn config(dir: &Path, listen: SocketAddr, backend: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    // Running as root, NGINX would hand its workers to `nobody`; keep them as the current user.
    let user = if nix::unistd::geteuid().is_root() {
        "user root root;\n"
    } else {
        ""
    };
    format!(
        r#"{user}worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Buffer in memory only: never spill a 64 KiB body to a temp file.
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"#
    )
}

/// Starts NGINX in front of `backend` and waits until it answers.
pub fn start(
    dir: &Path,
    backend: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Proc, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let listen = procs::free_addr()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, listen, backend, workers))
        .with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf);
    let mut proc = Proc::spawn("nginx", cmd, &dir.join("nginx.out"))?;
    procs::wait_ready(&mut proc, Duration::from_secs(10), || {
        httpc::answers(listen, "/small")
    })
    .with_context(|| format!("see {}/error.log", dir.display()))?;
    Ok((proc, listen))
}
