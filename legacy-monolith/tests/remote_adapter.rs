//! The remote adapters against a service that is down, slow, and erroring: retries are
//! bounded, timeouts honoured, and the circuit breaker opens and then fails fast.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use legacy_monolith::breaker::BreakerSettings;
use legacy_monolith::ports::{Catalog, Hold, Inventory, PortError};
use legacy_monolith::remote::{RemoteCatalog, RemoteInventory, RemoteSettings};
use shop_api::RequestId;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Serves `app`, counting the requests it gets.
async fn serve_counting(app: Router) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = app.layer(axum::middleware::map_request(move |req: Request| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { req }
    }));
    (serve(app).await, hits)
}

fn settings(base: &str, threshold: u32) -> RemoteSettings {
    let mut s = RemoteSettings::new(base, Duration::from_millis(300), Duration::from_millis(300));
    s.retries = 2;
    s.backoff = Duration::from_millis(5);
    s.breaker = BreakerSettings {
        threshold,
        cool_down: Duration::from_millis(400),
    };
    s
}

fn rid() -> RequestId {
    RequestId("remote-test".into())
}

/// One unit of `SKU-1` for `order_ref`.
fn hold<'a>(order_ref: &'a str, idempotency_key: &'a str) -> Hold<'a> {
    Hold {
        sku: "SKU-1",
        qty: 1,
        order_ref,
        idempotency_key,
    }
}

#[tokio::test]
async fn erroring_service_is_retried_a_bounded_number_of_times_then_the_circuit_opens() {
    let (base, hits) = serve_counting(Router::new().route(
        "/api/products/{id}",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"boom\"}") }),
    ))
    .await;
    let catalog = RemoteCatalog::new(settings(&base, 5)).unwrap();
    let e = catalog.product(1, &rid()).await.unwrap_err();
    assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "one attempt and two retries"
    );
    let _ = catalog.product(1, &rid()).await.unwrap_err();
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "the fifth failure in a row opens the circuit"
    );
    assert!(catalog.0.breaker().is_open());
    let e = catalog.product(1, &rid()).await.unwrap_err();
    assert!(e.to_string().contains("circuit open"), "{e}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        5,
        "an open circuit does not call"
    );
}

#[tokio::test]
async fn slow_service_times_out_and_retries_are_bounded() {
    let (base, hits) = serve_counting(Router::new().route(
        "/api/products/{id}",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    ))
    .await;
    let catalog = RemoteCatalog::new(settings(&base, 10)).unwrap();
    // A hang guard, not a timing assertion: without the request timeout this never returns.
    let e = tokio::time::timeout(Duration::from_secs(20), catalog.product(1, &rid()))
        .await
        .expect("the request timeout ends the call")
        .unwrap_err();
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn down_service_fails_fast_once_the_circuit_is_open_and_recovers_when_back() {
    // A port with nobody listening.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let inventory = RemoteInventory::new(settings(&format!("http://{addr}"), 3)).unwrap();
    let e = inventory
        .reserve(hold("o-1", "o-1:0"), &rid())
        .await
        .unwrap_err();
    assert!(matches!(e, PortError::Unavailable(_)), "{e:?}");
    assert!(
        inventory.0.breaker().is_open(),
        "three refused attempts open it"
    );
    let e = inventory.release_order("o-1", &rid()).await.unwrap_err();
    assert!(e.to_string().contains("circuit open"), "{e}");

    // The service comes back on that port; after the cool-down a trial call closes the circuit.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let seen_id = Arc::new(std::sync::Mutex::new(String::new()));
    let s = seen_id.clone();
    let app = Router::new().route(
        "/api/inventory/orders/{r}/release",
        post(move |headers: axum::http::HeaderMap| {
            let s = s.clone();
            async move {
                *s.lock().unwrap() = headers["x-request-id"].to_str().unwrap().to_string();
                axum::Json(serde_json::json!({"released": 1}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Past the breaker's cool-down (400 ms): the next call is the trial.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(inventory.release_order("o-1", &rid()).await.unwrap(), 1);
    assert!(!inventory.0.breaker().is_open());
    assert_eq!(
        *seen_id.lock().unwrap(),
        "remote-test",
        "x-request-id is passed on"
    );
}

#[tokio::test]
async fn answers_from_a_live_service_are_not_failures() {
    let (base, hits) = serve_counting(Router::new().route(
        "/api/inventory/{sku}/reserve",
        post(|| async {
            (
                StatusCode::CONFLICT,
                axum::Json(serde_json::json!({"error": "insufficient stock"})),
            )
        }),
    ))
    .await;
    let inventory = RemoteInventory::new(settings(&base, 2)).unwrap();
    for _ in 0..4 {
        let e = inventory
            .reserve(hold("o", "o:0"), &rid())
            .await
            .unwrap_err();
        assert_eq!(e, PortError::Refused("insufficient stock".into()));
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        4,
        "a 409 is not retried and does not open the circuit"
    );
    assert!(!inventory.0.breaker().is_open());
}
