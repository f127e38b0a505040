//! Results: medians and ranges over rounds, the ratios the targets use, the Markdown table on
//! stdout and the JSON file under `target/bench/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

/// Median, min and max of one figure over the rounds, with the samples.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Median (mean of the two middle samples for an even count).
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Every sample, in round order.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: s[0],
            max: s[n - 1],
            samples: samples.to_vec(),
        })
    }

    fn cell(this: &Option<Summary>, digits: usize) -> String {
        match this {
            Some(s) if s.samples.len() > 1 => {
                format!("{:.d$} ({:.d$}–{:.d$})", s.median, s.min, s.max, d = digits)
            }
            Some(s) => format!("{:.d$}", s.median, d = digits),
            None => "–".to_string(),
        }
    }
}

/// One scenario with one body, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Short key: `direct`, `fallthrough`, `extracted`, `canary`, `nginx`, `haproxy`.
    pub scenario: String,
    /// What it measures, for the table.
    pub label: String,
    /// `small` or `64KiB`.
    pub body: String,
    /// Closed-loop throughput (wrk), requests/s.
    pub rps: Option<Summary>,
    /// Proxy CPU (user+sys) per request during the closed-loop run, microseconds.
    pub cpu_us_per_req: Option<Summary>,
    /// Proxy CPU per request during the fixed-rate run, microseconds.
    pub cpu_us_per_req_at_rate: Option<Summary>,
    /// Latency at the fixed rate (oha, corrected for coordinated omission), ms.
    pub p50_ms: Option<Summary>,
    /// 99th percentile, ms.
    pub p99_ms: Option<Summary>,
    /// 99.9th percentile, ms.
    pub p999_ms: Option<Summary>,
    /// Failed requests over all runs (non-2xx and connection errors).
    pub errors: u64,
}

/// Latency and CPU of one side of the shadow comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowSide {
    /// p50 at the fixed rate, ms.
    pub p50_ms: Option<Summary>,
    /// p99 at the fixed rate, ms.
    pub p99_ms: Option<Summary>,
    /// Proxy CPU per request, microseconds.
    pub cpu_us_per_req: Option<Summary>,
    /// Failed requests.
    pub errors: u64,
}

/// Shadow on (copies to a second backend) versus the same route in `legacy` mode.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowResult {
    /// Requests per second offered.
    pub rate: u32,
    /// Route in `shadow` mode.
    pub on: ShadowSide,
    /// Route in `legacy` mode.
    pub off: ShadowSide,
    /// Median p50 on / off.
    pub p50_ratio: Option<f64>,
    /// Median p99 on / off.
    pub p99_ratio: Option<f64>,
    /// The proxy's `GET /shadow` after the runs (shows copies were compared).
    pub shadow_report: serde_json::Value,
}

/// Reloads of a large routes.yaml under load.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadResult {
    /// Routes in each file.
    pub routes: usize,
    /// `POST /reload` calls made.
    pub reloads: usize,
    /// Reloads that did not answer 200.
    pub failed_reloads: usize,
    /// Requests the load generator completed meanwhile.
    pub requests: u64,
    /// Failed requests (non-2xx and connection errors); the target is 0.
    pub failed_requests: u64,
    /// Round trip of each `POST /reload`, ms.
    pub reload_ms: Option<Summary>,
    /// Resident memory of that proxy after start, KiB.
    pub idle_rss_kib: u64,
    /// Its peak resident memory after the reloads, KiB.
    pub peak_rss_kib: u64,
}

/// Resident memory of the main proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// VmRSS after start, before the measured traffic, KiB.
    pub idle_rss_kib: u64,
    /// VmHWM after all runs, KiB.
    pub peak_rss_kib: u64,
    /// Routes in its config.
    pub routes: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// When it ran (seconds since the epoch).
    pub unix_time: u64,
    /// The machine.
    pub machine: BTreeMap<String, serde_json::Value>,
    /// Versions of the tools.
    pub tools: BTreeMap<String, String>,
    /// Run settings.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Throughput, latency and CPU per scenario and body.
    pub scenarios: Vec<ScenarioResult>,
    /// The shadow comparison.
    pub shadow: Option<ShadowResult>,
    /// The reload scenario.
    pub reload: Option<ReloadResult>,
    /// Memory of the main proxy.
    pub memory: Option<Memory>,
    /// The ratios the performance targets are stated in.
    pub ratios: BTreeMap<String, f64>,
    /// Things that did not run, and why.
    pub notes: Vec<String>,
}

impl Results {
    fn find(&self, scenario: &str, body: &str) -> Option<&ScenarioResult> {
        self.scenarios
            .iter()
            .find(|s| s.scenario == scenario && s.body == body)
    }

