//! Shadow on versus off: the primary path's latency at the fixed rate for a route in `shadow`
//! mode (copies to a second backend) and the same route in `legacy` mode, interleaved.

use std::time::Duration;

use crate::httpc;
use crate::procs;
use crate::report::{ShadowResult, ShadowSide, Summary};

use super::routes::{SHADOW_OFF_PREFIX, SHADOW_ON_PREFIX};
use super::scenarios::{cpu_us_per_req, Load};
use super::stack::Strangler;

#[derive(Default)]
struct Side {
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<f64>,
    errors: u64,
}

impl Side {
    fn summary(&self) -> ShadowSide {
        ShadowSide {
            p50_ms: Summary::of(&self.p50),
            p99_ms: Summary::of(&self.p99),
            cpu_us_per_req: Summary::of(&self.cpu),
            errors: self.errors,
        }
    }
}

/// Runs the comparison on `proxy` (its config has both routes).
pub fn run(proxy: &Strangler, load: &Load, rounds: u32) -> anyhow::Result<ShadowResult> {
    let mut on = Side::default();
    let mut off = Side::default();
    let pid = proxy.proc.pid();
    for round in 1..=rounds {
        for (prefix, side) in [(SHADOW_ON_PREFIX, &mut on), (SHADOW_OFF_PREFIX, &mut off)] {
            eprintln!("round {round}/{rounds}: shadow {prefix} ...");
            let url = format!("http://{}{prefix}/small", proxy.listen);
            let before = procs::cpu_ticks(pid)?;
            let o = load.oha.run(
                &url,
                load.rate,
                load.wrk.duration,
                load.oha_connections,
                &[],
            )?;
            let after = procs::cpu_ticks(pid)?;
            side.p50.push(o.p50_ms);
            side.p99.push(o.p99_ms);
            side.cpu
                .extend(cpu_us_per_req(after - before, load.ticks, o.requests));
            side.errors += o.errors;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let shadow_report = match httpc::request(proxy.admin, "GET", "/shadow") {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        _ => serde_json::Value::Null,
    };
    let (on, off) = (on.summary(), off.summary());
    let ratio = |a: &Option<Summary>, b: &Option<Summary>| match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    };
    Ok(ShadowResult {
        rate: load.rate,
        p50_ratio: ratio(&on.p50_ms, &off.p50_ms),
        p99_ratio: ratio(&on.p99_ms, &off.p99_ms),
        on,
        off,
        shadow_report,
    })
}
