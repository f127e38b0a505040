//! The forwarding path of one request: check it, normalize its path, pick a route and a
//! side, forward it, stream the answer back, and record it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::body_limit::LimitedBody;
use crate::canary;
use crate::config::{Limits, Mode};
use crate::headers::{self, X_REQUEST_ID};
use crate::normalize::normalize_path;
use crate::reload::Live;
use crate::shadow::tee::TeeBody;
use crate::shadow::Primary;
use crate::snapshot::{Snapshot, Target};
use crate::upstream::{Body, FailureKind};

/// Which route and upstream serve a request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The route's index in the snapshot, `None` when no route covers the request.
    pub route: Option<usize>,
    /// Whether the route's own upstream serves (rather than the fallback).
    pub to_upstream: bool,
}

/// Decides where a request goes. `path` is already normalized.
pub fn decide(snap: &Snapshot, method: &Method, path: &str, headers: &http::HeaderMap) -> Decision {
    let Some(i) = snap
        .matcher
        .find(&snap.config.routes, path, method, headers)
    else {
        return Decision {
            route: None,
            to_upstream: false,
        };
    };
    let route = &snap.config.routes[i];
    let to_upstream = match route.mode {
        Mode::Legacy | Mode::Shadow => false,
        Mode::Extracted => true,
        Mode::Canary => {
            let key = route
                .sticky
                .as_ref()
                .and_then(|s| canary::sticky_key(s, headers));
            canary::to_upstream(route.share_bp(), key)
        }
    };
    Decision {
        route: Some(i),
        to_upstream,
    }
}

