//! The throughput/latency/CPU scenarios, interleaved over rounds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::loadgen::{self, Oha, WrkOptions};
use crate::procs;
use crate::report::{ScenarioResult, Summary};

/// One thing to measure: where the load goes and whose CPU is counted.
#[derive(Debug, Clone)]
pub struct Target {
    /// Short key (`direct`, `fallthrough`, ...).
    pub key: &'static str,
    /// What it is, for the table.
    pub label: &'static str,
    /// Address the load goes to.
    pub addr: SocketAddr,
    /// Path prefix put before `/small` or `/large`.
    pub prefix: &'static str,
    /// Processes whose CPU time is counted (empty: none, for the direct run).
    pub cpu_pids: Vec<u32>,
    /// A fixed header for oha.
    pub header: Option<(&'static str, &'static str)>,
    /// A wrk Lua script (varied canary keys).
    pub wrk_script: Option<PathBuf>,
    /// Bodies to run.
    pub bodies: Vec<Body>,
}

/// The two response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// ~100 bytes of JSON.
    Small,
    /// 64 KiB.
    Large,
}

impl Body {
    /// Both bodies.
    pub const BOTH: [Body; 2] = [Body::Small, Body::Large];

    fn path(self) -> &'static str {
        match self {
            Body::Small => "/small",
            Body::Large => "/large",
        }
    }

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Body::Small => "small",
            Body::Large => "64KiB",
        }
    }
}

/// Load settings shared by every measurement.
#[derive(Debug, Clone)]
pub struct Load {
    /// Closed-loop settings.
    pub wrk: WrkOptions,
    /// oha.
    pub oha: Oha,
    /// Fixed rate, requests/s.
    pub rate: u32,
    /// oha connections.
    pub oha_connections: u32,
    /// Clock ticks per second.
    pub ticks: u64,
}

/// CPU microseconds per request over a window, from clock ticks.
pub fn cpu_us_per_req(ticks: u64, per_sec: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| ticks as f64 * 1e6 / per_sec as f64 / requests as f64)
}

#[derive(Debug, Default)]
struct Samples {
    rps: Vec<f64>,
    cpu: Vec<f64>,
    cpu_rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    p999: Vec<f64>,
    errors: u64,
}

fn ticks_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        None
    } else {
        procs::cpu_ticks_all(pids).ok()
    }
}

/// Runs every target with every body, `rounds` times, interleaved: round 1 runs A, B, C...,
/// round 2 runs them again, so slow drifts of the machine hit every target alike.
pub fn run(targets: &[Target], load: &Load, rounds: u32) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut samples: Vec<Vec<Samples>> = targets
        .iter()
        .map(|t| t.bodies.iter().map(|_| Samples::default()).collect())
        .collect();
    // Warm-up: a short closed-loop run of each, not recorded.
    let warm = WrkOptions {
        duration: Duration::from_secs(1),
        ..load.wrk.clone()
    };
    for t in targets {
        for b in &t.bodies {
            let url = format!("http://{}{}{}", t.addr, t.prefix, b.path());
            loadgen::wrk(&url, &warm, t.wrk_script.as_deref())?;
        }
    }
    for round in 1..=rounds {
        for (ti, t) in targets.iter().enumerate() {
            for (bi, b) in t.bodies.iter().enumerate() {
                let url = format!("http://{}{}{}", t.addr, t.prefix, b.path());
                eprintln!("round {round}/{rounds}: {} {} ...", t.label, b.name());
                let s = &mut samples[ti][bi];
                let before = ticks_of(&t.cpu_pids);
                let w = loadgen::wrk(&url, &load.wrk, t.wrk_script.as_deref())?;
                let after = ticks_of(&t.cpu_pids);
                s.rps.push(w.rps);
                s.errors += w.errors;
                if let (Some(a), Some(b)) = (before, after) {
                    s.cpu.extend(cpu_us_per_req(b - a, load.ticks, w.requests));
                }
                std::thread::sleep(Duration::from_millis(200));
                let headers: Vec<(&str, &str)> = t.header.into_iter().collect();
                let before = ticks_of(&t.cpu_pids);
                let o = load.oha.run(
                    &url,
                    load.rate,
                    load.wrk.duration,
                    load.oha_connections,
                    &headers,
                )?;
                let after = ticks_of(&t.cpu_pids);
                if let (Some(a), Some(b)) = (before, after) {
                    s.cpu_rate
                        .extend(cpu_us_per_req(b - a, load.ticks, o.requests));
                }
                s.p50.push(o.p50_ms);
                s.p99.push(o.p99_ms);
                s.p999.push(o.p999_ms);
                s.errors += o.errors;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    let mut out = Vec::new();
    for (t, per_body) in targets.iter().zip(samples) {
        for (b, s) in t.bodies.iter().zip(per_body) {
            out.push(ScenarioResult {
                scenario: t.key.to_string(),
                label: t.label.to_string(),
                body: b.name().to_string(),
                rps: Summary::of(&s.rps),
                cpu_us_per_req: Summary::of(&s.cpu),
                cpu_us_per_req_at_rate: Summary::of(&s.cpu_rate),
                p50_ms: Summary::of(&s.p50),
                p99_ms: Summary::of(&s.p99),
                p999_ms: Summary::of(&s.p999),
                errors: s.errors,
            });
        }
    }
    Ok(out)
}

/// A wrk script sending `x-user-id` keys `user-1`..`user-256` in turn (prebuilt requests).
pub fn canary_script(header: &str) -> String {
    format!(
        r#"local reqs = {{}}
local i = 0
init = function(args)
  for n = 1, 256 do
    reqs[n] = wrk.format(nil, nil, {{["{header}"] = "user-" .. n}})
  end
end
request = function()
  i = (i % 256) + 1
  return reqs[i]
end
"#
    )
}
