//! Sending a request upstream: one instance picked per attempt, the circuit breaker
//! consulted, failures classified, retries within the budget, and at most one failover to
//! the legacy fallback.
//!
//! Only a replayable request is ever sent twice: a safe method (GET, HEAD, OPTIONS) or one
//! carrying an `Idempotency-Key`, whose body is empty or small enough to have been read whole
//! before the first attempt. A streamed body goes out once, and its failure is the answer.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;

use crate::balance;
use crate::config::{FailOn, Route};
use crate::metrics::Metrics;
use crate::snapshot::Target;
use crate::upstream::{self, Body, FailureKind, OutBody};

/// The header that makes a non-safe request safe to repeat.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Largest body read whole so that the request can be retried or failed over.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// A request ready to go upstream, before an instance is chosen.
pub struct Outgoing {
    /// Method.
    pub method: Method,
    /// Path and query (normalized).
    pub path_and_query: String,
    /// Headers, already rewritten for the upstream.
    pub headers: HeaderMap,
    /// The body.
    pub body: OutBody,
    /// The client side of a protocol upgrade, when upgrading.
    pub client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The route's response timeout, overriding the upstream's.
    pub timeout: Option<std::time::Duration>,
}

/// What happened to a request.
pub struct Outcome<'t> {
    /// The answer, or why there is none.
    pub result: Result<Response<Body>, FailureKind>,
    /// Who answered (the fallback after a failover).
    pub served_by: &'t Arc<Target>,
    /// Attempts made on the first target.
    pub attempts: u32,
    /// Why the request failed over to the fallback, if it did.
    pub failover: Option<&'static str>,
}

/// Whether the method is safe: sending it again changes nothing upstream.
pub fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a request may be sent more than once.
pub fn is_replayable_method(method: &Method, headers: &HeaderMap) -> bool {
    is_safe_method(method) || headers.contains_key(&IDEMPOTENCY_KEY)
}

/// Sends `out` to `target`, retrying and failing over to `fallback` as `route` allows.
pub async fn forward<'t>(
    out: Outgoing,
    target: &'t Arc<Target>,
    fallback: &'t Arc<Target>,
    route: Option<&Route>,
    metrics: &Metrics,
) -> Outcome<'t> {
    let Outgoing {
        method,
        path_and_query,
        headers,
        body,
        client_upgrade,
        timeout,
    } = out;
    let bytes = match body {
        OutBody::Stream(body) => {
            let result = send_once(
                target,
                &method,
                &path_and_query,
                headers,
                OutBody::Stream(body),
                client_upgrade,
                timeout,
                metrics,
            )
            .await;
            return Outcome {
                result,
                served_by: target,
                attempts: 1,
                failover: None,
            };
        }
        OutBody::Replayable(bytes) => bytes,
    };
    // Each attempt sends the same request again, on the target it is given.
    let (m, pq, h) = (&method, &path_and_query, &headers);
    let replay = move |t: Arc<Target>| {
        let body = OutBody::Replayable(bytes.clone());
        let headers = h.clone();
        async move { send_once(&t, m, pq, headers, body, None, timeout, metrics).await }
    };
    let retries = route.and_then(|r| r.retries.as_ref());
    if let Some(r) = retries {
        target.health.budget.deposit(r.budget);
    }
    let mut attempts = 0;
    let (result, failure) = loop {
        attempts += 1;
        let result = replay(target.clone()).await;
        let failure = classify(&result);
        let retry = match (failure, retries) {
            (Some(f), Some(r)) if r.on.contains(&f) && attempts <= r.attempts => Some(r),
            _ => None,
        };
        if let Some(r) = retry.filter(|_| target.health.budget.withdraw()) {
            metrics.retry(&target.name);
            let wait = crate::retry::backoff(r.backoff, attempts);
            tracing::debug!(upstream = %target.upstream.name, attempt = attempts, ?failure, ?wait, "retrying");
            drop(result);
            tokio::time::sleep(wait).await;
            continue;
        }
        break (result, failure);
    };
    let circuit_open = matches!(result, Err(FailureKind::CircuitOpen));
    let failover = route.and_then(|r| r.failover.as_ref());
    let reason = match (failover, failure) {
        (Some(_), _) if circuit_open => Some("circuit_open"),
        (Some(p), Some(f)) if p.on.contains(&f) => Some(reason_of(f)),
        _ => None,
    };
    match reason {
        // Never to itself, and never twice.
        Some(reason) if !Arc::ptr_eq(target, fallback) => {
            let route_name = route.map_or("", |r| r.name.as_str());
            tracing::warn!(route = route_name, upstream = %target.upstream.name, reason, attempts, "failing over to the fallback");
            metrics.failover(route_name, reason);
            drop(result);
            let result = replay(fallback.clone()).await;
            Outcome {
                result,
                served_by: fallback,
                attempts,
                failover: Some(reason),
            }
        }
        _ => Outcome {
            result,
            served_by: target,
            attempts,
            failover: None,
        },
    }
}

