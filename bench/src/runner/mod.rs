//! `strangler-bench`: starts the backend, strangler, NGINX (and HAProxy) on 127.0.0.1,
//! measures every scenario over interleaved rounds, prints a Markdown table and writes JSON.

pub mod reload;
pub mod routes;
pub mod scenarios;
pub mod shadow;
pub mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;

use crate::loadgen::{self, Oha, WrkOptions};
use crate::report::{Memory, Results};
use crate::{haproxy, nginx, procs};
use scenarios::{Body, Load, Target};

#[derive(Debug, Parser)]
#[command(
    name = "strangler-bench",
    about = "Benchmarks strangler against the bare backend and NGINX"
)]
struct Args {
    /// Rounds; every scenario runs once per round, interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Fixed request rate for the latency runs (requests/s).
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: u32,
    /// oha connections for the fixed-rate runs.
    #[arg(long, default_value_t = 32)]
    oha_connections: u32,
    /// Routes in the reload scenario's files.
    #[arg(long, default_value_t = 10_000)]
    reload_routes: usize,
    /// Reloads in the reload scenario.
    #[arg(long, default_value_t = 20)]
    reloads: usize,
    /// A tiny smoke run: 1 round of 1 s, 1,000 routes reloaded 4 times.
    #[arg(long)]
    quick: bool,
    /// Skip NGINX even when installed.
    #[arg(long)]
    no_nginx: bool,
    /// Skip HAProxy even when installed.
    #[arg(long)]
    no_haproxy: bool,
    /// Directory of the release binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the JSON goes; temp files go under `OUT/work`.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// Entry point of `strangler-bench`.
pub fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.rounds = 1;
        args.duration = 1;
        args.reload_routes = args.reload_routes.min(1000);
        args.reloads = args.reloads.min(4);
    }
    procs::install_ctrlc()?;
    let bin_dir = match args.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("no directory for this binary")?
            .to_path_buf(),
    };
    let bins = stack::Bins::new(bin_dir)?;
    let out = std::path::absolute(&args.out).context("resolving --out")?;
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // strangler runs one worker thread (a single-threaded runtime) per core.
    let proxy_threads = cores;
    let oha = Oha::detect()?;
    let mut tools = BTreeMap::new();
    tools.insert(
        "wrk".to_string(),
        loadgen::wrk_version().context("wrk not found: apt-get install -y wrk")?,
    );
    tools.insert("oha".to_string(), oha.version.clone());
    let mut notes = Vec::new();
    let use_nginx = !args.no_nginx && nginx::installed();
    if use_nginx {
        tools.insert("nginx".into(), nginx::version().unwrap_or_default());
    } else if !args.no_nginx {
        notes.push(
            "nginx not installed: no NGINX comparison (apt-get install -y nginx-light)".into(),
        );
    }
    let use_haproxy = !args.no_haproxy && haproxy::installed();
    if use_haproxy {
        tools.insert("haproxy".into(), haproxy::version().unwrap_or_default());
    }

    let (_backend, backend) = stack::backend(&bins, &work, "backend")?;
    let (_mirror, mirror) = stack::backend(&bins, &work, "mirror")?;
    let main = stack::strangler(
        &bins,
        &work.join("strangler"),
        "strangler",
        &routes::main_config(backend, mirror),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss_kib = procs::status_kib(main.proc.pid(), "VmRSS")?;

    let nginx = if use_nginx {
        Some(nginx::start(&work.join("nginx"), backend, proxy_threads)?)
    } else {
        None
    };
    let haproxy = if use_haproxy {
        Some(haproxy::start(
            &work.join("haproxy"),
            backend,
            proxy_threads,
        )?)
    } else {
        None
    };

    let script = work.join("canary.lua");
    std::fs::write(&script, scenarios::canary_script(routes::STICKY_HEADER))?;
    let both = Body::BOTH.to_vec();
    let spid = main.proc.pid();
    let mut targets = vec![
        Target {
            key: "direct",
            label: "direct to backend (limit)",
            addr: backend,
            prefix: "",
            cpu_pids: vec![],
            header: None,
            wrk_script: None,
            bodies: both.clone(),
        },
        Target {
            key: "fallthrough",
            label: "strangler fall-through",
            addr: main.listen,
            prefix: "",
            cpu_pids: vec![spid],
            header: None,
            wrk_script: None,
            bodies: both.clone(),
        },
        Target {
            key: "extracted",
            label: "strangler extracted route",
            addr: main.listen,
            prefix: routes::EXTRACTED_PREFIX,
            cpu_pids: vec![spid],
            header: None,
            wrk_script: None,
            bodies: both.clone(),
        },
        Target {
            key: "canary",
            label: "strangler canary 50%",
            addr: main.listen,
            prefix: routes::CANARY_PREFIX,
            cpu_pids: vec![spid],
            header: Some((routes::STICKY_HEADER, "user-42")),
            wrk_script: Some(script.clone()),
            bodies: both.clone(),
        },
    ];
    if let Some((p, addr)) = &nginx {
        targets.push(Target {
            key: "nginx",
            label: "NGINX reverse proxy",
            addr: *addr,
            prefix: "",
            cpu_pids: procs::with_children(p.pid()),
            header: None,
            wrk_script: None,
            bodies: both.clone(),
        });
    }
    if let Some((p, addr)) = &haproxy {
        targets.push(Target {
            key: "haproxy",
            label: "HAProxy",
            addr: *addr,
            prefix: "",
            cpu_pids: vec![p.pid()],
            header: None,
            wrk_script: None,
            bodies: both.clone(),
        });
    }

    let load = Load {
        wrk: WrkOptions {
            threads: args.wrk_threads,
            connections: args.connections,
            duration: Duration::from_secs(args.duration),
        },
        oha,
        rate: args.rate,
        oha_connections: args.oha_connections,
        ticks: procs::clock_ticks(),
    };
    let scenario_results = scenarios::run(&targets, &load, args.rounds)?;
    let shadow = shadow::run(&main, &load, args.rounds)?;
    let peak_rss_kib = procs::status_kib(main.proc.pid(), "VmHWM")?;
    drop(nginx);
    drop(haproxy);
    drop(main);
    let reload = reload::run(
        &bins,
        &work,
        backend,
        &load.wrk,
        &reload::ReloadOptions {
            routes: args.reload_routes,
            reloads: args.reloads,
            pause: Duration::from_millis(250),
        },
    )?;

    let unix_time = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut machine = BTreeMap::new();
    machine.insert("cores".to_string(), json!(cores));
    machine.insert("proxy_threads".to_string(), json!(proxy_threads));
    machine.insert("nginx_workers".to_string(), json!(proxy_threads));
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        machine.insert("kernel".to_string(), json!(k.trim()));
    }
    let mut settings = BTreeMap::new();
    settings.insert("rounds".to_string(), json!(args.rounds));
    settings.insert("duration_secs".to_string(), json!(args.duration));
    settings.insert("rate".to_string(), json!(args.rate));
    settings.insert("wrk_connections".to_string(), json!(args.connections));
    settings.insert("wrk_threads".to_string(), json!(args.wrk_threads));
    settings.insert("oha_connections".to_string(), json!(args.oha_connections));
    settings.insert("quick".to_string(), json!(args.quick));
    let mut results = Results {
        unix_time,
        machine,
        tools,
        settings,
        scenarios: scenario_results,
        shadow: Some(shadow),
        reload: Some(reload),
        memory: Some(Memory {
            idle_rss_kib,
            peak_rss_kib,
            routes: routes::FILLER_ROUTES + 4,
        }),
        ratios: BTreeMap::new(),
        notes,
    };
    results.compute_ratios();
    print!("{}", results.markdown());
    let path = results.write_json(&out)?;
    println!("\nJSON: {}", path.display());
    Ok(())
}
