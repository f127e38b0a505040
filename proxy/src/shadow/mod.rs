//! Shadow traffic: while a route is in `shadow` mode the fallback serves the client, and a
//! copy of the request goes to the route's upstream (the candidate); the two answers are
//! compared and the results reported per route.
//!
//! The client is never delayed: the request body is teed into a bounded buffer as it streams
//! to the fallback, the fallback's response is teed the same way on its way back, and the copy
//! runs in its own task once both are complete. Copies in flight are capped; over the cap a
//! copy is dropped and counted, never queued without bound.
//!
//! - [`compare`]: the comparer (status, headers, JSON or bytes, ignore rules).
//! - [`tee`]: the bounded body copy.
//! - [`report`]: the per-route results.
//! - [`record`]: the recorded-request file format (`strangler compare`).
//! - [`replay`]: `strangler compare`, replaying a request file against two base URLs.

pub mod compare;
pub mod record;
pub mod replay;
pub mod report;
pub mod tee;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, HeaderName, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::{Route, ShadowGlobal, ShadowRoute};
use crate::lock::lock;
use crate::metrics::{Metrics, Name};
use crate::snapshot::Target;
use crate::upstream::{self, FailureKind, OutBody};
use compare::{Answer, Rules};
use report::{Mismatch, RouteStats};
use tee::Captured;

/// The header every copy carries, so a candidate can tell copies from real traffic.
pub static X_STRANGLER_SHADOW: HeaderName = HeaderName::from_static("x-strangler-shadow");

/// The shadow engine: in-flight cap and results, kept across reloads.
pub struct Shadow {
    permits: Arc<Semaphore>,
    /// The cap the permits currently add up to (follows reloads).
    cap: Mutex<usize>,
    routes: Mutex<HashMap<String, Arc<Mutex<RouteStats>>>>,
    metrics: Arc<Metrics>,
}

/// A copy about to be made, decided while the request is being forwarded.
pub struct Job {
    permit: OwnedSemaphorePermit,
    stats: Arc<Mutex<RouteStats>>,
    route: Name,
    settings: ShadowRoute,
    global: ShadowGlobal,
    candidate: Arc<Target>,
    fallback: Arc<Target>,
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    request_id: String,
    /// The client's request body, once it has streamed to the fallback.
    pub request_body: Option<oneshot::Receiver<Captured>>,
}

/// The fallback's answer, as the client got it.
pub struct Primary {
    /// Status, or `None` when the proxy answered 502/504 itself.
    pub status: Option<StatusCode>,
    /// Response headers.
    pub headers: HeaderMap,
    /// Time to the response headers.
    pub latency: Duration,
    /// The body, once it has streamed to the client.
    pub body: Option<oneshot::Receiver<Captured>>,
}

impl Job {
    /// Largest body copied for this route.
    pub fn max_body_bytes(&self) -> usize {
        self.settings.max_body_bytes
    }
}

impl Shadow {
    /// A new engine allowing `max_in_flight` copies at once.
    pub fn new(global: &ShadowGlobal, metrics: Arc<Metrics>) -> Self {
        Shadow {
            permits: Arc::new(Semaphore::new(global.max_in_flight)),
            cap: Mutex::new(global.max_in_flight),
            routes: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Applies a new in-flight cap (after a reload). Lowering it takes effect as copies in
    /// flight finish.
    pub fn set_max_in_flight(&self, new: usize) {
        let mut cap = lock(&self.cap);
        if new > *cap {
            self.permits.add_permits(new - *cap);
        } else if new < *cap {
            let mut excess = new.abs_diff(*cap);
            excess -= self.permits.forget_permits(excess);
            if excess > 0 {
                // The rest are held by copies in flight: retire them as they come back.
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(excess as u32).await {
                        p.forget();
                    }
                });
            }
        }
        *cap = new;
    }

    fn stats(&self, route: &str) -> Arc<Mutex<RouteStats>> {
        let mut routes = lock(&self.routes);
        // Looked up first: the name is copied only for a route's first copy.
        if let Some(stats) = routes.get(route) {
            return stats.clone();
        }
        routes.entry(route.to_string()).or_default().clone()
    }

