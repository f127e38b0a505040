//! The admin API: health, the live routes, reload, metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::proxy::{full, json_response};
use crate::reload::{self, Live};
use crate::server::Handler;
use crate::upstream::Body;

/// The admin API's request handler.
#[derive(Clone)]
pub struct Admin {
    /// The live config.
    pub live: Arc<Live>,
}

impl Handler for Admin {
    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let live = &self.live;
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
                "percent": r.percent.map(|p| if p.fract() == 0.0 { json!(p as u64) } else { json!(p) }),
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
