//! The validated config: what the proxy, `explain` and the monolith's adapters work from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, Method};
use serde::Serialize;

/// Default address clients connect to.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default address of the admin API.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9901";

/// A validated `routes.yaml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where clients connect, if the file says.
    pub listen: Option<SocketAddr>,
    /// Where the admin API listens, if the file says.
    pub admin: Option<SocketAddr>,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// The upstream every request no route covers goes to.
    pub fallback: String,
    /// Routes in file order.
    pub routes: Vec<Route>,
    /// Which implementation the monolith uses for each capability.
    pub adapters: BTreeMap<String, AdapterMode>,
    /// Connection and request limits.
    pub limits: Limits,
    /// Shadow settings shared by all routes.
    pub shadow: ShadowGlobal,
    /// TLS termination, when the file has a `tls:` section.
    pub tls: Option<Tls>,
    /// Peers whose `X-Forwarded-*` headers are believed (`trusted_proxies:`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The bearer token the admin API asks for when it is not on loopback.
    pub admin_token: Option<AdminToken>,
    /// Hex SHA-256 of the file's bytes.
    pub version: String,
}

impl Config {
    /// The upstream named `name`. Validation guarantees every name a route uses exists.
    pub fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.get(name)
    }
}

/// One upstream: where it is (one or several instances), how long to wait for it, and how
/// to protect it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// Its name in the file.
    pub name: String,
    /// The (first) base URL as written.
    pub url: String,
    /// The instances, in file order.
    #[serde(rename = "urls")]
    pub endpoints: Vec<EndpointAddr>,
    /// Time from sending the request to receiving the response headers.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// Time allowed to open a TCP connection.
    #[serde(with = "duration_text")]
    pub connect_timeout: Duration,
    /// For an `https://` upstream: how its certificate is verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// How a request picks an instance.
    pub balance: Balance,
    /// Fail fast while the upstream is failing; `None` when off.
    pub circuit_breaker: Option<BreakerPolicy>,
    /// Take failing instances out of rotation for a while; `None` when off.
    pub outlier: Option<OutlierPolicy>,
}

/// One instance of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EndpointAddr {
    /// The base URL as written.
    pub url: String,
    /// `host:port`.
    #[serde(skip)]
    pub origin: http::uri::Authority,
    /// Path prefix from the URL, without a trailing slash (empty for none).
    #[serde(skip)]
    pub base_path: String,
}

/// How a request picks one of an upstream's instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Two instances at random, the one with fewer requests in flight (the default).
    P2c,
    /// The instance with the fewest requests in flight.
    LeastRequests,
}

/// When a circuit breaker opens, and for how long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerPolicy {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// Or when this percent of requests failed over `window` ...
    pub error_rate: u32,
    /// ... given at least this many requests in the window.
    pub min_requests: u32,
    /// The error-rate window.
    #[serde(with = "duration_text")]
    pub window: Duration,
    /// How long it stays open before letting a probe through (half-open).
    #[serde(with = "duration_text")]
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            consecutive_failures: 5,
            error_rate: 50,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(10),
        }
    }
}

/// Passive outlier ejection: an instance that keeps failing is taken out of rotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutlierPolicy {
    /// Ejected after this many failures in a row.
    pub consecutive_failures: u32,
    /// For this long the first time (doubling each time after, up to 10 times).
    #[serde(with = "duration_text")]
    pub eject_for: Duration,
    /// At most this percent of the instances are out at once (at least one always serves).
    pub max_ejected_percent: u32,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(10),
            max_ejected_percent: 50,
        }
    }
}

/// A kind of upstream failure, as named in `on:` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// The connection was refused or could not be opened.
    Connect,
    /// No response headers within the timeout.
    Timeout,
    /// The connection broke mid-exchange.
    Reset,
    /// The upstream answered 502, 503 or 504.
    #[serde(rename = "5xx")]
    Status5xx,
}

/// Falling back to the legacy fallback when a canary's or extracted route's upstream fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverPolicy {
    /// Which failures fail over (default connect and timeout). An open circuit always does.
    pub on: Vec<FailOn>,
}

/// Retrying a failed request on the route's upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Extra attempts after the first.
    pub attempts: u32,
    /// Base of the jittered exponential backoff.
    #[serde(with = "duration_text")]
    pub backoff: Duration,
    /// Retries allowed, as a percent of requests to the upstream (a budget, so retries
    /// cannot multiply an outage).
    pub budget: u32,
    /// Which failures are retried (default connect and reset).
    pub on: Vec<FailOn>,
}

impl Upstream {
    /// `https` when the upstream is reached over TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// How an `https://` upstream's certificate is verified.
#[derive(Clone, Serialize)]
pub struct UpstreamTls {
    /// The CA file (`ca:`), or `None` for the system roots.
    pub ca: Option<std::path::PathBuf>,
    /// Identifies the trust anchors: `system`, or the hex SHA-256 of the CA file. Pools are
    /// keyed by it, so a changed CA file gets a new pool while an unchanged one keeps its
    /// warm connections across reloads.
    #[serde(skip)]
    pub anchors: String,
    /// The rustls client config built from them.
    #[serde(skip)]
    pub client: std::sync::Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca", &self.ca)
            .field("anchors", &self.anchors)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca == other.ca && self.anchors == other.anchors
    }
}