    /// Decides whether this request is copied: the method must be allowed, the sample must
    /// hit, and a copy slot must be free. Counts what is skipped or dropped.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &self,
        route: &Route,
        route_label: &Name,
        global: &ShadowGlobal,
        candidate: &Arc<Target>,
        fallback: &Arc<Target>,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        request_id: &HeaderValue,
    ) -> Option<Job> {
        let settings = &route.shadow;
        let stats = self.stats(&route.name);
        if !settings.methods.contains(method) {
            self.skip(&stats, route_label, "method");
            return None;
        }
        if settings.sample < 100.0 && fastrand::f64() * 100.0 >= settings.sample {
            self.skip(&stats, route_label, "sampled_out");
            return None;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            lock(&stats).dropped += 1;
            self.metrics.shadow(route_label, "dropped");
            return None;
        };
        let mut headers = headers.clone();
        for h in &settings.strip_headers {
            headers.remove(h);
        }
        headers.insert(&X_STRANGLER_SHADOW, HeaderValue::from_static("1"));
        Some(Job {
            permit,
            stats,
            route: route_label.clone(),
            settings: settings.clone(),
            global: global.clone(),
            candidate: candidate.clone(),
            fallback: fallback.clone(),
            method: method.clone(),
            path_and_query: path_and_query.to_string(),
            headers,
            request_id: request_id.to_str().unwrap_or("").to_string(),
            request_body: None,
        })
    }

    fn skip(&self, stats: &Mutex<RouteStats>, route: &Name, reason: &'static str) {
        lock(stats).skip(reason);
        self.metrics.shadow(route, "skipped");
    }

    /// Makes the copy and compares, in the background.
    pub fn spawn(self: &Arc<Self>, job: Job, primary: Primary) {
        let this = self.clone();
        let copy = async move { this.run(job, primary).await };
        match copies_runtime() {
            // Handed over from a task of the worker's own, which runs once the worker has
            // written the client's answer: waking the copies' thread is a system call, and
            // the client should not wait for it.
            Some(handle) => drop(tokio::spawn(async move {
                drop(handle.spawn(copy));
            })),
            None => drop(tokio::spawn(copy)),
        }
    }

    async fn run(&self, mut job: Job, primary: Primary) {
        let _permit = &job.permit;
        let route = job.route.clone();
        let skip = |reason| self.skip(&job.stats, &route, reason);
        let body = match job.request_body.take() {
            None => Bytes::new(),
            Some(rx) => match rx.await {
                Ok(Captured::Complete(b)) => b,
                Ok(Captured::TooLarge) => return skip("request_body_too_large"),
                Err(_) => return skip("client_aborted"),
            },
        };
        if let Some(path) = &job.settings.record {
            let rec =
                record::RecordedRequest::new(&job.method, &job.path_and_query, &job.headers, &body);
            if let Err(e) = record::append_line(path, &rec) {
                tracing::warn!(route = %route.0, file = %path.display(), error = %e, "cannot record a shadow request");
            }
        }
        lock(&job.stats).copied += 1;
        self.metrics.shadow(&route, "copied");
        let max = job.settings.max_body_bytes;
        let candidate = exchange(
            &job.candidate,
            &job.method,
            &job.path_and_query,
            &job.headers,
            &body,
            max,
        );
        // The noise copy repeats the request on the fallback: only for methods that are safe
        // to repeat, never a write on the live legacy system.
        let safe = crate::forward::is_safe_method(&job.method);
        let second = async {
            match job.settings.noise && safe {
                true => Some(
                    exchange(
                        &job.fallback,
                        &job.method,
                        &job.path_and_query,
                        &job.headers,
                        &body,
                        max,
                    )
                    .await,
                ),
                false => None,
            }
        };
        let (candidate, second) = tokio::join!(candidate, second);
        let Some(status) = primary.status else {
            return skip("fallback_failed");
        };
        let primary_body = match primary.body {
            None => Bytes::new(),
            Some(rx) => match rx.await {
                Ok(Captured::Complete(b)) => b,
                Ok(Captured::TooLarge) => return skip("response_too_large"),
                Err(_) => return skip("client_aborted"),
            },
        };
        let primary_answer = Answer {
            status,
            headers: primary.headers,
            body: primary_body,
        };
        let (candidate, candidate_latency) = match candidate {
            Ok(ok) => ok,
            Err(Failure::TooLarge) => return skip("response_too_large"),
            Err(Failure::Upstream(kind)) => {
                lock(&job.stats).errors += 1;
                self.metrics.shadow(&route, "error");
                tracing::debug!(route = %route.0, kind = kind.as_str(), "shadow copy failed");
                return;
            }
        };
        let rules = Rules {
            headers: job.settings.compare_headers.clone(),
            ignore_headers: job.settings.ignore_headers.clone(),
            ignore_paths: job.settings.ignore.clone(),
        };
        let diffs = compare::compare(&primary_answer, &candidate, &rules);
        let request_line = format!("{} {}", job.method, job.path_and_query);
        let between_fallbacks = match &second {
            Some(Ok((second, _))) => Some(compare::compare(&primary_answer, second, &rules)),
            _ => None,
        };
        let (real, noise) = {
            let mut stats = lock(&job.stats);
            let (real, noise) = stats.separate_noise(diffs, between_fallbacks);
            let outcome_real = real.clone();
            let keep = job.global.keep_mismatches;
            let request_id = job.request_id.clone();
            stats.compared(
                primary.latency,
                candidate_latency,
                outcome_real,
                &noise,
                |differences| Mismatch {
                    at: report::now(),
                    request: request_line.clone(),
                    request_id,
                    differences,
                },
                keep,
            );
            (real, noise)
        };
        let outcome = if real.is_empty() {
            "matched"
        } else {
            "mismatched"
        };
        self.metrics.shadow(&route, outcome);
        self.metrics
            .shadow_latency(&route, primary.latency, candidate_latency);
        if !real.is_empty() {
            tracing::info!(route = %route.0, request = %request_line, request_id = %job.request_id, differences = real.len(), first = %real[0].path, "shadow mismatch");
        }
        if let Some(path) = &job.global.report_file {
            let line = json!({
                "at": report::now(),
                "route": &*route.0,
                "request": request_line,
                "request_id": job.request_id,
                "result": outcome,
                "differences": real,
                "noise": noise,
                "latency_ms": {"fallback": ms(primary.latency), "candidate": ms(candidate_latency)},
            });
            if let Err(e) = record::append_line(path, &line) {
                tracing::warn!(file = %path.display(), error = %e, "cannot append to the shadow report file");
            }
        }
    }

    /// A route's (compared, matched) counts so far.
    pub fn counts(&self, route: &str) -> (u64, u64) {
        let stats = lock(&self.routes).get(route).cloned();
        stats.map_or((0, 0), |s| {
            let s = lock(&s);
            (s.compared, s.matched)
        })
    }

    /// `GET /shadow`: every route that has shadow results.
    pub fn report(&self) -> Value {
        let routes: Vec<(String, Arc<Mutex<RouteStats>>)> = lock(&self.routes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let map: BTreeMap<String, Value> = routes
            .into_iter()
            .map(|(k, v)| {
                let j = lock(&v).to_json(&k);
                (k, j)
            })
            .collect();
        json!({ "routes": map })
    }
}

