//! The forwarding path of one request: check it, normalize its path, pick a route and a
//! side, forward it, stream the answer back, and record it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::body::Incoming;

use crate::body_limit::LimitedBody;
use crate::canary;
use crate::config::{Limits, Mode};
use crate::forward;
use crate::headers::{self, X_REQUEST_ID};
use crate::normalize::normalize_path;
use crate::reload::Live;
use crate::shadow::tee::TeeBody;
use crate::shadow::Primary;
use crate::snapshot::Snapshot;
use crate::upstream::OutBody;
use crate::upstream::{Body, BoxError, FailureKind};

/// Which route and upstream serve a request.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The route's index in the snapshot, `None` when no route covers the request.
    pub route: Option<usize>,
    /// The route's mode now (a promotion plan may have moved it from the file's).
    pub mode: Mode,
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
            mode: Mode::Legacy,
            to_upstream: false,
        };
    };
    let route = &snap.config.routes[i];
    let (mode, share_bp) = match &snap.routes[i].promotion {
        Some(p) => p.effective(),
        None => (route.mode, route.share_bp()),
    };
    let to_upstream = match mode {
        Mode::Legacy | Mode::Shadow => false,
        Mode::Extracted => true,
        Mode::Canary => {
            let key = route
                .sticky
                .as_ref()
                .and_then(|s| canary::sticky_key(s, headers));
            canary::to_upstream(share_bp, key)
        }
    };
    Decision {
        route: Some(i),
        mode,
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
    let route = decision.route.map(|i| &snap.config.routes[i]);
    let route_rt = decision.route.map(|i| &snap.routes[i]);
    let (route_label, target) = match route_rt {
        Some(rt) if decision.to_upstream => (&rt.name, &rt.upstream),
        Some(rt) => (&rt.name, &snap.fallback),
        None => (&snap.fallback_route, &snap.fallback),
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };

    // A body declared over the route's limit is refused before a byte goes upstream.
    let body_limit = route.and_then(|r| r.max_body_bytes);
    if let Some(limit) =
        body_limit.filter(|limit| declared_length(req.headers()).is_some_and(|n| n > *limit))
    {
        let mut resp = too_large(limit, route.map(|r| r.name.as_str()));
        resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
        return resp;
    }

    // Rewrite the request for the upstream side: hop-by-hop headers, X-Forwarded-*, Host,
    // request id.
    let upgrading = headers::is_upgrade(req.headers());
    let mut req = req;
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let host = forward::host_value(&parts.uri, &parts.headers);
    let mut out_headers = parts.headers;
    headers::remove_hop_by_hop(&mut out_headers, upgrading);
    headers::set_forwarded(
        &mut out_headers,
        headers::Hop {
            peer: peer.ip(),
            host: host.as_ref(),
            tls: parts.extensions.get::<TlsConnection>().is_some(),
            trusted: crate::trusted::is_trusted(&snap.config.trusted_proxies, peer.ip()),
        },
    );
    match host {
        Some(h) => {
            out_headers.insert(header::HOST, h);
        }
        None => {
            out_headers.remove(header::HOST);
        }
    }
    out_headers.insert(&X_REQUEST_ID, request_id.clone());

    // Shadow: in shadow mode, and for the fallback's share of a canary walked by a promotion
    // plan (its mismatch rate is part of the evidence).
    let shadowing = match route_rt {
        Some(rt) if !decision.to_upstream => {
            decision.mode == Mode::Shadow
                || (decision.mode == Mode::Canary && rt.promotion.is_some())
        }
        _ => false,
    };
    let mut job = match (route, route_rt) {
        (Some(r), Some(rt)) if shadowing => live.shadow().plan(
            r,
            &rt.name,
            &snap.config.shadow,
            &rt.upstream,
            &snap.fallback,
            &method,
            &path_and_query,
            &out_headers,
            &request_id,
        ),
        _ => None,
    };

    // A request that may be retried or failed over is read whole first (when small).
    let mut limit_watch = None;
    let resilient = decision.to_upstream
        && route.is_some_and(|r| r.retries.is_some() || r.failover.is_some())
        && !upgrading
        && forward::is_replayable_method(&method, &out_headers);
    let small = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= forward::MAX_REPLAY_BODY);
    let out_body = if resilient && small {
        match Limited::new(body, forward::MAX_REPLAY_BODY as usize)
            .collect()
            .await
        {
            Ok(collected) if body_limit.is_some_and(|limit| collected_len(&collected) > limit) => {
                let limit = body_limit.unwrap_or_default();
                let mut resp = too_large(limit, route.map(|r| r.name.as_str()));
                resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
                return resp;
            }
            Ok(collected) => OutBody::Replayable(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                // Larger than its declared length cannot happen (hyper enforces it).
                let rejection = Rejection::bad_request("request body longer than declared");
                let mut resp = rejection.response();
                resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
                return resp;
            }
            Err(_) => {
                let rejection = Rejection::bad_request("could not read the request body");
                let mut resp = rejection.response();
                resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
                return resp;
            }
        }
    } else {
        let mut body = body.map_err(BoxError::from).boxed();
        if let Some(limit) = body_limit {
            let (limited, exceeded) = LimitedBody::new(body, limit);
            body = limited.boxed();
            limit_watch = Some((limit, exceeded));
        }
        if let Some(job) = &mut job {
            let (tee, rx) = TeeBody::new(body, job.max_body_bytes());
            body = tee.boxed();
            job.request_body = Some(rx);
        }
        OutBody::Stream(body)
    };

    let sent = Instant::now();
    let forwarding = forward::forward(
        forward::Outgoing {
            method: method.clone(),
            path_and_query,
            headers: out_headers,
            body: out_body,
            client_upgrade,
            timeout: route.and_then(|r| r.timeout),
        },
        target,
        &snap.fallback,
        route,
        live.metrics(),
    );
    // Pinned in place: both arms below use this one future rather than each a copy of it.
    tokio::pin!(forwarding);
    let outcome = match limit_watch {
        // A body going over its limit ends the exchange: dropping the forwarding future
        // drops the upstream request mid-body, so the upstream never sees it complete.
        Some((limit, exceeded)) => tokio::select! {
            outcome = &mut forwarding => outcome,
            _ = exceeded.wait() => {
                let mut resp = too_large(limit, route.map(|r| r.name.as_str()));
                resp.headers_mut().insert(&X_REQUEST_ID, request_id.clone());
                live.metrics().request(route_label, &target.name, &method, 413, started.elapsed());
                return resp;
            }
        },
        None => forwarding.await,
    };
    let upstream_latency = sent.elapsed();
    let served_by = outcome.served_by;
    // The upstream's own outcome: a request that failed over to the fallback still counts
    // as a failure of the upstream (for promotion evidence).
    let failed = outcome.failover.is_some()
        || match &outcome.result {
            Ok(r) => r.status().is_server_error(),
            Err(_) => true,
        };
    let mut resp = match outcome.result {
        Ok(resp) => resp,
        Err(kind) => upstream_failure(
            kind,
            route.map(|r| r.name.as_str()),
            &served_by.upstream.name,
        ),
    };
    if let Some(p) = route_rt.and_then(|rt| rt.promotion.as_ref()) {
        p.observe(decision.to_upstream, failed, upstream_latency);
    }
    if let Some(job) = job {
        let mut primary = Primary {
            status: None,
            headers: resp.headers().clone(),
            latency: upstream_latency,
            body: None,
        };
        if resp.extensions().get::<MadeByProxy>().is_none() {
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
    let upstream_label = &served_by.name;
    live.metrics().request(
        route_label,
        upstream_label,
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
        attempts = outcome.attempts,
        failover = outcome.failover,
        "request"
    );
    resp
}

/// Marks the responses the proxy made itself.
#[derive(Debug, Clone, Copy)]
struct MadeByProxy;

/// Marks requests that arrived on a TLS connection.
#[derive(Debug, Clone, Copy)]
pub struct TlsConnection;

fn collected_len(c: &http_body_util::Collected<Bytes>) -> u64 {
    use hyper::body::Body as _;
    c.size_hint().exact().unwrap_or(0)
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
    let uri = req.uri();
    let uri_bytes = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len() + 3)
        + uri.scheme_str().map_or(0, str::len);
    let head_bytes = req.method().as_str().len()
        + uri_bytes
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
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    let first_length = lengths.next();
    let conflict = req
        .extensions()
        .get::<crate::server::FramingConflict>()
        .is_some();
    if conflict || (h.contains_key(header::TRANSFER_ENCODING) && first_length.is_some()) {
        return Err(Rejection {
            close: true,
            ..Rejection::bad_request("both Content-Length and Transfer-Encoding")
        });
    }
    if first_length.is_some_and(|first| lengths.any(|l| l != first)) {
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
        FailureKind::CircuitOpen => "upstream circuit open: failing fast while it recovers",
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
    let id = uuid_v4(fastrand::u128(..));
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `random` as a version 4 UUID: 32 hex digits in groups of 8-4-4-4-12.
fn uuid_v4(random: u128) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = (random & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let mut id = [b'-'; 36];
    let mut shift = 128;
    for (i, slot) in id.iter_mut().enumerate() {
        if !matches!(i, 8 | 13 | 18 | 23) {
            shift -= 4;
            *slot = HEX[((n >> shift) & 0xf) as usize];
        }
    }
    id
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

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn request_ids_are_uuid_v4() {
        for random in [0u128, u128::MAX, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef] {
            let id = super::uuid_v4(random);
            let id = std::str::from_utf8(&id).expect("ascii");
            let n = (random & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
            let hex = format!("{n:032x}");
            let expected = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            assert_eq!(id, expected);
            assert_eq!(&id[14..15], "4");
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        }
    }
}