fn reason_of(f: FailOn) -> &'static str {
    match f {
        FailOn::Connect => "connect",
        FailOn::Timeout => "timeout",
        FailOn::Reset => "reset",
        FailOn::Status5xx => "5xx",
    }
}

/// The failure class of an attempt, `None` for an answer that counts as one.
fn classify(result: &Result<Response<Body>, FailureKind>) -> Option<FailOn> {
    match result {
        Ok(resp) => matches!(resp.status().as_u16(), 502..=504).then_some(FailOn::Status5xx),
        Err(FailureKind::Connect | FailureKind::CircuitOpen) => Some(FailOn::Connect),
        Err(FailureKind::Timeout) => Some(FailOn::Timeout),
        Err(FailureKind::Reset | FailureKind::Protocol) => Some(FailOn::Reset),
    }
}

/// One attempt on one instance of `target`.
#[allow(clippy::too_many_arguments)]
async fn send_once(
    target: &Target,
    method: &Method,
    path_and_query: &str,
    headers: HeaderMap,
    body: OutBody,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    timeout: Option<std::time::Duration>,
    metrics: &Metrics,
) -> Result<Response<Body>, FailureKind> {
    let up = &target.upstream;
    if let Some(policy) = &up.circuit_breaker {
        let (allowed, change) = target.health.breaker.allow_with_change(policy);
        if let Some(phase) = change {
            tracing::info!(upstream = %up.name, ?phase, "circuit breaker letting a probe through");
            metrics.circuit(&target.name, phase);
        }
        if !allowed {
            metrics.upstream_error(&target.name, FailureKind::CircuitOpen);
            return Err(FailureKind::CircuitOpen);
        }
    }
    let endpoint = target.pick();
    let _in_flight = endpoint.start();
    let ep = &endpoint.addr;
    let wait = timeout.unwrap_or(up.timeout);
    let upgrading = client_upgrade.is_some();
    let sending = upstream::send(up, ep, method, path_and_query, headers, body, upgrading);
    let result = match tokio::time::timeout(wait, sending).await {
        Err(_elapsed) => {
            tracing::warn!(upstream = %up.name, instance = %ep.url, timeout = ?wait, "upstream response timed out");
            Err(FailureKind::Timeout)
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = %up.name, instance = %ep.url, kind = e.kind.as_str(), error = %e, "upstream request failed");
            Err(e.kind)
        }
        Ok(Ok(resp)) => Ok(resp),
    };
    let ok = matches!(&result, Ok(resp) if resp.status().as_u16() < 500);
    if let Err(kind) = &result {
        metrics.upstream_error(&target.name, *kind);
    }
    if let Some(duration) = balance::record(endpoint, ok, &target.endpoints, up.outlier.as_ref()) {
        tracing::warn!(upstream = %up.name, instance = %ep.url, ?duration, "instance ejected after failures in a row");
        metrics.ejection(&target.name);
    }
    if let Some(policy) = &up.circuit_breaker {
        if let Some(phase) = target.health.breaker.record(policy, ok) {
            tracing::warn!(upstream = %up.name, ?phase, "circuit breaker changed state");
            metrics.circuit(&target.name, phase);
        }
    }
    let mut resp = result?;

    let switching = upgrading && resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
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
    crate::headers::remove_hop_by_hop(resp.headers_mut(), switching);
    Ok(resp)
}

/// The `Host` a request stands for.
pub fn host_value(uri: &Uri, headers: &HeaderMap) -> Option<HeaderValue> {
    // An absolute-form target's (and every HTTP/2 request's) authority stands for Host.
    match uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    }
}
