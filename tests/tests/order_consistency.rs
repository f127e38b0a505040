//! No data loss across the boundary: remote services killed in the middle of an order leave
//! no order and no held stock behind, once the service is back.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strangler_e2e::shop::{self, ShopProcess};
use strangler_e2e::{eventually, free_port, get_json, http_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP relay in front of a service that SIGKILLs it right after it has committed the
/// `nth` reservation and before its answer gets back: the worst moment, when the caller cannot
/// know the reservation exists. While the service is down the relay hangs up on every
/// connection; once it is back, the relay passes traffic again.
async fn kill_switch(target: SocketAddr, nth: usize, pid: u32) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue; // down: drop the client's connection
            };
            let (seen, killed) = (seen.clone(), killed.clone());
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let armed = Arc::new(AtomicBool::new(false));
                let arm = armed.clone();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        if chunk.windows(9).any(|w| w == b"/reserve ")
                            && !killed.load(Ordering::SeqCst)
                            && seen.fetch_add(1, Ordering::SeqCst) + 1 == nth
                        {
                            arm.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n) = sr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if armed.load(Ordering::SeqCst) {
                        // The answer to the nth reservation: the service has committed it.
                        let _ = std::process::Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        break; // and the answer is lost
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    });
    addr
}

fn config(
    dir: &std::path::Path,
    legacy: u16,
    catalog: SocketAddr,
    inventory: SocketAddr,
) -> String {
    let yaml = format!(
        "upstreams:
  legacy: http://127.0.0.1:{legacy}
  catalog: {{url: http://{catalog}, timeout: 2s, connect_timeout: 1s}}
  inventory: {{url: http://{inventory}, timeout: 2s, connect_timeout: 1s}}
fallback: legacy
adapters:
  catalog: local
  inventory: remote
"
    );
    let path = dir.join("routes.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_string()
}

/// `POST /api/orders` to the monolith with `order` as the JSON body.
async fn post_order(legacy: &ShopProcess, order: &serde_json::Value) -> reqwest::Response {
    http_client()
        .post(legacy.url("/api/orders"))
        .json(order)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_killed_mid_order_leaves_no_order_and_no_held_stock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut inventory = ShopProcess::service("inventory-service", None, "inventory.db", d).await;
    let relay = kill_switch(inventory.addr(), 2, inventory.pid()).await;
    let legacy_port = free_port();
    let config = config(d, legacy_port, "127.0.0.1:9".parse().unwrap(), relay);
    let legacy = ShopProcess::legacy(legacy_port, &config, 20, d).await;
    shop::import(
        "inventory-service",
        &d.join("inventory.db"),
        &legacy.url(""),
    );
    let before = shop::stock(&shop::open_db(&d.join("inventory.db")));

    let resp = http_client()
        .post(legacy.url("/api/orders"))
        .header("x-request-id", "kill-test-1")
        .json(&serde_json::json!({"customer_id": 9, "items": [
            {"product_id": 1, "qty": 2}, {"product_id": 2, "qty": 1}, {"product_id": 3, "qty": 4}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-request-id"], "kill-test-1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("inventory unavailable"),
        "clear JSON error: {body}"
    );
    let orders = get_json(&legacy.url("/api/orders?customer_id=9")).await;
    assert_eq!(orders["total"], 0, "no order was written");

    // The service comes back on its own database; the monolith's pending release gets through.
    inventory.restart(d).await;
    let inv_db = d.join("inventory.db");
    eventually(
        Duration::from_secs(30),
        "the failed order's stock released",
        async || {
            shop::held_reservations(&shop::open_db(&inv_db)).is_empty()
                && shop::stock(&shop::open_db(&inv_db)) == before
        },
    )
    .await;
    let service = shop::open_db(&inv_db);
    let made: i64 = service
        .query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        made, 2,
        "two reservations were committed (the second's answer was lost), both released"
    );
    let legacy_db = shop::open_db(&d.join("legacy.db"));
    eventually(
        Duration::from_secs(10),
        "the compensation marked done",
        async || {
            legacy_db
                .query_row(
                    "SELECT COUNT(*) FROM compensations WHERE done_at IS NULL",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap()
                == 0
        },
    )
    .await;
    assert!(shop::orders(&legacy_db).is_empty());
    // The request id reached the service with the remote calls.
    assert!(
        inventory.logs().contains("kill-test-1")
            || std::fs::read_dir(d).unwrap().any(|e| {
                let p = e.unwrap().path();
                p.extension().is_some_and(|x| x == "log")
                    && p.to_string_lossy().contains("inventory-service")
                    && std::fs::read_to_string(&p)
                        .unwrap_or_default()
                        .contains("kill-test-1")
            }),
        "x-request-id passed on to inventory-service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_down_fails_the_order_cleanly_and_holds_no_stock() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut catalog = ShopProcess::service("catalog-service", None, "catalog.db", d).await;
    let legacy_port = free_port();
    let yaml = format!(
        "upstreams:
  legacy: http://127.0.0.1:{legacy_port}
  catalog: {{url: http://{}, timeout: 2s, connect_timeout: 1s}}
fallback: legacy
adapters:
  catalog: remote
",
        catalog.addr()
    );
    let config = d.join("routes.yaml");
    std::fs::write(&config, yaml).unwrap();
    let legacy = ShopProcess::legacy(legacy_port, config.to_str().unwrap(), 20, d).await;
    shop::import("catalog-service", &d.join("catalog.db"), &legacy.url(""));
    let order = serde_json::json!({"customer_id": 4, "items": [{"product_id": 5, "qty": 1}]});
    let ok = post_order(&legacy, &order).await;
    assert_eq!(ok.status(), 201, "orders work with the remote catalog");
    let before = shop::stock(&shop::open_db(&d.join("legacy.db")));

    catalog.kill();
    for _ in 0..8 {
        let resp = post_order(&legacy, &order).await;
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("catalog unavailable"),
            "{body}"
        );
    }
    let legacy_db = shop::open_db(&d.join("legacy.db"));
    assert_eq!(
        shop::stock(&legacy_db),
        before,
        "no stock held for failed orders"
    );
    assert_eq!(
        shop::orders(&legacy_db).len(),
        1,
        "only the first order exists"
    );
    assert!(
        legacy.logs().contains("circuit open"),
        "the breaker opened and failed fast"
    );
}