/// The scheduling priority (nice value) of the copies' thread.
const COPIES_NICE: i32 = 10;

/// The thread copies run on: their own single-threaded runtime, so that sending, reading and
/// comparing copies never sits in a worker's event loop ahead of the requests it serves (the
/// copies' upstream pools are that thread's own). `None` if the thread could not start; then
/// copies run on the worker.
fn copies_runtime() -> Option<&'static tokio::runtime::Handle> {
    static HANDLE: std::sync::OnceLock<Option<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name("strangler-shadow".into())
                .spawn(move || {
                    // Below the workers: on a busy machine the kernel runs the requests
                    // clients wait for first, and copies with what is left.
                    let _ = rustix::process::setpriority_process(
                        Some(rustix::thread::gettid()),
                        COPIES_NICE,
                    );
                    runtime.block_on(std::future::pending::<()>())
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

/// Reads a whole body of at most `max` bytes. (`Limited::collect` over this boxed-error body
/// trips a higher-ranked `Send` check when the copy is spawned.)
async fn read_whole(mut body: crate::upstream::Body, max: usize) -> Result<Bytes, Failure> {
    let mut whole = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Failure::Upstream(FailureKind::Reset))?;
        if let Ok(data) = frame.into_data() {
            if whole.len() + data.len() > max {
                return Err(Failure::TooLarge);
            }
            whole.extend_from_slice(&data);
        }
    }
    Ok(whole.freeze())
}

fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Why a copy produced no answer to compare.
#[derive(Debug)]
pub enum Failure {
    /// The upstream failed.
    Upstream(FailureKind),
    /// The answer was larger than the limit.
    TooLarge,
}

/// Sends one copy and reads the whole answer (up to `max` bytes), within the upstream's
/// timeout for the headers and again for the body.
pub async fn exchange(
    target: &Target,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    max: usize,
) -> Result<(Answer, Duration), Failure> {
    let up = &target.upstream;
    let endpoint = target.pick();
    let _in_flight = endpoint.start();
    let started = Instant::now();
    let sending = upstream::send(
        up,
        &endpoint.addr,
        method,
        path_and_query,
        headers.clone(),
        OutBody::Replayable(body.clone()),
        false,
    );
    let resp = match tokio::time::timeout(up.timeout, sending).await {
        Err(_) => return Err(Failure::Upstream(FailureKind::Timeout)),
        Ok(Err(e)) => return Err(Failure::Upstream(e.kind)),
        Ok(Ok(resp)) => resp,
    };
    let latency = started.elapsed();
    let (parts, body) = resp.into_parts();
    let body = match tokio::time::timeout(up.timeout, read_whole(body, max)).await {
        Err(_) => return Err(Failure::Upstream(FailureKind::Timeout)),
        Ok(Err(failure)) => return Err(failure),
        Ok(Ok(bytes)) => bytes,
    };
    Ok((
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        },
        latency,
    ))
}
