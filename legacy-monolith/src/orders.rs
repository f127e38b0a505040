//! The orders module: places orders by pricing lines through [`Catalog`] and holding stock
//! through [`Inventory`], never touching those modules' tables.
//!
//! No stock is lost across the boundary: an order is written only when every line's
//! reservation succeeded. When any step fails after some reservations were made, the order's
//! reservations are released by its reference (which also catches one whose answer was lost
//! on the way back). If the release itself cannot get through (the inventory owner is down),
//! it is recorded in `compensations` and retried in the background until it does, also after
//! a restart of the monolith.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rusqlite::params;
use serde::Deserialize;
use shop_api::error::parse_id;
use shop_api::wire::{now_rfc3339, Order, OrderLine, OrderRequest, Page, Paging, Reservation};
use shop_api::{ApiError, ApiJson, ApiQuery, Db, RequestId};
use strangler::adapter::Adapter;

use crate::ports::{Catalog, Hold, Inventory, PortError};

/// The orders' tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    order_ref TEXT NOT NULL UNIQUE,
    customer_id INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    inventory_owner TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id);
CREATE TABLE IF NOT EXISTS order_lines (
    order_id INTEGER NOT NULL REFERENCES orders (id),
    line_no INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    sku TEXT NOT NULL,
    name TEXT NOT NULL,
    qty INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    line_total_cents INTEGER NOT NULL,
    reservation_id INTEGER NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE TABLE IF NOT EXISTS compensations (
    order_ref TEXT PRIMARY KEY,
    inventory_owner TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    done_at TEXT
);";

/// Longest wait between two background attempts to release a failed order's stock.
const MAX_COMPENSATION_BACKOFF: Duration = Duration::from_secs(5);

/// Builds the [`Inventory`] that owns a failed order's reservations, from the owner recorded
/// with it (`local` or `remote URL`), for compensations resumed after a restart.
pub type OwnerResolver = Arc<dyn Fn(&str) -> Option<Arc<dyn Inventory>> + Send + Sync>;

/// The orders module.
#[derive(Clone)]
pub struct Orders {
    db: Db,
    catalog: Adapter<dyn Catalog>,
    inventory: Adapter<dyn Inventory>,
}

impl Orders {
    /// Orders over `db` (which must have [`SCHEMA`]), reaching the other modules through
    /// these adapters.
    pub fn new(db: Db, catalog: Adapter<dyn Catalog>, inventory: Adapter<dyn Inventory>) -> Self {
        Orders {
            db,
            catalog,
            inventory,
        }
    }

    /// Places an order: 201 with it, 409 when stock is short, 422 for unknown products,
    /// 503 when the catalog or inventory owner cannot be reached (no order, no stock held).
    pub async fn place(&self, req: OrderRequest, rid: &RequestId) -> Result<Order, ApiError> {
        req.validate()?;
        // Pinned for the whole order: a swap in the middle does not split it across owners.
        let catalog = self.catalog.current();
        let inventory = self.inventory.current();

        let mut lines = Vec::with_capacity(req.items.len());
        let mut currency: Option<String> = None;
        for item in &req.items {
            let p = catalog
                .product(item.product_id, rid)
                .await
                .map_err(|e| match e {
                    PortError::NotFound(_) => {
                        ApiError::invalid(format!("product {} not found", item.product_id))
                    }
                    e => port_failure("catalog", e, "no order was placed"),
                })?;
            match &currency {
                None => currency = Some(p.currency.clone()),
                Some(c) if *c != p.currency => {
                    return Err(ApiError::invalid(
                        "all items of an order must have the same currency",
                    ))
                }
                Some(_) => {}
            }
            let line_total = p.price_cents.checked_mul(item.qty).ok_or_else(|| {
                ApiError::invalid(format!("line for product {} is too large", p.id))
            })?;
            lines.push(OrderLine {
                product_id: p.id,
                sku: p.sku,
                name: p.name,
                qty: item.qty,
                unit_price_cents: p.price_cents,
                line_total_cents: line_total,
                reservation_id: 0,
            });
        }
        let currency = currency.unwrap_or_else(|| "USD".into());
        let total = lines
            .iter()
            .try_fold(0i64, |acc, l| acc.checked_add(l.line_total_cents))
            .ok_or_else(|| ApiError::invalid("order total is too large"))?;

        let order_ref = format!("ord-{:016x}", fastrand::u64(..));
        for (i, line) in lines.iter_mut().enumerate() {
            let key = format!("{order_ref}:{i}");
            let hold = Hold {
                sku: &line.sku,
                qty: line.qty,
                order_ref: &order_ref,
                idempotency_key: &key,
            };
            match inventory.reserve(hold, rid).await {
                Ok(Reservation { reservation_id, .. }) => line.reservation_id = reservation_id,
                Err(e) => {
                    let released = self
                        .compensate(&inventory, &order_ref, &e.to_string(), rid)
                        .await;
                    let after = if released {
                        "no order was placed and its reservations were released"
                    } else {
                        "no order was placed; its reservations will be released when inventory is back"
                    };
                    return Err(match e {
                        PortError::Refused(m) => ApiError::conflict(m),
                        PortError::NotFound(_) => {
                            ApiError::conflict(format!("sku {} has no stock record", line.sku))
                        }
                        e => port_failure("inventory", e, after),
                    });
                }
            }
        }

        let order = Order {
            id: 0,
            order_ref: order_ref.clone(),
            customer_id: req.customer_id,
            lines,
            total_cents: total,
            currency,
            created_at: now_rfc3339(),
        };
        let owner = inventory.owner();
        match self.db.call(move |c| insert(c, order, &owner)).await {
            Ok(order) => Ok(order),
            Err(e) => {
                self.compensate(&inventory, &order_ref, "order could not be saved", rid)
                    .await;
                Err(e)
            }
        }
    }

    /// Releases `order_ref`'s reservations now if possible; otherwise records the release
    /// and keeps trying in the background. Returns whether it is done.
    async fn compensate(
        &self,
        inventory: &Arc<dyn Inventory>,
        order_ref: &str,
        reason: &str,
        rid: &RequestId,
    ) -> bool {
        let (r, owner, why) = (order_ref.to_string(), inventory.owner(), reason.to_string());
        let recorded = self
            .db
            .call(move |c| {
                c.execute(
                    "INSERT OR IGNORE INTO compensations (order_ref, inventory_owner, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![r, owner, why, now_rfc3339()],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(order_ref, "cannot record compensation: {e}");
        }
        match inventory.release_order(order_ref, rid).await {
            Ok(n) => {
                self.mark_done(order_ref, n).await;
                true
            }
            Err(e) => {
                tracing::warn!(
                    order_ref,
                    "cannot release a failed order's stock yet, will retry: {e}"
                );
                self.retry_in_background(inventory.clone(), order_ref.to_string());
                false
            }
        }
    }

    /// Records that `order_ref`'s stock was released (`released` reservations).
    async fn mark_done(&self, order_ref: &str, released: i64) {
        tracing::info!(order_ref, released, "released the stock of a failed order");
        let r = order_ref.to_string();
        let done = self
            .db
            .call(move |c| {
                c.execute(
                    "UPDATE compensations SET done_at = ?2 WHERE order_ref = ?1",
                    params![r, now_rfc3339()],
                )?;
                Ok(())
            })
            .await;
        if let Err(e) = done {
            tracing::error!(order_ref, "cannot mark compensation done: {e}");
        }
    }

    fn retry_in_background(&self, inventory: Arc<dyn Inventory>, order_ref: String) {
        let orders = self.clone();
        tokio::spawn(async move {
            let rid = RequestId::generate();
            let mut wait = Duration::from_millis(200);
            loop {
                tokio::time::sleep(wait).await;
                match inventory.release_order(&order_ref, &rid).await {
                    Ok(n) => {
                        orders.mark_done(&order_ref, n).await;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(
                            order_ref,
                            "still cannot release a failed order's stock: {e}"
                        );
                        wait = (wait * 2).min(MAX_COMPENSATION_BACKOFF);
                    }
                }
            }
        });
    }

    /// Restarts the background release of every compensation not done yet (after a restart).
    pub async fn resume_compensations(&self, resolve: &OwnerResolver) -> Result<usize, ApiError> {
        let pending: Vec<(String, String)> = self
            .db
            .call(|c| {
                let mut stmt = c.prepare(
                    "SELECT order_ref, inventory_owner FROM compensations WHERE done_at IS NULL",
                )?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await?;
        let mut resumed = 0;
        for (order_ref, owner) in pending {
            match resolve(&owner) {
                Some(inventory) => {
                    self.retry_in_background(inventory, order_ref);
                    resumed += 1;
                }
                None => tracing::error!(
                    order_ref,
                    owner,
                    "cannot resume compensation: unknown owner"
                ),
            }
        }
        Ok(resumed)
    }

    /// One order, or 404.
    pub async fn get(&self, id: i64) -> Result<Order, ApiError> {
        self.db
            .call(move |c| {
                load(c, "WHERE id = ?1", params![id])?
                    .pop()
                    .ok_or_else(|| order_not_found(id))
            })
            .await
    }

    /// Orders in id order, optionally one customer's.
    pub async fn list(
        &self,
        customer_id: Option<i64>,
        limit: i64,
        offset: i64,
    ) -> Result<Page<Order>, ApiError> {
        self.db
            .call(move |c| {
                let (filter, total): (&str, i64) = match customer_id {
                    Some(cid) => (
                        "WHERE customer_id = ?1 ORDER BY id LIMIT ?2 OFFSET ?3",
                        c.query_row(
                            "SELECT COUNT(*) FROM orders WHERE customer_id = ?1",
                            [cid],
                            |r| r.get(0),
                        )?,
                    ),
                    None => (
                        "WHERE ?1 IS NULL ORDER BY id LIMIT ?2 OFFSET ?3",
                        c.query_row("SELECT COUNT(*) FROM orders", [], |r| r.get(0))?,
                    ),
                };
                let items = load(c, filter, params![customer_id, limit, offset])?;
                Ok(Page { items, total })
            })
            .await
    }
}

fn order_not_found(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("order {id} not found"))
}

/// 503 for an owner that could not be reached; 502 for one that refused a request we made
/// (a bug on our side). Details go to the log.
fn port_failure(capability: &str, e: PortError, after: &str) -> ApiError {
    tracing::warn!(capability, "order failed: {e}");
    match e {
        PortError::Unavailable(_) => {
            ApiError::unavailable(format!("{capability} unavailable; {after}"))
        }
        PortError::Invalid(m) | PortError::NotFound(m) | PortError::Refused(m) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("{capability} refused the request: {m}; {after}"),
        ),
    }
}

fn insert(c: &mut rusqlite::Connection, mut order: Order, owner: &str) -> Result<Order, ApiError> {
    let tx = c.transaction()?;
    order.id = tx.query_row(
        "INSERT INTO orders (order_ref, customer_id, total_cents, currency, inventory_owner, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        params![order.order_ref, order.customer_id, order.total_cents, order.currency, owner, order.created_at],
        |r| r.get(0),
    )?;
    for (i, l) in order.lines.iter().enumerate() {
        tx.execute(
            "INSERT INTO order_lines (order_id, line_no, product_id, sku, name, qty, unit_price_cents,
             line_total_cents, reservation_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![order.id, i as i64, l.product_id, l.sku, l.name, l.qty, l.unit_price_cents, l.line_total_cents, l.reservation_id],
        )?;
    }
    tx.commit()?;
    Ok(order)
}

fn load(
    c: &rusqlite::Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Order>, ApiError> {
    let mut stmt = c.prepare(&format!(
        "SELECT id, order_ref, customer_id, total_cents, currency, created_at FROM orders {filter}"
    ))?;
    let mut orders = stmt
        .query_map(args, |r| {
            Ok(Order {
                id: r.get(0)?,
                order_ref: r.get(1)?,
                customer_id: r.get(2)?,
                lines: Vec::new(),
                total_cents: r.get(3)?,
                currency: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut lines = c.prepare_cached(
        "SELECT product_id, sku, name, qty, unit_price_cents, line_total_cents, reservation_id
         FROM order_lines WHERE order_id = ?1 ORDER BY line_no",
    )?;
    for order in &mut orders {
        order.lines = lines
            .query_map([order.id], |r| {
                Ok(OrderLine {
                    product_id: r.get(0)?,
                    sku: r.get(1)?,
                    name: r.get(2)?,
                    qty: r.get(3)?,
                    unit_price_cents: r.get(4)?,
                    line_total_cents: r.get(5)?,
                    reservation_id: r.get(6)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(orders)
}

/// `?customer_id=&limit=&offset=` of the order listing. (Not `#[serde(flatten)]` over
/// [`Paging`]: flattening breaks number parsing in query strings.)
#[derive(Debug, Deserialize)]
struct ListQuery {
    customer_id: Option<i64>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `/api/orders` and below.
pub fn routes(orders: Orders) -> Router {
    Router::new()
        .route("/api/orders", get(list).post(create))
        .route("/api/orders/{id}", get(read))
        .with_state(orders)
}

async fn create(
    State(o): State<Orders>,
    rid: RequestId,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<(StatusCode, axum::Json<Order>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(o.place(req, &rid).await?)))
}

async fn read(
    State(o): State<Orders>,
    Path(id): Path<String>,
) -> Result<axum::Json<Order>, ApiError> {
    let id = parse_id(&id, |t| order_not_found(t))?;
    Ok(axum::Json(o.get(id).await?))
}

async fn list(
    State(o): State<Orders>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<Page<Order>>, ApiError> {
    let paging = Paging {
        limit: q.limit,
        offset: q.offset,
    };
    let (limit, offset) = paging.resolve()?;
    Ok(axum::Json(o.list(q.customer_id, limit, offset).await?))
}
