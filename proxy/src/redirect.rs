//! The plain-HTTP listener of a TLS deployment (`tls.redirect_http`): every request is
//! answered with a permanent redirect to the same host and path over HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::proxy::json_response;
use crate::reload::Live;
use crate::server::Handler;
use crate::upstream::Body;

/// Answers 308 `Location: https://HOST/PATH?QUERY`.
#[derive(Clone)]
pub struct Redirect {
    /// The live config (for the connection limits).
    pub live: Arc<Live>,
}

impl Handler for Redirect {
    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        redirect(&req)
    }

    fn limits(&self) -> crate::config::Limits {
        self.live.snapshot().config.limits.clone()
    }
}

/// The redirect for one request. 308 rather than 301 so a POST stays a POST.
pub fn redirect<B>(req: &Request<B>) -> Response<Body> {
    match location(req) {
        Some(location) => {
            let mut resp = json_response(
                StatusCode::PERMANENT_REDIRECT,
                &json!({ "redirect": location.to_str().unwrap_or_default() }),
            );
            resp.headers_mut().insert(header::LOCATION, location);
            resp
        }
        None => json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": "a Host header is needed to redirect to HTTPS" }),
        ),
    }
}

/// `https://` + the host without its port (the redirect goes to the default HTTPS port) +
/// the path and query as sent.
fn location<B>(req: &Request<B>) -> Option<HeaderValue> {
    let host = match req.uri().authority() {
        Some(a) => a.host().to_string(),
        None => {
            let raw = req.headers().get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = raw.parse().ok()?;
            authority.host().to_string()
        }
    };
    if host.is_empty() {
        return None;
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = if path.starts_with('/') {
        path
    } else {
        "/".into()
    };
    HeaderValue::from_str(&format!("https://{host}{path}")).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn req(uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn keeps_host_path_and_query_drops_the_port() {
        let resp = redirect(&req("/a/b?x=1", Some("shop.example:8080")));
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers()["location"], "https://shop.example/a/b?x=1");
    }

    #[test]
    fn absolute_form_and_ipv6() {
        let resp = redirect(&req("http://[::1]:80/x", None));
        assert_eq!(resp.headers()["location"], "https://[::1]/x");
    }

    #[test]
    fn no_host_is_a_400() {
        assert_eq!(redirect(&req("/x", None)).status(), 400);
    }
}
