//! Prometheus metrics, served as text format 0.0.4 on the admin API.
//!
//! Label values are [`Name`]s (shared strings) so that recording a request allocates nothing.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::striped::{StripedCounter, StripedHistogram, LATENCY_BUCKETS};
use crate::upstream::FailureKind;

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(0);

/// Request series handles a worker keeps, at most.
const MAX_CACHED_SERIES: usize = 4096;

thread_local! {
    /// This thread's handles to the request series it has recorded: recording a request
    /// then takes no lock and hashes no string.
    static SERIES: RefCell<HashMap<SeriesKey, (StripedCounter, StripedHistogram), BuildHasherDefault<AddressHasher>>> =
        RefCell::new(HashMap::default());
}

/// A request series by the identity of its labels: names compare by address (the cache
/// holds them, so an address cannot be reused while cached), as do the static labels.
struct SeriesKey {
    metrics: u64,
    route: Name,
    upstream: Name,
    method: &'static str,
    status: &'static str,
}

impl SeriesKey {
    fn addresses(&self) -> [usize; 4] {
        [
            Arc::as_ptr(&self.route.0).cast::<u8>() as usize,
            Arc::as_ptr(&self.upstream.0).cast::<u8>() as usize,
            self.method.as_ptr() as usize,
            self.status.as_ptr() as usize,
        ]
    }
}

impl PartialEq for SeriesKey {
    fn eq(&self, other: &Self) -> bool {
        self.metrics == other.metrics && self.addresses() == other.addresses()
    }
}

impl Eq for SeriesKey {}

impl std::hash::Hash for SeriesKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.metrics);
        for a in self.addresses() {
            state.write_usize(a);
        }
    }
}

/// A multiply-rotate hash for keys made of addresses (FxHash's mixing step).
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A shared, cheaply cloned label value (a route or upstream name).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Name(pub Arc<str>);

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::from(s))
    }
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(&self.0)
    }
}

