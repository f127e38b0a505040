//! [`InventoryStore`]: stock per SKU and the reservations that hold it, their tables, queries
//! and validation. The monolith's inventory module and `inventory-service` both serve it, so
//! they answer alike.
//!
//! A reservation moves units from `available` to `reserved`; a release moves them back, so
//! `available + reserved` of a SKU only changes when stock is set. Releasing an order also
//! records the order as released, so a reservation for it that arrives late (a retried or
//! delayed request) is refused instead of holding stock nobody will release.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use shop_api::wire::{
    check_order_ref, now_rfc3339, Page, Released, Reservation, ReserveRequest, StockLevel,
};
use shop_api::{ApiError, Db};

/// The inventory's tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved INTEGER NOT NULL CHECK (reserved >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL,
    qty INTEGER NOT NULL CHECK (qty > 0),
    order_ref TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('held', 'released')),
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_by_order ON reservations (order_ref);
CREATE TABLE IF NOT EXISTS released_orders (
    order_ref TEXT PRIMARY KEY,
    released_at TEXT NOT NULL
);";

/// The inventory's data access.
#[derive(Debug, Clone)]
pub struct InventoryStore {
    db: Db,
}

fn stock_level(row: &Row<'_>) -> rusqlite::Result<StockLevel> {
    Ok(StockLevel {
        sku: row.get(0)?,
        available: row.get(1)?,
        reserved: row.get(2)?,
    })
}

fn release_one(tx: &Transaction<'_>, id: i64) -> Result<Option<i64>, ApiError> {
    let row: Option<(String, i64, String)> = tx
        .query_row(
            "SELECT sku, qty, status FROM reservations WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((sku, qty, status)) = row else {
        return Ok(None);
    };
    if status == "held" {
        tx.execute(
            "UPDATE reservations SET status = 'released' WHERE id = ?1",
            [id],
        )?;
        tx.execute(
            "UPDATE stock SET available = available + ?2, reserved = reserved - ?2 WHERE sku = ?1",
            params![sku, qty],
        )?;
        Ok(Some(1))
    } else {
        Ok(Some(0))
    }
}

impl InventoryStore {
    /// The store over `db` (which must have [`SCHEMA`]).
    pub fn new(db: Db) -> Self {
        InventoryStore { db }
    }

    /// A page of stock levels in SKU order.
    pub async fn list(&self, limit: i64, offset: i64) -> Result<Page<StockLevel>, ApiError> {
        self.db
            .call(move |c| {
                let total = c.query_row("SELECT COUNT(*) FROM stock", [], |r| r.get(0))?;
                let mut stmt = c.prepare_cached(
                    "SELECT sku, available, reserved FROM stock ORDER BY sku LIMIT ?1 OFFSET ?2",
                )?;
                let items = stmt
                    .query_map(params![limit, offset], stock_level)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page { items, total })
            })
            .await
    }

    /// Stock of one SKU, or 404.
    pub async fn get(&self, sku: String) -> Result<StockLevel, ApiError> {
        self.db
            .call(move |c| {
                c.query_row(
                    "SELECT sku, available, reserved FROM stock WHERE sku = ?1",
                    [&sku],
                    stock_level,
                )
                .optional()?
                .ok_or_else(|| ApiError::sku_not_found(&sku))
            })
            .await
    }

    /// Holds stock: 404 for an unknown SKU, 409 when stock is short or the order was
    /// released. With an idempotency key, a repeat returns the first answer.
    pub async fn reserve(
        &self,
        sku: String,
        req: ReserveRequest,
        key: Option<String>,
    ) -> Result<Reservation, ApiError> {
        req.validate()?;
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                if let Some(key) = &key {
                    let seen: Option<(i64, String, i64, String, String)> = tx
                        .query_row(
                            "SELECT id, sku, qty, order_ref, status FROM reservations WHERE idempotency_key = ?1",
                            [key],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                        )
                        .optional()?;
                    if let Some((id, seen_sku, qty, order_ref, status)) = seen {
                        if seen_sku != sku || qty != req.qty || order_ref != req.order_ref {
                            return Err(ApiError::invalid(
                                "idempotency key reused for a different reservation",
                            ));
                        }
                        if status != "held" {
                            return Err(ApiError::conflict(format!(
                                "order {order_ref} was released"
                            )));
                        }
                        return Ok(Reservation { reservation_id: id, sku, qty });
                    }
                }
                let released: bool = tx
                    .query_row(
                        "SELECT 1 FROM released_orders WHERE order_ref = ?1",
                        [&req.order_ref],
                        |_| Ok(true),
                    )
                    .optional()?
                    .unwrap_or(false);
                if released {
                    return Err(ApiError::conflict(format!(
                        "order {} was released",
                        req.order_ref
                    )));
                }
                let available: i64 = tx
                    .query_row("SELECT available FROM stock WHERE sku = ?1", [&sku], |r| {
                        r.get(0)
                    })
                    .optional()?
                    .ok_or_else(|| ApiError::sku_not_found(&sku))?;
                if available < req.qty {
                    return Err(ApiError::conflict(format!(
                        "insufficient stock for sku {sku}: {available} available, {} asked",
                        req.qty
                    )));
                }
                tx.execute(
                    "UPDATE stock SET available = available - ?2, reserved = reserved + ?2 WHERE sku = ?1",
                    params![sku, req.qty],
                )?;
                let id = tx.query_row(
                    "INSERT INTO reservations (sku, qty, order_ref, idempotency_key, status, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'held', ?5) RETURNING id",
                    params![sku, req.qty, req.order_ref, key, now_rfc3339()],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok(Reservation { reservation_id: id, sku, qty: req.qty })
            })
            .await
    }

    /// Releases one reservation; 404 when unknown; releasing twice is harmless.
    pub async fn release(&self, id: i64) -> Result<Released, ApiError> {
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                let released =
                    release_one(&tx, id)?.ok_or_else(|| ApiError::reservation_not_found(id))?;
                tx.commit()?;
                Ok(Released { released })
            })
            .await
    }

    /// Releases every reservation of an order and refuses later ones for it.
    pub async fn release_order(&self, order_ref: String) -> Result<Released, ApiError> {
        check_order_ref(&order_ref)?;
        self.db
            .call(move |c| {
                let tx = c.transaction()?;
                tx.execute(
                    "INSERT OR IGNORE INTO released_orders (order_ref, released_at) VALUES (?1, ?2)",
                    params![order_ref, now_rfc3339()],
                )?;
                let ids = tx
                    .prepare("SELECT id FROM reservations WHERE order_ref = ?1 AND status = 'held'")?
                    .query_map([&order_ref], |r| r.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                let mut released = 0;
                for id in ids {
                    released += release_one(&tx, id)?.unwrap_or(0);
                }
                tx.commit()?;
                Ok(Released { released })
            })
            .await
    }
}

/// Sets the stock levels of `levels` as they are, inserting or replacing by SKU: how an
/// import copies them from another owner.
pub fn upsert(tx: &Transaction<'_>, levels: &[StockLevel]) -> rusqlite::Result<()> {
    for s in levels {
        tx.execute(
            "INSERT INTO stock (sku, available, reserved) VALUES (?1, ?2, ?3)
             ON CONFLICT (sku) DO UPDATE SET available = excluded.available,
               reserved = excluded.reserved",
            params![s.sku, s.available, s.reserved],
        )?;
    }
    Ok(())
}

/// How many reservations this store holds (of any status).
pub fn reservation_count(c: &rusqlite::Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT COUNT(*) FROM reservations", [], |r| r.get(0))
}