/// Handles one client request. Never fails: every problem becomes a response.
pub async fn handle(live: Arc<Live>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let snap = live.snapshot();
    let method = req.method().clone();
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) if !v.is_empty() => v.clone(),
        _ => new_request_id(),
    };

    if is_options_star(&req) {
        // `OPTIONS *` asks about the server, not a resource: the proxy answers it.
        let mut resp = Response::new(full(Bytes::new()));
        resp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        resp.headers_mut().insert(&X_REQUEST_ID, request_id);
        return resp;
    }
    let prepared = match check_request(&req, &snap.config.limits) {
        Err(rejection) => Err(rejection),
        Ok(()) => normalize_path(req.uri().path())
            .map_err(|e| Rejection::bad_request(format!("bad path: {e}"))),
    };
    let path = match prepared {
        Ok(path) => path,
        Err(rejection) => {
            let mut resp = rejection.response();
            resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
            tracing::info!(
                target: "strangler::access",
                method = %method,
                path = %truncated(&req.uri().to_string()),
                route = tracing::field::Empty,
                upstream = tracing::field::Empty,
                status = resp.status().as_u16(),
                duration_ms = millis(started.elapsed()),
                request_id = request_id.to_str().unwrap_or(""),
                peer = %peer,
                "rejected: {}", rejection.reason
            );
            return resp;
        }
    };

    let decision = decide(&snap, &method, &path, req.headers());
    let (route_name, route_label, target) = match decision.route {
        Some(i) => {
            let rt = &snap.routes[i];
            let target = if decision.to_upstream {
                &rt.upstream
            } else {
                &snap.fallback
            };
            (
                Some(snap.config.routes[i].name.as_str()),
                rt.name.clone(),
                target.clone(),
            )
        }
        None => (None, snap.fallback_route.clone(), snap.fallback.clone()),
    };

    let upstream_label = target.name.clone();
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let route_cfg = decision.route.map(|i| &snap.config.routes[i]);
    let body_limit = route_cfg.and_then(|r| r.max_body_bytes);
    let timeout = route_cfg
        .and_then(|r| r.timeout)
        .unwrap_or(target.upstream.timeout);
    let declared_over =
        body_limit.filter(|limit| declared_length(req.headers()).is_some_and(|n| n > *limit));
    let mut limit_watch = None;
    let mut prepared = match declared_over {
        // Refused before a byte goes upstream.
        Some(limit) => Err(Stop::TooLarge(limit)),
        None => {
            let hop = HopInfo {
                peer,
                tls: req.extensions().get::<TlsConnection>().is_some(),
                trusted: crate::trusted::is_trusted(&snap.config.trusted_proxies, peer.ip()),
            };
            prepare(req, &target, &path_and_query, hop, &request_id).map(|mut p| {
                if let Some(limit) = body_limit {
                    let body = std::mem::replace(p.req.body_mut(), full(Bytes::new()));
                    let (limited, exceeded) = LimitedBody::new(body, limit);
                    *p.req.body_mut() = limited.boxed();
                    limit_watch = Some((limit, exceeded));
                }
                p
            })
        }
    };
    let mut job = match (decision.route, &prepared) {
        (Some(i), Ok(p)) if snap.config.routes[i].mode == Mode::Shadow => live.shadow().plan(
            &snap.config.routes[i],
            &route_label,
            &snap.config.shadow,
            &snap.routes[i].upstream,
            &snap.fallback,
            &method,
            &path_and_query,
            p.req.headers(),
            &request_id,
        ),
        _ => None,
    };
    if let (Some(job), Ok(p)) = (&mut job, &mut prepared) {
        let body = std::mem::replace(p.req.body_mut(), full(Bytes::new()));
        let (tee, rx) = TeeBody::new(body, job.max_body_bytes());
        *p.req.body_mut() = tee.boxed();
        job.request_body = Some(rx);
    }
    let sent = Instant::now();
    let result = match prepared {
        Ok(p) => match limit_watch {
            // A body going over its limit ends the exchange: dropping the send future drops
            // the upstream request mid-body, so the upstream never sees it complete.
            Some((limit, exceeded)) => tokio::select! {
                r = send(p, &target, timeout) => r,
                _ = exceeded.wait() => Err(Stop::TooLarge(limit)),
            },
            None => send(p, &target, timeout).await,
        },
        Err(stop) => Err(stop),
    };
    let upstream_latency = sent.elapsed();
    let mut resp = match result {
        Ok(resp) => resp,
        Err(Stop::Upstream(kind)) => {
            live.metrics().upstream_error(&upstream_label, kind);
            upstream_failure(kind, route_name, &target.upstream.name)
        }
        Err(Stop::TooLarge(limit)) => too_large(limit, route_name),
    };
    if let Some(job) = job {
        let mut primary = Primary {
            status: None,
            headers: resp.headers().clone(),
            latency: upstream_latency,
            body: None,
        };
        if result_ok(&resp) {
            primary.status = Some(resp.status());
            let body = std::mem::replace(resp.body_mut(), full(Bytes::new()));
            let (tee, rx) = TeeBody::new(body, job.max_body_bytes());
            *resp.body_mut() = tee.boxed();
            primary.body = Some(rx);
        }
        live.shadow().spawn(job, primary);
    }
    resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
    let elapsed = started.elapsed();
    live.metrics().request(
        &route_label,
        &upstream_label,
        &method,
        resp.status().as_u16(),
        elapsed,
    );
    tracing::info!(
        target: "strangler::access",
        method = %method,
        path = %path,
        route = &*route_label.0,
        upstream = &*upstream_label.0,
        status = resp.status().as_u16(),
        duration_ms = millis(elapsed),
        request_id = request_id.to_str().unwrap_or(""),
        peer = %peer,
        "request"
    );
    resp
}

/// Whether a response came from the upstream (not a 502/504 made by the proxy).
fn result_ok(resp: &Response<Body>) -> bool {
    resp.extensions().get::<MadeByProxy>().is_none()
}

/// Marks the responses the proxy made itself.
#[derive(Debug, Clone, Copy)]
struct MadeByProxy;

/// Marks requests that arrived on a TLS connection.
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

