//! The sample migration walked end to end with the four real binaries: catalog and inventory
//! go legacy -> shadow -> canary 50 -> extracted with the monolith's adapters switched to
//! remote (after importing their data), then inventory is rolled back, all under a bounded
//! background load of shop traffic through the proxy. No request may fail, and at the end
//! every order's stock must be held in exactly one owner's database.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strangler_e2e::shop::{self, ShopProcess};
use strangler_e2e::{eventually, free_port, get_json, http_client, Proxy};

/// Hard bounds on the background load, whatever happens.
const MAX_REQUESTS: u64 = 4000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(50);
const PRODUCTS: u64 = 120;

#[derive(Default)]
struct Load {
    stop: AtomicBool,
    ok: AtomicU64,
    orders: AtomicU64,
    failures: Mutex<Vec<String>>,
}

async fn shopper(proxy_url: String, worker: u64, load: Arc<Load>) {
    let client = http_client();
    let started = std::time::Instant::now();
    let mut n: u64 = 0;
    let rng = fastrand_like(worker);
    while !load.stop.load(Ordering::Relaxed)
        && started.elapsed() < MAX_LOAD_TIME
        && load.ok.load(Ordering::Relaxed) + (load.failures.lock().unwrap().len() as u64)
            < MAX_REQUESTS
    {
        n += 1;
        let pick = rng(n);
        let product = 1 + pick % PRODUCTS;
        let user = format!("user-{}", pick % 50);
        let (what, req) = match n % 5 {
            0 => (
                "order",
                client
                    .post(format!("{proxy_url}/api/orders"))
                    .json(&serde_json::json!({
                        "customer_id": 1 + pick % 50,
                        "items": [{"product_id": product, "qty": 1 + pick % 2},
                                  {"product_id": 1 + (pick / 7) % PRODUCTS, "qty": 1}]
                    })),
            ),
            1 => (
                "list",
                client.get(format!(
                    "{proxy_url}/api/products?limit=10&offset={}",
                    pick % 100
                )),
            ),
            2 => (
                "stock",
                client.get(format!("{proxy_url}/api/inventory/SKU-{product:05}")),
            ),
            3 => ("page", client.get(format!("{proxy_url}/"))),
            _ => (
                "product",
                client.get(format!("{proxy_url}/api/products/{product}")),
            ),
        };
        let result = req
            .header("x-user-id", user)
            .timeout(Duration::from_secs(15))
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                let _ = resp.bytes().await;
                load.ok.fetch_add(1, Ordering::Relaxed);
                if what == "order" {
                    load.orders.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("{what}: {status} {body}"));
            }
            Err(e) => load.failures.lock().unwrap().push(format!("{what}: {e}")),
        }
        // Pacing, so two debug builds on two cores keep up; not a readiness wait.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

/// A small deterministic sequence per worker (no extra dependency).
fn fastrand_like(seed: u64) -> impl Fn(u64) -> u64 {
    move |n| {
        let mut x =
            n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^ (x >> 29)
    }
}

/// Waits until the load has made `more` more successful requests (so each step is exercised).
async fn let_traffic_through(load: &Load, more: u64, what: &str) {
    let target = load.ok.load(Ordering::Relaxed) + more;
    eventually(Duration::from_secs(30), what, async || {
        load.ok.load(Ordering::Relaxed) >= target || !load.failures.lock().unwrap().is_empty()
    })
    .await;
}

