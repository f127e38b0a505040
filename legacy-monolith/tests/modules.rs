//! The monolith's modules in-process: catalog, inventory and orders (with a failing inventory).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use legacy_monolith::catalog::{CatalogStore, LocalCatalog};
use legacy_monolith::inventory::{InventoryStore, LocalInventory};
use legacy_monolith::orders::Orders;
use legacy_monolith::ports::{Catalog, Hold, Inventory, PortError};
use shop_api::wire::{OrderItem, OrderRequest, ProductInput, Reservation, ReserveRequest};
use shop_api::{Db, RequestId};
use strangler::adapter::Adapter;

fn db(dir: &tempfile::TempDir) -> Db {
    legacy_monolith::open_db(&dir.path().join("t.db"), 5).unwrap()
}

/// The status `store.reserve` refuses this reservation with.
async fn refused(
    store: &InventoryStore,
    sku: &str,
    req: ReserveRequest,
    key: Option<&str>,
) -> StatusCode {
    store
        .reserve(sku.into(), req, key.map(Into::into))
        .await
        .unwrap_err()
        .status
}

#[tokio::test]
async fn catalog_crud() {
    let dir = tempfile::tempdir().unwrap();
    let store = CatalogStore::new(db(&dir));
    assert_eq!(store.list(2, 0).await.unwrap().total, 5);
    let input = ProductInput {
        sku: "NEW-1".into(),
        name: "New".into(),
        description: String::new(),
        price_cents: 100,
        currency: "USD".into(),
    };
    let p = store.create(input.clone()).await.unwrap();
    assert_eq!(store.create(input.clone()).await.unwrap_err().status, 409);
    let updated = store
        .update(
            p.id,
            ProductInput {
                price_cents: 250,
                ..input.clone()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.price_cents, 250);
    store.delete(p.id).await.unwrap();
    assert_eq!(store.get(p.id).await.unwrap_err().status, 404);
    assert_eq!(store.update(999, input).await.unwrap_err().status, 404);
}

#[tokio::test]
async fn inventory_reserve_release_and_idempotency() {
    let dir = tempfile::tempdir().unwrap();
    let store = InventoryStore::new(db(&dir));
    let before = store.get("SKU-00001".into()).await.unwrap();
    let req = |qty| ReserveRequest {
        qty,
        order_ref: "o-1".into(),
    };
    let r = store
        .reserve("SKU-00001".into(), req(3), Some("k".into()))
        .await
        .unwrap();
    let again = store
        .reserve("SKU-00001".into(), req(3), Some("k".into()))
        .await
        .unwrap();
    assert_eq!(r, again, "same key, same reservation, stock held once");
    let mid = store.get("SKU-00001".into()).await.unwrap();
    assert_eq!((mid.available, mid.reserved), (before.available - 3, 3));
    assert_eq!(refused(&store, "SKU-00001", req(4), Some("k")).await, 422);
    assert_eq!(
        refused(&store, "SKU-00001", req(1_000_000), None).await,
        409
    );
    assert_eq!(refused(&store, "NOPE", req(1), None).await, 404);
    assert_eq!(refused(&store, "SKU-00001", req(-1), None).await, 422);
    assert_eq!(store.release(r.reservation_id).await.unwrap().released, 1);
    assert_eq!(
        store.release(r.reservation_id).await.unwrap().released,
        0,
        "twice is harmless"
    );
    assert_eq!(store.get("SKU-00001".into()).await.unwrap(), before);
    // Releasing an order refuses later reservations for it.
    let reserve_for_o2 = || {
        let req = ReserveRequest {
            qty: 1,
            order_ref: "o-2".into(),
        };
        store.reserve("SKU-00002".into(), req, None)
    };
    reserve_for_o2().await.unwrap();
    assert_eq!(store.release_order("o-2".into()).await.unwrap().released, 1);
    let late = reserve_for_o2().await;
    assert_eq!(late.unwrap_err().status, 409);
}

/// Inventory that works for the first `ok` reservations, then is unreachable.
struct FailsAfter {
    inner: LocalInventory,
    ok: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Inventory for FailsAfter {
    fn owner(&self) -> String {
        "local".into()
    }
    async fn reserve(&self, hold: Hold<'_>, rid: &RequestId) -> Result<Reservation, PortError> {
        if self.ok.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err(PortError::Unavailable("down".into()));
        }
        self.inner.reserve(hold, rid).await
    }
    async fn release_order(&self, r: &str, rid: &RequestId) -> Result<i64, PortError> {
        self.inner.release_order(r, rid).await
    }
}

#[tokio::test]
async fn an_order_that_fails_midway_releases_what_it_reserved() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(&dir);
    let stock = InventoryStore::new(db.clone());
    let catalog: Arc<dyn Catalog> = Arc::new(LocalCatalog(CatalogStore::new(db.clone())));
    let failing: Arc<dyn Inventory> = Arc::new(FailsAfter {
        inner: LocalInventory(stock.clone()),
        ok: 1.into(),
    });
    let orders = Orders::new(db.clone(), Adapter::new(catalog), Adapter::new(failing));
    let before = stock.list(10, 0).await.unwrap();
    let req = OrderRequest {
        customer_id: 1,
        items: vec![
            OrderItem {
                product_id: 1,
                qty: 2,
            },
            OrderItem {
                product_id: 2,
                qty: 1,
            },
        ],
    };
    let e = orders
        .place(req.clone(), &RequestId("t".into()))
        .await
        .unwrap_err();
    assert_eq!(e.status, 503);
    assert_eq!(
        stock.list(10, 0).await.unwrap(),
        before,
        "the first line's stock was released"
    );
    assert_eq!(orders.list(None, 10, 0).await.unwrap().total, 0);

    // With a working inventory the same order goes through, priced from the catalog.
    let catalog: Arc<dyn Catalog> = Arc::new(LocalCatalog(CatalogStore::new(db.clone())));
    let ok: Arc<dyn Inventory> = Arc::new(LocalInventory(stock.clone()));
    let orders = Orders::new(db, Adapter::new(catalog), Adapter::new(ok));
    let order = orders.place(req, &RequestId("t".into())).await.unwrap();
    assert_eq!(order.lines.len(), 2);
    assert_eq!(
        order.total_cents,
        order.lines.iter().map(|l| l.line_total_cents).sum::<i64>()
    );
    assert_eq!(orders.get(order.id).await.unwrap(), order);
    let bad = OrderRequest {
        customer_id: 1,
        items: vec![OrderItem {
            product_id: 99,
            qty: 1,
        }],
    };
    assert_eq!(
        orders
            .place(bad, &RequestId("t".into()))
            .await
            .unwrap_err()
            .status,
        422
    );
}