/// Why a request was not answered by its upstream.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The upstream failed (502/504).
    Upstream(FailureKind),
    /// The request body is over the route's `max_body_bytes` (413).
    TooLarge(u64),
}

/// The hop a request came in on.
#[derive(Debug, Clone, Copy)]
struct HopInfo {
    peer: SocketAddr,
    tls: bool,
    trusted: bool,
}

/// The request body length a client declared, if it declared one.
fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The 413 a client gets for a body over the route's limit.
fn too_large(limit: u64, route: Option<&str>) -> Response<Body> {
    let mut resp = json_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        &serde_json::json!({
            "error": format!("request body larger than {limit} bytes"),
            "route": route,
        }),
    );
    // Whatever of the body is still unread is not worth reading.
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp.extensions_mut().insert(MadeByProxy);
    resp
}

/// A request ready to go upstream.
struct Prepared {
    req: Request<Body>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrading: bool,
}

/// Rewrites a client request for `target`: its URI, hop-by-hop headers, X-Forwarded-*,
/// Host and request id.
fn prepare(
    mut req: Request<Incoming>,
    target: &Target,
    path_and_query: &str,
    hop: HopInfo,
    request_id: &HeaderValue,
) -> Result<Prepared, Stop> {
    let upgrading = headers::is_upgrade(req.headers());
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // An absolute-form target's (and every HTTP/2 request's) authority stands for Host.
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let up = &target.upstream;
    let mut uri = String::with_capacity(
        up.origin.as_str().len() + up.base_path.len() + path_and_query.len() + 8,
    );
    uri.push_str(up.scheme());
    uri.push_str("://");
    uri.push_str(up.origin.as_str());
    uri.push_str(&up.base_path);
    uri.push_str(path_and_query);
    parts.uri = uri
        .parse::<Uri>()
        .map_err(|_| Stop::Upstream(FailureKind::Protocol))?;
    parts.version = Version::HTTP_11;
    headers::remove_hop_by_hop(&mut parts.headers, upgrading);
    headers::set_forwarded(
        &mut parts.headers,
        headers::Hop {
            peer: hop.peer.ip(),
            host: host.as_ref(),
            tls: hop.tls,
            trusted: hop.trusted,
        },
    );
    match host {
        Some(h) => {
            parts.headers.insert(header::HOST, h);
        }
        None => {
            parts.headers.remove(header::HOST);
        }
    }
    parts.headers.insert(&X_REQUEST_ID, request_id.clone());
    Ok(Prepared {
        req: Request::from_parts(parts, body.boxed()),
        client_upgrade,
        upgrading,
    })
}

/// Sends a prepared request and returns the response, headers cleaned; tunnels an upgrade.
/// `timeout` bounds the wait for the response headers (the route's, else the upstream's).
async fn send(
    prepared: Prepared,
    target: &Target,
    timeout: std::time::Duration,
) -> Result<Response<Body>, Stop> {
    let up = &target.upstream;
    let mut resp = match tokio::time::timeout(timeout, target.client().request(prepared.req)).await
    {
        Err(_elapsed) => {
            tracing::warn!(upstream = %up.name, timeout = ?timeout, "upstream response timed out");
            return Err(Stop::Upstream(FailureKind::Timeout));
        }
        Ok(Err(e)) => {
            let kind = FailureKind::of(&e);
            tracing::warn!(upstream = %up.name, kind = kind.as_str(), error = %error_chain(&e), "upstream request failed");
            return Err(Stop::Upstream(kind));
        }
        Ok(Ok(resp)) => resp,
    };

    let switching = prepared.upgrading && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, prepared.client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let name = up.name.clone();
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
                        tracing::debug!(upstream = %name, error = %e, "upgraded connection ended");
                    }
                }
                Err(e) => tracing::warn!(upstream = %name, error = %e, "upgrade failed"),
            }
        });
    }
    headers::remove_hop_by_hop(resp.headers_mut(), switching);
    Ok(resp.map(|b| b.boxed()))
}

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