    /// Fills [`Results::ratios`] from the medians.
    pub fn compute_ratios(&mut self) {
        let mut r = BTreeMap::new();
        let med = |s: &Option<Summary>| s.as_ref().map(|s| s.median);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        for body in ["small", "64KiB"] {
            let key = if body == "small" { "small" } else { "64k" };
            for other in ["nginx", "haproxy"] {
                let (Some(s), Some(o)) = (self.find("fallthrough", body), self.find(other, body))
                else {
                    continue;
                };
                let pairs = [
                    (
                        "cpu_per_req",
                        med(&s.cpu_us_per_req),
                        med(&o.cpu_us_per_req),
                    ),
                    (
                        "cpu_per_req_at_rate",
                        med(&s.cpu_us_per_req_at_rate),
                        med(&o.cpu_us_per_req_at_rate),
                    ),
                    ("throughput", med(&s.rps), med(&o.rps)),
                    ("p50", med(&s.p50_ms), med(&o.p50_ms)),
                    ("p99", med(&s.p99_ms), med(&o.p99_ms)),
                ];
                for (what, a, b) in pairs {
                    if let Some(x) = ratio(a, b) {
                        r.insert(format!("{what}_strangler_over_{other}_{key}"), x);
                    }
                }
            }
        }
        if let Some(sh) = &self.shadow {
            if let Some(x) = sh.p99_ratio {
                r.insert("shadow_p99_on_over_off".into(), x);
            }
            if let Some(x) = sh.p50_ratio {
                r.insert("shadow_p50_on_over_off".into(), x);
            }
        }
        if let Some(rl) = &self.reload {
            r.insert("reload_failed_requests".into(), rl.failed_requests as f64);
            if let Some(t) = &rl.reload_ms {
                r.insert("reload_ms_median".into(), t.median);
                r.insert("reload_ms_max".into(), t.max);
            }
        }
        if let Some(m) = &self.memory {
            r.insert("idle_rss_mib".into(), m.idle_rss_kib as f64 / 1024.0);
            r.insert("peak_rss_mib".into(), m.peak_rss_kib as f64 / 1024.0);
        }
        self.ratios = r;
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let m = |k: &str| {
            self.machine
                .get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "## Strangler benchmark ({} cores, proxy threads {}, {})\n",
            m("cores"),
            m("proxy_threads"),
            self.tools
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let s = |k: &str| {
            self.settings
                .get(k)
                .map(|v| v.to_string())
                .unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "Median (min–max) over {} rounds of {} s per measurement; closed loop: wrk {} connections; fixed rate: oha at {} req/s.\n",
            s("rounds"),
            s("duration_secs"),
            s("wrk_connections"),
            s("rate")
        );
        out.push_str("| scenario | body | req/s (closed loop) | proxy CPU µs/req (closed loop) | proxy CPU µs/req (fixed rate) | p50 ms | p99 ms | p99.9 ms | errors |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for r in &self.scenarios {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.label,
                r.body,
                Summary::cell(&r.rps, 0),
                Summary::cell(&r.cpu_us_per_req, 1),
                Summary::cell(&r.cpu_us_per_req_at_rate, 1),
                Summary::cell(&r.p50_ms, 3),
                Summary::cell(&r.p99_ms, 3),
                Summary::cell(&r.p999_ms, 3),
                r.errors
            );
        }
        if let Some(sh) = &self.shadow {
            let _ = writeln!(
                out,
                "\n### Shadow: primary path at {} req/s, small body\n",
                sh.rate
            );
            out.push_str("| route mode | p50 ms | p99 ms | proxy CPU µs/req | errors |\n");
            out.push_str("| --- | --- | --- | --- | --- |\n");
            for (name, side) in [("shadow (copies on)", &sh.on), ("legacy (off)", &sh.off)] {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} |",
                    name,
                    Summary::cell(&side.p50_ms, 3),
                    Summary::cell(&side.p99_ms, 3),
                    Summary::cell(&side.cpu_us_per_req, 1),
                    side.errors
                );
            }
        }
        if let Some(rl) = &self.reload {
            let _ = writeln!(
                out,
                "\n### Reload: {} routes, {} reloads under load\n",
                rl.routes, rl.reloads
            );
            out.push_str("| requests | failed requests | failed reloads | reload ms median | reload ms max | RSS idle MiB | RSS peak MiB |\n");
            out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
            let t = |f: fn(&Summary) -> f64| {
                rl.reload_ms
                    .as_ref()
                    .map(|s| format!("{:.1}", f(s)))
                    .unwrap_or_else(|| "–".into())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {:.1} | {:.1} |",
                rl.requests,
                rl.failed_requests,
                rl.failed_reloads,
                t(|s| s.median),
                t(|s| s.max),
                rl.idle_rss_kib as f64 / 1024.0,
                rl.peak_rss_kib as f64 / 1024.0
            );
        }
        if let Some(mem) = &self.memory {
            let _ = writeln!(
                out,
                "\nMain proxy ({} routes): idle RSS {:.1} MiB, peak RSS {:.1} MiB.",
                mem.routes,
                mem.idle_rss_kib as f64 / 1024.0,
                mem.peak_rss_kib as f64 / 1024.0
            );
        }
        if !self.ratios.is_empty() {
            out.push_str(
                "\n### Ratios (medians of this run)\n\n| ratio | value |\n| --- | --- |\n",
            );
            for (k, v) in &self.ratios {
                let _ = writeln!(out, "| {k} | {v:.3} |");
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "\nNote: {n}");
        }
        out
    }

    /// Writes `results-<unix time>.json` and `latest.json` under `dir`; returns the first.
    pub fn write_json(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let path = dir.join(format!("results-{}.json", self.unix_time));
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
        std::fs::write(dir.join("latest.json"), &json)?;
        Ok(path)
    }
}
