//! HTTP plumbing every shop program uses: request ids, the access log, body limits, JSON
//! answers for unknown paths and methods, graceful shutdown and tracing set-up.

use std::future::Future;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::ApiError;

/// The request id header, passed on to every call made on behalf of a request.
pub const REQUEST_ID: &str = "x-request-id";
/// Largest request body accepted (413 past it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The request id of the request being served (an extension set by [`serve`]'s layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh random id (for work no client request started, such as background retries).
    pub fn generate() -> RequestId {
        RequestId(format!("{:016x}", fastrand::u64(..)))
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate))
    }
}

/// Takes the client's `x-request-id` (or makes one), runs the request in a span that carries
/// it, returns it on the response and writes one access-log line.
async fn request_id_and_access_log(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
        .map(str::to_owned)
        .map(RequestId)
        .unwrap_or_else(RequestId::generate);
    req.extensions_mut().insert(id.clone());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span = tracing::info_span!("request", request_id = %id.0);
    let started = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            %method,
            path,
            status = resp.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "served"
        )
    });
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        resp.headers_mut().insert(REQUEST_ID, value);
    }
    resp
}

/// Adds the layers every shop program has: JSON 404/405, the body limit, request ids and the
/// access log.
pub fn with_common_layers(app: Router) -> Router {
    app.fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        // Bodies past the limit are refused by the JSON extractor with a JSON 413.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Outermost: every answer, errors included, carries the request id and is logged.
        .layer(axum::middleware::from_fn(request_id_and_access_log))
}

/// Serves `app` (with [`with_common_layers`]) on `listener` until `shutdown` completes, then
/// lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, with_common_layers(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Completes on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Logs to stdout: human-readable, or one JSON object a line when `json`. `RUST_LOG` sets the
/// level (default `info`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}