async fn adapters(legacy: &ShopProcess) -> serde_json::Value {
    get_json(&legacy.url("/healthz")).await["adapters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_and_inventory_are_strangled_and_inventory_rolled_back_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (legacy_port, catalog_port, inventory_port) = (free_port(), free_port(), free_port());
    let legacy_url = format!("http://127.0.0.1:{legacy_port}");
    let yaml = format!(
        "upstreams:
  legacy: {legacy_url}
  catalog: {{url: http://127.0.0.1:{catalog_port}, timeout: 10s, connect_timeout: 2s}}
  inventory: {{url: http://127.0.0.1:{inventory_port}, timeout: 10s, connect_timeout: 2s}}
fallback: legacy
routes:
  - name: catalog
    match: {{prefix: /api/products}}
    upstream: catalog
    mode: legacy
  - name: inventory
    match: {{prefix: /api/inventory}}
    upstream: inventory
    mode: legacy
adapters:
  catalog: local
  inventory: local
"
    );
    let proxy = Proxy::start(&yaml).await;
    let config = proxy.config_path().to_path_buf();
    let config_arg = config.to_str().unwrap().to_string();
    let legacy = ShopProcess::legacy(legacy_port, &config_arg, PRODUCTS, d).await;
    let catalog =
        ShopProcess::service("catalog-service", Some(catalog_port), "catalog.db", d).await;
    let inventory =
        ShopProcess::service("inventory-service", Some(inventory_port), "inventory.db", d).await;

    // The monolith's stock before any order: available + reserved per SKU never changes.
    let legacy_totals: BTreeMap<String, i64> = shop::stock(&shop::open_db(&d.join("legacy.db")))
        .into_iter()
        .map(|(sku, (a, r))| (sku, a + r))
        .collect();
    assert_eq!(legacy_totals.len() as u64, PRODUCTS);

    let load = Arc::new(Load::default());
    let workers: Vec<_> = (0..2)
        .map(|w| tokio::spawn(shopper(proxy.url(""), w, load.clone())))
        .collect();
    let_traffic_through(&load, 30, "the shop serving on legacy").await;

    // Imports first, while everything is still on legacy.
    shop::import("catalog-service", &d.join("catalog.db"), &legacy_url);
    shop::import("inventory-service", &d.join("inventory.db"), &legacy_url);
    // The service's own stock after the import: from here on it too only moves units
    // between available and reserved.
    let imported: BTreeMap<String, (i64, i64)> =
        shop::stock(&shop::open_db(&d.join("inventory.db")));
    assert_eq!(imported.len() as u64, PRODUCTS);

    let edit = |args: &[&str]| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--config", &config_arg]);
        shop::strangler_edit(&full, d);
    };
    async fn proxy_has_reloaded(proxy: &Proxy) {
        let bytes = proxy.config_bytes();
        eventually(Duration::from_secs(15), "the proxy reloading", async || {
            proxy.has_version_of(&bytes).await
        })
        .await;
    }

    for route in ["catalog", "inventory"] {
        for (mode, percent) in [
            ("shadow", None),
            ("canary", Some("50")),
            ("extracted", None),
        ] {
            let mut args = vec!["set-mode", route, mode];
            if let Some(p) = percent {
                args.extend(["--percent", p]);
            }
            edit(&args);
            proxy_has_reloaded(&proxy).await;
            let_traffic_through(&load, 25, &format!("traffic with {route} in {mode}")).await;
        }
        edit(&["set-adapter", route, "remote"]);
        eventually(
            Duration::from_secs(15),
            "the monolith's adapter going remote",
            async || {
                adapters(&legacy).await[route]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("remote")
            },
        )
        .await;
        let orders_before = load.orders.load(Ordering::Relaxed);
        let_traffic_through(
            &load,
            40,
            &format!("traffic with the {route} adapter remote"),
        )
        .await;
        assert!(
            load.orders.load(Ordering::Relaxed) > orders_before,
            "orders were placed with the {route} adapter remote"
        );
    }

    // Roll inventory back: the monolith owns stock again, then the route goes back to legacy.
    edit(&["set-adapter", "inventory", "local"]);
    eventually(
        Duration::from_secs(15),
        "the inventory adapter going local",
        async || adapters(&legacy).await["inventory"] == "local",
    )
    .await;
    edit(&["set-mode", "inventory", "legacy"]);
    proxy_has_reloaded(&proxy).await;
    let_traffic_through(&load, 40, "traffic after the inventory rollback").await;

    load.stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failed requests, first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let shadow: serde_json::Value = http_client()
        .get(proxy.admin_url("/shadow"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_default();
    eprintln!(
        "walk: {} requests ok, {} orders; shadow report: {shadow}",
        load.ok.load(Ordering::Relaxed),
        load.orders.load(Ordering::Relaxed)
    );

    // Stop the programs (by PID, gracefully) and read their databases.
    let (mut legacy, mut catalog, mut inventory) = (legacy, catalog, inventory);
    assert!(legacy.stop(), "legacy-monolith exits cleanly on SIGTERM");
    assert!(catalog.stop(), "catalog-service exits cleanly on SIGTERM");
    assert!(
        inventory.stop(),
        "inventory-service exits cleanly on SIGTERM"
    );
    let legacy_db = shop::open_db(&d.join("legacy.db"));
    let service_db = shop::open_db(&d.join("inventory.db"));
    let orders = shop::orders(&legacy_db);
    assert_eq!(
        orders.len() as u64,
        load.orders.load(Ordering::Relaxed),
        "every 201 is an order"
    );
    let pending: i64 = legacy_db
        .query_row(
            "SELECT COUNT(*) FROM compensations WHERE done_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(pending, 0, "no release of a failed order is outstanding");
    let in_legacy = shop::held_reservations(&legacy_db);
    let in_service = shop::held_reservations(&service_db);
    let (mut local_orders, mut remote_orders) = (0, 0);
    for order in &orders {
        let mut lines = order.lines.clone();
        lines.sort();
        match (
            in_legacy.get(&order.order_ref),
            in_service.get(&order.order_ref),
        ) {
            (Some(held), None) => {
                assert_eq!(
                    held, &lines,
                    "order {} holds its lines in the monolith",
                    order.order_ref
                );
                assert_eq!(order.inventory_owner, "local");
                local_orders += 1;
            }
            (None, Some(held)) => {
                assert_eq!(
                    held, &lines,
                    "order {} holds its lines in inventory-service",
                    order.order_ref
                );
                assert!(order.inventory_owner.starts_with("remote"));
                remote_orders += 1;
            }
            (a, b) => panic!(
                "order {} held in monolith: {a:?}, in service: {b:?}",
                order.order_ref
            ),
        }
    }
    assert!(
        local_orders > 0 && remote_orders > 0,
        "orders on both sides: {local_orders} local, {remote_orders} remote"
    );
    let known: std::collections::BTreeSet<&str> =
        orders.iter().map(|o| o.order_ref.as_str()).collect();
    for order_ref in in_legacy.keys().chain(in_service.keys()) {
        assert!(
            known.contains(order_ref.as_str()),
            "reservation for {order_ref} without an order"
        );
    }
    // Counts agree with reservations in each database, and no unit appeared or vanished.
    let held_per_sku = |held: &BTreeMap<String, Vec<(String, i64)>>| {
        let mut per: BTreeMap<String, i64> = BTreeMap::new();
        for (sku, qty) in held.values().flatten() {
            *per.entry(sku.clone()).or_default() += qty;
        }
        per
    };
    let legacy_held = held_per_sku(&in_legacy);
    for (sku, (available, reserved)) in shop::stock(&legacy_db) {
        assert_eq!(
            available + reserved,
            legacy_totals[&sku],
            "monolith units of {sku}"
        );
        assert_eq!(
            reserved,
            legacy_held.get(&sku).copied().unwrap_or(0),
            "monolith reserved {sku}"
        );
    }
    let service_held = held_per_sku(&in_service);
    for (sku, (available, reserved)) in shop::stock(&service_db) {
        let (a0, r0) = imported[&sku];
        assert_eq!(available + reserved, a0 + r0, "service units of {sku}");
        assert_eq!(
            reserved - r0,
            service_held.get(&sku).copied().unwrap_or(0),
            "service reserved {sku}"
        );
    }
}
