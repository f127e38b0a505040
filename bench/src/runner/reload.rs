//! Reloads of a large routes.yaml under load: `POST /reload` alternating two files that differ,
//! while wrk keeps a matched route busy. Counts failed requests and times each reload.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::httpc;
use crate::loadgen::{BackgroundWrk, WrkOptions};
use crate::procs;
use crate::report::{ReloadResult, Summary};

use super::routes;
use super::stack::{self, Bins};

/// Settings of the reload scenario.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Routes per file.
    pub routes: usize,
    /// Reloads.
    pub reloads: usize,
    /// Pause between reloads.
    pub pause: Duration,
}

/// Starts a proxy on the large file, loads it, reloads it `reloads` times.
pub fn run(
    bins: &Bins,
    work: &Path,
    backend: SocketAddr,
    wrk: &WrkOptions,
    opts: &ReloadOptions,
) -> anyhow::Result<ReloadResult> {
    let files = [
        routes::large_config(backend, opts.routes, 0),
        routes::large_config(backend, opts.routes, 1),
    ];
    let dir = work.join("reload");
    let proxy = stack::strangler(bins, &dir, "strangler-reload", &files[0])?;
    let pid = proxy.proc.pid();
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss_kib = procs::status_kib(pid, "VmRSS")?;
    let url = format!("http://{}/hot/small", proxy.listen);
    let opts_wrk = WrkOptions {
        duration: Duration::from_secs(3600),
        ..wrk.clone()
    };
    let load = BackgroundWrk::start(&url, &opts_wrk)?;
    std::thread::sleep(Duration::from_secs(1));
    let mut times = Vec::new();
    let mut failed_reloads = 0;
    for i in 0..opts.reloads {
        let text = &files[(i + 1) % 2];
        // Replace the file whole (rename), as an editor or a deploy would.
        let tmp = dir.join("routes.yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &proxy.config)?;
        let start = Instant::now();
        let answer = httpc::request(proxy.admin, "POST", "/reload");
        times.push(start.elapsed().as_secs_f64() * 1000.0);
        match answer {
            Ok((200, _)) => {}
            Ok((status, body)) => {
                failed_reloads += 1;
                eprintln!("reload {i}: {status} {body}");
            }
            Err(e) => {
                failed_reloads += 1;
                eprintln!("reload {i}: {e:#}");
            }
        }
        eprintln!(
            "reload {}/{}: {:.1} ms",
            i + 1,
            opts.reloads,
            times[times.len() - 1]
        );
        std::thread::sleep(opts.pause);
    }
    std::thread::sleep(Duration::from_secs(1));
    let run = load.finish().context("reading wrk's report")?;
    let peak_rss_kib = procs::status_kib(pid, "VmHWM")?;
    Ok(ReloadResult {
        routes: opts.routes,
        reloads: opts.reloads,
        failed_reloads,
        requests: run.requests,
        failed_requests: run.errors,
        reload_ms: Summary::of(&times),
        idle_rss_kib,
        peak_rss_kib,
    })
}