/// The route label of requests no route covers.
pub const FALLBACK_ROUTE: &str = "_fallback";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Name,
    upstream: Name,
    method: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    route: Name,
    upstream: Name,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    upstream: Name,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLabels {
    route: Name,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShadowLatencyLabels {
    route: Name,
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CircuitLabels {
    upstream: Name,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailoverLabels {
    route: Name,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Name,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    /// Tells this instance's series apart in the workers' handle caches.
    id: u64,
    requests: Family<RequestLabels, StripedCounter>,
    durations: Family<DurationLabels, StripedHistogram>,
    upstream_errors: Family<ErrorLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    shadow: Family<ShadowLabels, Counter>,
    shadow_latency: Family<ShadowLatencyLabels, Histogram>,
    retries: Family<UpstreamLabel, Counter>,
    failovers: Family<FailoverLabels, Counter>,
    ejections: Family<UpstreamLabel, Counter>,
    circuit: Family<CircuitLabels, Counter>,
    promotion_percent: Family<RouteLabel, Gauge<f64, AtomicU64>>,
    rollbacks: Family<RouteLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("strangler");
        let requests = Family::<RequestLabels, StripedCounter>::default();
        let durations = Family::<DurationLabels, StripedHistogram>::default();
        let upstream_errors = Family::<ErrorLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by route, upstream, method and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from receiving a request to sending the response headers",
            durations.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream requests that failed, by upstream and kind (connect, timeout, reset, protocol)",
            upstream_errors.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads, by result (ok, error)",
            reloads.clone(),
        );
        let shadow = Family::<ShadowLabels, Counter>::default();
        let shadow_latency = Family::<ShadowLatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(LATENCY_BUCKETS)
        });
        registry.register(
            "shadow",
            "Shadow copies by route and outcome (copied, matched, mismatched, error, skipped, dropped)",
            shadow.clone(),
        );
        registry.register(
            "shadow_latency_seconds",
            "Time to response headers of compared shadow requests, by side (fallback, candidate)",
            shadow_latency.clone(),
        );
        let retries = Family::<UpstreamLabel, Counter>::default();
        let failovers = Family::<FailoverLabels, Counter>::default();
        let ejections = Family::<UpstreamLabel, Counter>::default();
        let circuit = Family::<CircuitLabels, Counter>::default();
        let promotion_percent = Family::<RouteLabel, Gauge<f64, AtomicU64>>::default();
        let rollbacks = Family::<RouteLabel, Counter>::default();
        registry.register("retries", "Retries sent, by upstream", retries.clone());
        registry.register(
            "failovers",
            "Requests failed over to the fallback, by route and reason (connect, timeout, reset, 5xx, circuit_open)",
            failovers.clone(),
        );
        registry.register(
            "outlier_ejections",
            "Instances taken out of rotation after failures in a row, by upstream",
            ejections.clone(),
        );
        registry.register(
            "circuit_transitions",
            "Circuit breaker state changes, by upstream and new state (open, half_open, closed)",
            circuit.clone(),
        );
        registry.register(
            "promotion_percent",
            "Share of a promoted route served by its upstream, as the promotion plan set it",
            promotion_percent.clone(),
        );
        registry.register(
            "promotion_rollbacks",
            "Automatic rollbacks of promoted routes",
            rollbacks.clone(),
        );
        // Both results exist from the start, so a rate() over them works before the first error.
        for result in ["ok", "error"] {
            reloads.get_or_create(&ReloadLabels { result }).inc_by(0);
        }
        Metrics {
            registry,
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            requests,
            durations,
            upstream_errors,
            reloads,
            shadow,
            shadow_latency,
            retries,
            failovers,
            ejections,
            circuit,
            promotion_percent,
            rollbacks,
        }
    }

    /// Counts a retry.
    pub fn retry(&self, upstream: &Name) {
        self.retries
            .get_or_create(&UpstreamLabel {
                upstream: upstream.clone(),
            })
            .inc();
    }

    /// Counts a failover to the fallback.
    pub fn failover(&self, route: &str, reason: &'static str) {
        self.failovers
            .get_or_create(&FailoverLabels {
                route: Name::from(route),
                reason,
            })
            .inc();
    }

    /// Counts an outlier ejection.
    pub fn ejection(&self, upstream: &Name) {
        self.ejections
            .get_or_create(&UpstreamLabel {
                upstream: upstream.clone(),
            })
            .inc();
    }

    /// Counts a circuit breaker state change.
    pub fn circuit(&self, upstream: &Name, phase: crate::breaker::Phase) {
        let state = match phase {
            crate::breaker::Phase::Closed => "closed",
            crate::breaker::Phase::Open => "open",
            crate::breaker::Phase::HalfOpen => "half_open",
        };
        self.circuit
            .get_or_create(&CircuitLabels {
                upstream: upstream.clone(),
                state,
            })
            .inc();
    }

    /// Sets a promoted route's share.
    pub fn promotion_percent(&self, route: &str, percent: f64) {
        self.promotion_percent
            .get_or_create(&RouteLabel {
                route: Name::from(route),
            })
            .set(percent);
    }

    /// Counts an automatic rollback.
    pub fn rollback(&self, route: &str) {
        self.rollbacks
            .get_or_create(&RouteLabel {
                route: Name::from(route),
            })
            .inc();
    }

    /// Counts a shadow outcome.
    pub fn shadow(&self, route: &Name, outcome: &'static str) {
        self.shadow
            .get_or_create(&ShadowLabels {
                route: route.clone(),
                outcome,
            })
            .inc();
    }

    /// Records both sides' latency of a compared shadow request.
    pub fn shadow_latency(&self, route: &Name, fallback: Duration, candidate: Duration) {
        for (side, d) in [("fallback", fallback), ("candidate", candidate)] {
            self.shadow_latency
                .get_or_create(&ShadowLatencyLabels {
                    route: route.clone(),
                    side,
                })
                .observe(d.as_secs_f64());
        }
    }

    /// Records one request.
    pub fn request(
        &self,
        route: &Name,
        upstream: &Name,
        method: &Method,
        status: u16,
        elapsed: Duration,
    ) {
        let key = SeriesKey {
            metrics: self.id,
            route: route.clone(),
            upstream: upstream.clone(),
            method: method_label(method),
            status: status_class(status),
        };
        let (count, duration) = SERIES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(handles) = cache.get(&key) {
                return handles.clone();
            }
            let handles = (
                self.requests
                    .get_or_create(&RequestLabels {
                        route: key.route.clone(),
                        upstream: key.upstream.clone(),
                        method: key.method,
                        status: key.status,
                    })
                    .clone(),
                self.durations
                    .get_or_create(&DurationLabels {
                        route: key.route.clone(),
                        upstream: key.upstream.clone(),
                        method: key.method,
                    })
                    .clone(),
            );
            if cache.len() >= MAX_CACHED_SERIES {
                cache.clear();
            }
            cache.insert(key, handles.clone());
            handles
        });
        count.inc();
        duration.observe(elapsed);
    }

    /// Records an upstream failure.
    pub fn upstream_error(&self, upstream: &Name, kind: FailureKind) {
        self.upstream_errors
            .get_or_create(&ErrorLabels {
                upstream: upstream.clone(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Records a reload attempt.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The metrics in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut open_metrics = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut open_metrics, &self.registry)
            .is_err()
        {
            return String::new();
        }
        to_text_004(&open_metrics)
    }
}

/// The encoder writes OpenMetrics, whose counter families are named without `_total`. Text
/// format 0.0.4 names the family as its samples are named, so counter metadata lines get the
/// suffix back.
fn to_text_004(open_metrics: &str) -> String {
    let mut out = String::with_capacity(open_metrics.len());
    let mut counters = Vec::new();
    for line in open_metrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|l| l.strip_suffix(" counter"))
        {
            counters.push(name.to_string());
        }
    }
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        match meta {
            Some(prefix) => {
                let rest = &line[prefix.len()..];
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.iter().any(|c| c == name) {
                    "_total"
                } else {
                    ""
                };
                let _ = writeln!(out, "{prefix}{name}{suffix} {tail}");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn method_label(method: &Method) -> &'static str {
    // Methods are client input: anything unusual shares one label so cardinality stays bounded.
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_004_names() {
        let m = Metrics::new();
        let route = Name::from("catalog");
        let up = Name::from("legacy");
        m.request(&route, &up, &Method::GET, 200, Duration::from_millis(3));
        m.upstream_error(&up, FailureKind::Timeout);
        m.reload(true);
        let text = m.render();
        assert!(
            text.contains("# TYPE strangler_requests_total counter"),
            "{text}"
        );
        assert!(text.contains(
            "strangler_requests_total{route=\"catalog\",upstream=\"legacy\",method=\"GET\",status=\"2xx\"} 1"
        ));
        assert!(text.contains("strangler_request_duration_seconds_bucket{"));
        assert!(text
            .contains("strangler_upstream_errors_total{upstream=\"legacy\",kind=\"timeout\"} 1"));
        assert!(text.contains("strangler_config_reloads_total{result=\"ok\"} 1"));
        assert!(text.contains("strangler_config_reloads_total{result=\"error\"} 0"));
        assert!(!text.contains("# EOF"));
    }
}
