//! Pooled HTTP clients to upstreams, and how their failures are classified.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{EndpointAddr, Upstream};

/// The error of a [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the proxy sends and returns.
pub type Body = BoxBody<Bytes, BoxError>;

/// A pooled client to upstreams, `http://` and `https://` (HTTP/1.1 both ways).
type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

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
fn client(connect_timeout: Duration, tls: Option<&crate::config::UpstreamTls>) -> HttpClient {
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

/// Why an exchange failed, with what to log.
#[derive(Debug)]
pub struct SendError {
    /// The class of failure (the metric label and the client's status).
    pub kind: FailureKind,
    /// What happened, for the log.
    pub detail: String,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl SendError {
    pub(crate) fn new(kind: FailureKind, detail: impl Into<String>) -> SendError {
        SendError {
            kind,
            detail: detail.into(),
        }
    }

    pub(crate) fn io(kind: FailureKind, what: &str, e: &io::Error) -> SendError {
        SendError::new(kind, format!("{what}: {e}"))
    }
}

/// A request body: streamed once, or held whole so it can be sent again.
pub enum OutBody {
    /// Sent as it arrives; the request is attempted once.
    Stream(Body),
    /// Read whole; the request may be retried and failed over.
    Replayable(Bytes),
}

/// Sends one request to one instance of `up` and returns the answer's head, its body
/// streaming behind; the caller bounds the call with the response timeout. A body in hand
/// (replayable, or a stream already at its end) to a plain-http upstream, without an
/// upgrade, goes through the lean client ([`crate::http1_client`]); everything else through
/// hyper's pooled client.
pub async fn send(
    up: &Upstream,
    endpoint: &EndpointAddr,
    method: &Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: OutBody,
    upgrading: bool,
) -> Result<Response<Body>, SendError> {
    let lean = !upgrading && up.tls.is_none();
    let body = match body {
        OutBody::Replayable(bytes) if lean => Ok(bytes),
        OutBody::Stream(body) if lean && body.is_end_stream() => Ok(Bytes::new()),
        OutBody::Replayable(bytes) => Err(Full::new(bytes).map_err(|never| match never {}).boxed()),
        OutBody::Stream(body) => Err(body),
    };
    let body = match body {
        Ok(bytes) => {
            let target = if endpoint.base_path.is_empty() {
                Cow::Borrowed(path_and_query)
            } else {
                Cow::Owned(format!("{}{path_and_query}", endpoint.base_path))
            };
            return crate::http1_client::send(crate::http1_client::Request {
                authority: &endpoint.origin,
                connect_timeout: up.connect_timeout,
                method,
                target: &target,
                resendable: crate::forward::is_replayable_method(method, &headers),
                headers: &headers,
                body: bytes,
            })
            .await;
        }
        Err(body) => body,
    };
    let uri = format!(
        "{}://{}{}{path_and_query}",
        up.scheme(),
        endpoint.origin,
        endpoint.base_path
    );
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = uri.parse::<Uri>().map_err(|e| {
        SendError::new(
            FailureKind::Protocol,
            format!("invalid upstream URI {uri}: {e}"),
        )
    })?;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    match client(up.connect_timeout, up.tls.as_ref())
        .request(req)
        .await
    {
        Ok(resp) => Ok(resp.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed())),
        Err(e) => Err(SendError::new(FailureKind::of(&e), error_chain(&e))),
    }
}

/// An error with its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
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