impl Eq for UpstreamTls {}

/// TLS termination (`tls:`).
#[derive(Clone)]
pub struct Tls {
    /// The default certificate chain (PEM), as resolved from the file.
    pub cert: std::path::PathBuf,
    /// Its private key (PEM).
    pub key: std::path::PathBuf,
    /// Host names with a certificate of their own (`sni:`), in file order.
    pub sni: Vec<String>,
    /// Where plain HTTP is answered with a redirect to HTTPS, if anywhere.
    pub redirect_http: Option<SocketAddr>,
    /// The rustls server config new connections use.
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("sni", &self.sni)
            .field("redirect_http", &self.redirect_http)
            .finish()
    }
}

/// The admin API's bearer token and where it came from. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    /// `admin_token_file` path, or the environment variable's name.
    pub source: String,
    /// The token itself.
    pub secret: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The environment variable holding the admin token when the file names no token file.
pub const ADMIN_TOKEN_ENV: &str = "STRANGLER_ADMIN_TOKEN";

/// Default upstream response timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One route of the migration plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// What requests it covers.
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// The extracted service this route moves to.
    pub upstream: String,
    /// Where the route is in its migration.
    pub mode: Mode,
    /// Canary share in percent (0-100), as written; `None` when absent.
    #[serde(serialize_with = "percent_number")]
    pub percent: Option<f64>,
    /// Canary stickiness.
    #[serde(serialize_with = "sticky_text")]
    pub sticky: Option<Sticky>,
    /// How copies are made and compared while the route is in `shadow` mode.
    pub shadow: ShadowRoute,
    /// Largest request body accepted (`max_body_bytes`); 413 past it.
    pub max_body_bytes: Option<u64>,
    /// Overrides the serving upstream's response `timeout` for this route's requests.
    #[serde(skip)]
    pub timeout: Option<Duration>,
    /// Falling back to the fallback when the upstream fails; `None` when off.
    pub failover: Option<FailoverPolicy>,
    /// Retries on the upstream; `None` when off.
    pub retries: Option<RetryPolicy>,
    /// A gated promotion plan; `None` when the mode is managed by hand only.
    pub promote: Option<PromotePlan>,
    /// Line of the route in the file, for messages.
    #[serde(skip)]
    pub line: usize,
}

impl Route {
    /// The canary share in basis points (0..=10000): a sticky bucket below it is served
    /// by the upstream.
    pub fn share_bp(&self) -> u32 {
        self.percent.map_or(0, |p| (p * 100.0).round() as u32)
    }
}

/// The request side of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteMatch {
    /// The path rule.
    #[serde(flatten)]
    pub path: PathMatch,
    /// Methods covered; `None` means any.
    #[serde(
        serialize_with = "methods_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub methods: Option<Vec<Method>>,
    /// Headers that must be present with exactly these values (names case-insensitive).
    #[serde(serialize_with = "headers_text", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(HeaderName, String)>,
}

/// How a route's path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMatch {
    /// This path only.
    Exact(String),
    /// This path and everything below it, whole segments only.
    Prefix(String),
}

/// Where a route is in its migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Served by the fallback.
    Legacy,
    /// Served by the fallback; a copy goes to the upstream for comparison.
    Shadow,
    /// A share served by the upstream, the rest by the fallback.
    Canary,
    /// Served by the upstream.
    Extracted,
}

impl Mode {
    /// The mode's name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Shadow => "shadow",
            Mode::Canary => "canary",
            Mode::Extracted => "extracted",
        }
    }

    /// Parses a mode name.
    pub fn parse(text: &str) -> Option<Mode> {
        Some(match text {
            "legacy" => Mode::Legacy,
            "shadow" => Mode::Shadow,
            "canary" => Mode::Canary,
            "extracted" => Mode::Extracted,
            _ => return None,
        })
    }
}

/// Where a canary's sticky key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sticky {
    /// A request header.
    Header(HeaderName),
    /// A cookie.
    Cookie(String),
}

impl std::fmt::Display for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sticky::Header(name) => write!(f, "header:{name}"),
            Sticky::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// Which implementation of a capability the monolith uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterMode {
    /// The monolith's own module.
    Local,
    /// An HTTP client for the upstream of the same name.
    Remote,
}

/// Connection and request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes; 431 past it.
    pub max_head_bytes: usize,
    /// Most request headers; 431 past it.
    pub max_headers: usize,
    /// Longest request target, in bytes; 414 past it.
    pub max_uri_bytes: usize,
    /// Time a client has to send a whole request head.
    #[serde(with = "duration_text")]
    pub header_read_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    #[serde(with = "duration_text")]
    pub idle_timeout: Duration,
    /// Most client connections open at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }
}

fn sticky_text<S: serde::Serializer>(sticky: &Option<Sticky>, s: S) -> Result<S::Ok, S::Error> {
    match sticky {
        Some(sticky) => s.collect_str(sticky),
        None => s.serialize_none(),
    }
}

