//! `strangler compare`: replays a recorded request file against a legacy and a candidate
//! base URL, compares every pair of answers as shadow mode does, prints the report, and
//! fails (exit 1) when the match rate is under a minimum, so a pipeline can gate a cutover.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use http::HeaderName;
use serde_json::{json, Value};

use super::compare::{self, Rules};
use super::exchange;
use super::record::{self, RecordedRequest};
use super::report::{self, Mismatch, RouteStats};
use crate::snapshot::Target;

/// Options of `strangler compare`.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The recorded-request file (JSONL).
    pub requests: PathBuf,
    /// Base URL of the legacy side.
    pub legacy: String,
    /// Base URL of the candidate.
    pub candidate: String,
    /// Minimum match rate, in percent, for success.
    pub min_match: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Timeout for each answer (headers, then body).
    pub timeout: Duration,
    /// What to compare and ignore.
    pub rules: Rules,
    /// Send each request to legacy twice and set aside fields that differ between the two.
    pub noise: bool,
    /// Largest body compared.
    pub max_body_bytes: usize,
    /// Mismatches listed in the report.
    pub keep_mismatches: usize,
}

/// The outcome of a replay.
pub struct ReplayResult {
    /// The report, in the shape of `GET /shadow`.
    pub report: Value,
    /// Matched share of the requests that got both answers or a candidate error, in percent.
    pub match_percent: Option<f64>,
    /// Whether the gate passed.
    pub passed: bool,
}

/// Header names from strings, for the command line.
pub fn header_names(names: &[String]) -> Result<Vec<HeaderName>, String> {
    names
        .iter()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name `{n}`"))
        })
        .collect()
}

/// Runs the replay.
pub async fn replay(opts: &ReplayOptions) -> Result<ReplayResult, String> {
    let requests = record::read_file(&opts.requests)?;
    if requests.is_empty() {
        return Err(format!(
            "{}: no requests to replay",
            opts.requests.display()
        ));
    }
    let registry = crate::health::Registry::default();
    let target = |name: &str, url: &str| -> Result<Arc<Target>, String> {
        let upstream = crate::config::upstream_from_url(name, url, opts.timeout)?;
        Ok(Arc::new(Target::new(upstream, &registry)))
    };
    let legacy = target("legacy", &opts.legacy)?;
    let candidate = target("candidate", &opts.candidate)?;
    let stats = Arc::new(Mutex::new(RouteStats::default()));
    let route = opts
        .requests
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("replay")
        .to_string();

    futures_util::stream::iter(requests)
        .map(|req| one(opts, &legacy, &candidate, &stats, req))
        .buffer_unordered(opts.concurrency.max(1))
        .collect::<Vec<()>>()
        .await;

    let stats = crate::lock::lock(&stats);
    let attempted = stats.compared + stats.errors;
    let match_percent = (attempted > 0).then(|| stats.matched as f64 * 100.0 / attempted as f64);
    let passed = match_percent.is_some_and(|m| m >= opts.min_match);
    Ok(ReplayResult {
        report: json!({ "routes": { route.clone(): stats.to_json(&route) } }),
        match_percent,
        passed,
    })
}

async fn one(
    opts: &ReplayOptions,
    legacy: &Target,
    candidate: &Target,
    stats: &Mutex<RouteStats>,
    req: RecordedRequest,
) {
    let lock = || crate::lock::lock(stats);
    let (method, mut headers, body) = match (req.method(), req.header_map(), req.body_bytes()) {
        (Ok(m), Ok(h), Ok(b)) => (m, h, b),
        _ => return lock().skip("bad_request_record"),
    };
    headers.insert(
        &super::X_STRANGLER_SHADOW,
        http::HeaderValue::from_static("1"),
    );
    let max = opts.max_body_bytes;
    let left = exchange(legacy, &method, &req.path, &headers, &body, max);
    let right = exchange(candidate, &method, &req.path, &headers, &body, max);
    let safe = crate::forward::is_safe_method(&method);
    let second = async {
        match opts.noise && safe {
            true => Some(exchange(legacy, &method, &req.path, &headers, &body, max).await),
            false => None,
        }
    };
    let (left, right, second) = tokio::join!(left, right, second);
    lock().copied += 1;
    let Ok((left, left_latency)) = left else {
        return lock().skip("legacy_failed");
    };
    let (right, right_latency) = match right {
        Ok(ok) => ok,
        Err(super::Failure::TooLarge) => return lock().skip("response_too_large"),
        Err(super::Failure::Upstream(_)) => {
            lock().errors += 1;
            return;
        }
    };
    let diffs = compare::compare(&left, &right, &opts.rules);
    let between_fallbacks = match &second {
        Some(Ok((second, _))) => Some(compare::compare(&left, second, &opts.rules)),
        _ => None,
    };
    let mut s = lock();
    let (real, noise) = s.separate_noise(diffs, between_fallbacks);
    let request = format!("{} {}", req.method, req.path);
    s.compared(
        left_latency,
        right_latency,
        real,
        &noise,
        |differences| Mismatch {
            at: report::now(),
            request,
            request_id: String::new(),
            differences,
        },
        opts.keep_mismatches,
    );
}