/// A request refused before routing.
struct Rejection {
    status: StatusCode,
    reason: String,
    /// Close the connection after answering: what follows cannot be trusted to be framed
    /// the way the proxy thinks.
    close: bool,
}

impl Rejection {
    fn bad_request(reason: impl Into<String>) -> Self {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
            close: false,
        }
    }

    fn response(&self) -> Response<Body> {
        let mut resp = json_response(self.status, &serde_json::json!({ "error": self.reason }));
        if self.close {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The checks every request passes before its path is even looked at.
fn check_request(req: &Request<Incoming>, limits: &Limits) -> Result<(), Rejection> {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > limits.max_uri_bytes {
        return Err(Rejection {
            status: StatusCode::URI_TOO_LONG,
            reason: format!("request target longer than {} bytes", limits.max_uri_bytes),
            close: false,
        });
    }
    // hyper enforces a looser bound on both (so that the URI is checked first); these are
    // the configured limits.
    let too_large = |reason: String| Rejection {
        status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        reason,
        close: true,
    };
    if req.headers().len() > limits.max_headers {
        return Err(too_large(format!(
            "more than {} request headers",
            limits.max_headers
        )));
    }
    let head_bytes = req.method().as_str().len()
        + req.uri().to_string().len()
        + 12
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > limits.max_head_bytes {
        return Err(too_large(format!(
            "request head larger than {} bytes",
            limits.max_head_bytes
        )));
    }
    if req.method() == Method::CONNECT {
        return Err(Rejection::bad_request(
            "CONNECT is not supported: this is not a forward proxy",
        ));
    }
    if req.uri().path() == "*" || req.uri() == "*" {
        return Err(Rejection::bad_request(
            "`*` is only valid as the target of OPTIONS",
        ));
    }
    let h = req.headers();
    if h.get_all(header::HOST).iter().count() > 1 {
        return Err(Rejection::bad_request("more than one Host header"));
    }
    let lengths: Vec<&HeaderValue> = h.get_all(header::CONTENT_LENGTH).iter().collect();
    let conflict = req
        .extensions()
        .get::<crate::server::FramingConflict>()
        .is_some();
    if conflict || (h.contains_key(header::TRANSFER_ENCODING) && !lengths.is_empty()) {
        return Err(Rejection {
            close: true,
            ..Rejection::bad_request("both Content-Length and Transfer-Encoding")
        });
    }
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Err(Rejection {
            close: true,
            ..Rejection::bad_request("differing Content-Length headers")
        });
    }
    Ok(())
}

/// Whether this is `OPTIONS *`.
fn is_options_star(req: &Request<Incoming>) -> bool {
    req.method() == Method::OPTIONS && req.uri() == "*"
}

/// The 502/504 a client gets when the upstream failed.
fn upstream_failure(kind: FailureKind, route: Option<&str>, upstream: &str) -> Response<Body> {
    let error = match kind {
        FailureKind::Connect => "upstream unreachable",
        FailureKind::Timeout => "upstream timed out",
        FailureKind::Reset => "upstream connection reset",
        FailureKind::Protocol => "upstream sent an invalid response",
    };
    let mut resp = json_response(
        kind.status(),
        &serde_json::json!({ "error": error, "route": route, "upstream": upstream }),
    );
    resp.extensions_mut().insert(MadeByProxy);
    resp
}

/// A small JSON response.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A random request id in UUID v4 form.
fn new_request_id() -> HeaderValue {
    let n = fastrand::u128(..);
    let n = (n & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{n:032x}");
    let id = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    );
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A duration in milliseconds, to the microsecond, for logs.
fn millis(d: std::time::Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// At most 256 bytes of client input, for logs.
fn truncated(text: &str) -> &str {
    let mut end = text.len().min(256);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