fn methods_text<S: serde::Serializer>(
    methods: &Option<Vec<Method>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let methods = methods.as_deref().unwrap_or_default();
    let mut seq = s.serialize_seq(Some(methods.len()))?;
    for m in methods {
        seq.serialize_element(m.as_str())?;
    }
    seq.end()
}

fn headers_text<S: serde::Serializer>(
    headers: &[(HeaderName, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(headers.len()))?;
    for (name, value) in headers {
        map.serialize_entry(name.as_str(), value)?;
    }
    map.end()
}

/// Serializes a percent as a whole number when it is one (`10`, not `10.0`).
pub fn percent_number<S: serde::Serializer>(p: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&percent_json(*p), s)
}

/// A percent as JSON: a whole number when it is one (`10`, not `10.0`), null when absent.
pub fn percent_json(p: Option<f64>) -> serde_json::Value {
    match p {
        Some(p) if p.fract() == 0.0 => serde_json::Value::from(p as u64),
        Some(p) => serde_json::Value::from(p),
        None => serde_json::Value::Null,
    }
}

/// A route's shadow settings (`shadow:` under the route).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowRoute {
    /// Share of eligible requests copied, in percent.
    #[serde(serialize_with = "percent_number_plain")]
    pub sample: f64,
    /// Methods copied; by default only safe ones (GET, HEAD, OPTIONS).
    #[serde(serialize_with = "methods_list")]
    pub methods: Vec<Method>,
    /// Headers removed from copies (credentials, say).
    #[serde(serialize_with = "header_list")]
    pub strip_headers: Vec<HeaderName>,
    /// Response headers compared (default `content-type`).
    #[serde(serialize_with = "header_list")]
    pub compare_headers: Vec<HeaderName>,
    /// Response headers never compared.
    #[serde(serialize_with = "header_list")]
    pub ignore_headers: Vec<HeaderName>,
    /// JSON paths never compared, e.g. `/items/*/updated_at`.
    pub ignore: Vec<String>,
    /// Send a second copy to the fallback to learn which fields differ between two legacy
    /// answers, and report those as noise.
    pub noise: bool,
    /// Largest request or response body copied and compared.
    pub max_body_bytes: usize,
    /// Append each copied request to this JSONL file (the `strangler compare` format).
    pub record: Option<std::path::PathBuf>,
}

impl Default for ShadowRoute {
    fn default() -> Self {
        ShadowRoute {
            sample: 100.0,
            methods: vec![Method::GET, Method::HEAD, Method::OPTIONS],
            strip_headers: Vec::new(),
            compare_headers: vec![http::header::CONTENT_TYPE],
            ignore_headers: Vec::new(),
            ignore: Vec::new(),
            noise: false,
            max_body_bytes: 1024 * 1024,
            record: None,
        }
    }
}

/// Shadow settings shared by all routes (top-level `shadow:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowGlobal {
    /// Most copies in flight at once; more are dropped and counted.
    pub max_in_flight: usize,
    /// Append every comparison result to this JSONL file.
    pub report_file: Option<std::path::PathBuf>,
    /// Mismatches kept per route for `GET /shadow`.
    pub keep_mismatches: usize,
}

impl Default for ShadowGlobal {
    fn default() -> Self {
        ShadowGlobal {
            max_in_flight: 64,
            report_file: None,
            keep_mismatches: 20,
        }
    }
}

fn percent_number_plain<S: serde::Serializer>(p: &f64, s: S) -> Result<S::Ok, S::Error> {
    percent_number(&Some(*p), s)
}

fn methods_list<S: serde::Serializer>(methods: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(methods.iter().map(Method::as_str))
}

fn header_list<S: serde::Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

/// A gated promotion plan: shadow until the match rate holds, then canary steps, then
/// extracted; each step taken only while the route stays within the limits, and a breach
/// rolls the route back at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromotePlan {
    /// Compared shadow requests needed before the first canary step.
    pub min_compared: u64,
    /// Match rate (percent) needed in shadow, and kept during canary (on the share still
    /// shadowed).
    pub min_match: f64,
    /// Canary percents, in order; 100 then extracted.
    pub steps: Vec<f64>,
    /// Least time at each step.
    #[serde(with = "duration_text")]
    pub dwell: Duration,
    /// Least upstream requests at each step.
    pub min_requests: u64,
    /// Highest share of upstream requests failing (5xx or no answer), in percent.
    pub max_error_rate: f64,
    /// Highest ratio of the upstream's p99 latency to the fallback's.
    pub max_p99_ratio: f64,
    /// How often the route is evaluated.
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

impl Default for PromotePlan {
    fn default() -> Self {
        PromotePlan {
            min_compared: 1000,
            min_match: 99.9,
            steps: vec![5.0, 25.0, 50.0, 100.0],
            dwell: Duration::from_secs(300),
            min_requests: 500,
            max_error_rate: 1.0,
            max_p99_ratio: 2.0,
            interval: Duration::from_secs(10),
        }
    }
}
