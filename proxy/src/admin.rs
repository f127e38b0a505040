//! The admin API: health, the live routes, reload, metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::config::AdminToken;

use crate::proxy::{full, json_response};
use crate::reload::{self, Live};
use crate::server::Handler;
use crate::upstream::Body;

/// The admin API's request handler.
#[derive(Clone)]
pub struct Admin {
    /// The live config.
    pub live: Arc<Live>,
    /// Whether requests need the bearer token: true when the admin API is bound to an
    /// address other than loopback.
    pub require_token: bool,
}

impl Admin {
    /// The handler for an admin API bound to `addr`.
    pub fn new(live: Arc<Live>, addr: SocketAddr) -> Admin {
        Admin {
            live,
            require_token: !addr.ip().to_canonical().is_loopback(),
        }
    }
}

/// Whether a request may use the admin API. `/healthz` is always open (load balancer and
/// Kubernetes probes carry no token); off loopback everything else needs
/// `Authorization: Bearer TOKEN`, and with no token configured it is refused outright.
pub fn authorize(
    require_token: bool,
    path: &str,
    headers: &http::HeaderMap,
    token: Option<&AdminToken>,
) -> Result<(), Box<Response<Body>>> {
    if !require_token || path == "/healthz" {
        return Ok(());
    }
    let unauthorized = |error: &str| {
        let mut resp = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": error }));
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"strangler-admin\""),
        );
        Box::new(resp)
    };
    let Some(token) = token else {
        return Err(unauthorized(
            "the admin API is not on loopback and no token is configured (admin_token_file or STRANGLER_ADMIN_TOKEN)",
        ));
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match offered {
        // Constant time: the comparison takes as long however much of the token matches.
        Some(offered) if bool::from(offered.as_bytes().ct_eq(token.secret.as_bytes())) => Ok(()),
        Some(_) => Err(unauthorized("wrong token")),
        None => Err(unauthorized("missing `Authorization: Bearer TOKEN`")),
    }
}

impl Handler for Admin {
    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let live = &self.live;
        if let Err(resp) = authorize(
            self.require_token,
            req.uri().path(),
            req.headers(),
            live.snapshot().config.admin_token.as_ref(),
        ) {
            return *resp;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/healthz") => {
                json_response(StatusCode::OK, &json!({"status": "ok"}))
            }
            (&Method::GET | &Method::HEAD, "/routes") => {
                json_response(StatusCode::OK, &routes_json(live))
            }
            (&Method::GET | &Method::HEAD, "/shadow") => {
                json_response(StatusCode::OK, &live.shadow().report())
            }
            (&Method::GET | &Method::HEAD, "/promotions") => {
                json_response(StatusCode::OK, &live.promotions().report())
            }
            (&Method::POST, path)
                if path.starts_with("/promotions/") && path.ends_with("/restart") =>
            {
                let name = &path["/promotions/".len()..path.len() - "/restart".len()];
                if live.promotions().restart(name) {
                    json_response(StatusCode::OK, &live.promotions().report()["routes"][name])
                } else {
                    json_response(
                        StatusCode::NOT_FOUND,
                        &json!({"error": format!("route `{name}` has no promotion plan")}),
                    )
                }
            }
            (&Method::POST, "/reload") => match reload::reload_async(live, "admin").await {
                Ok(version) => json_response(StatusCode::OK, &json!({ "version": version })),
                Err(errors) => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "errors": errors }),
                ),
            },
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut resp = Response::new(full(live.metrics().render()));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            (_, "/healthz" | "/routes" | "/reload" | "/metrics" | "/shadow" | "/promotions") => {
                let mut resp = json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "method not allowed"}),
                );
                let allow = if req.uri().path() == "/reload" {
                    "POST"
                } else {
                    "GET, HEAD"
                };
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
                resp
            }
            _ => json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"})),
        }
    }

    fn limits(&self) -> crate::config::Limits {
        self.live.snapshot().config.limits.clone()
    }
}

/// `GET /routes`: the running config, where it came from, and the last reload error.
pub fn routes_json(live: &Live) -> serde_json::Value {
    let snap = live.snapshot();
    let c = &snap.config;
    let routes: Vec<serde_json::Value> = c
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "match": r.matcher,
                "upstream": r.upstream,
                "mode": r.mode,
                "percent": crate::config::percent_json(r.percent),
                "sticky": r.sticky.as_ref().map(|s| s.to_string()),
            })
        })
        .collect();
    let upstreams: serde_json::Map<String, serde_json::Value> = c
        .upstreams
        .values()
        .map(|u| (u.name.clone(), serde_json::to_value(u).unwrap_or_default()))
        .collect();
    json!({
        "version": c.version,
        "loaded_at": rfc3339(snap.loaded_at),
        "source": snap.source.display().to_string(),
        "routes": routes,
        "upstreams": upstreams,
        "fallback": c.fallback,
        "adapters": c.adapters,
        "limits": c.limits,
        "last_error": live.last_error().map(|e| json!({ "message": e.message, "at": rfc3339(e.at) })),
    })
}

/// A time as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().unwrap());
        }
        h
    }

    fn token() -> AdminToken {
        AdminToken {
            source: "test".into(),
            secret: "s3cret".into(),
        }
    }

    fn status(r: Result<(), Box<Response<Body>>>) -> u16 {
        match r {
            Ok(()) => 200,
            Err(resp) => resp.status().as_u16(),
        }
    }

    #[test]
    fn loopback_needs_no_token() {
        assert_eq!(
            status(authorize(false, "/routes", &headers(None), None)),
            200
        );
    }

    #[test]
    fn off_loopback_the_token_is_required_except_for_healthz() {
        let t = token();
        let t = Some(&t);
        assert_eq!(status(authorize(true, "/routes", &headers(None), t)), 401);
        assert_eq!(
            status(authorize(true, "/routes", &headers(Some("Bearer nope")), t)),
            401
        );
        assert_eq!(
            status(authorize(
                true,
                "/routes",
                &headers(Some("Basic s3cret")),
                t
            )),
            401
        );
        assert_eq!(
            status(authorize(
                true,
                "/reload",
                &headers(Some("Bearer s3cret")),
                t
            )),
            200
        );
        assert_eq!(
            status(authorize(
                true,
                "/metrics",
                &headers(Some("bearer  s3cret ")),
                t
            )),
            200
        );
        assert_eq!(status(authorize(true, "/healthz", &headers(None), t)), 200);
    }

    #[test]
    fn off_loopback_without_a_configured_token_everything_but_healthz_is_refused() {
        assert_eq!(
            status(authorize(true, "/routes", &headers(Some("Bearer x")), None)),
            401
        );
        assert_eq!(
            status(authorize(true, "/healthz", &headers(None), None)),
            200
        );
    }
}
