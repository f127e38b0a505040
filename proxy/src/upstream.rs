//! Pooled HTTP clients to upstreams, and how their failures are classified.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The error of a [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy sends and returns.
pub type Body = BoxBody<Bytes, BoxError>;

/// A pooled client to upstreams, `http://` and `https://` (HTTP/1.1 both ways).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// What a pool is keyed by: connections in one pool share a connect timeout and the trust
/// anchors their certificates are checked against (`None` for a pool used only for `http://`
/// upstreams).
type PoolKey = (Duration, Option<String>);

/// Idle upstream connections kept per host.
pub(crate) const POOL_MAX_IDLE_PER_HOST: usize = 256;
/// How long an idle upstream connection is kept.
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

thread_local! {
    /// This thread's clients, by connect timeout. Each worker thread runs its own runtime,
    /// so each keeps its own pools: a pooled connection is driven by the thread that uses
    /// it, with no cross-thread wake-ups. The pools outlive config snapshots, so a reload
    /// keeps every warm keep-alive connection.
    static CLIENTS: RefCell<HashMap<PoolKey, HttpClient>> = RefCell::new(HashMap::new());
}

/// The calling thread's pooled client for upstreams with this connect timeout and, for an
/// `https://` upstream, these trust anchors.
pub fn client(connect_timeout: Duration, tls: Option<&crate::config::UpstreamTls>) -> HttpClient {
    let key = (connect_timeout, tls.map(|t| t.anchors.clone()));
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(connect_timeout));
                http.set_nodelay(true);
                // The TLS layer sees `https://` URIs; the TCP connector under it must too.
                http.enforce_http(false);
                // A pool for `http://` upstreams never handshakes; its TLS config is a stub.
                let tls_config = match tls {
                    Some(t) => t.client.clone(),
                    None => crate::tls::unused_client_config(),
                };
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config((*tls_config).clone())
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http);
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(connector)
            })
            .clone()
    })
}

/// Why an upstream request failed; the `kind` label of `strangler_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection was refused or could not be opened.
    Connect,
    /// A connect or response timeout expired.
    Timeout,
    /// The connection was reset or closed mid-exchange.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
    /// The upstream's circuit breaker is open: the request was not sent.
    CircuitOpen,
}

impl FailureKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Protocol => "protocol",
            FailureKind::CircuitOpen => "circuit_open",
        }
    }

    /// The status the client gets: 504 for any timeout, 503 while the circuit is open, 502
    /// otherwise.
    pub fn status(self) -> http::StatusCode {
        match self {
            FailureKind::Timeout => http::StatusCode::GATEWAY_TIMEOUT,
            FailureKind::CircuitOpen => http::StatusCode::SERVICE_UNAVAILABLE,
            FailureKind::Connect | FailureKind::Reset | FailureKind::Protocol => {
                http::StatusCode::BAD_GATEWAY
            }
        }
    }

    /// Classifies a client error by walking its causes.
    pub fn of(err: &hyper_util::client::legacy::Error) -> FailureKind {
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return match io.kind() {
                    std::io::ErrorKind::TimedOut => FailureKind::Timeout,
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                        if !err.is_connect() =>
                    {
                        FailureKind::Reset
                    }
                    _ if err.is_connect() => FailureKind::Connect,
                    _ => FailureKind::Reset,
                };
            }
            if let Some(h) = e.downcast_ref::<hyper::Error>() {
                if h.is_timeout() {
                    return FailureKind::Timeout;
                }
                if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                    return FailureKind::Reset;
                }
                if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                    return FailureKind::Protocol;
                }
            }
            source = e.source();
        }
        if err.is_connect() {
            FailureKind::Connect
        } else {
            FailureKind::Protocol
        }
    }
}
