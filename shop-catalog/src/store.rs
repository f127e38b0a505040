//! [`CatalogStore`]: the products table, its queries and the validation of what is written
//! to it. The monolith's catalog module and `catalog-service` both serve it, so they answer
//! alike.

use rusqlite::{params, OptionalExtension, Row, Transaction};
use shop_api::wire::{now_rfc3339, Page, Product, ProductInput};
use shop_api::{ApiError, Db};

/// The catalog's tables.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    currency TEXT NOT NULL,
    updated_at TEXT NOT NULL
);";

const COLUMNS: &str = "id, sku, name, description, price_cents, currency, updated_at";

/// The catalog's data access.
#[derive(Debug, Clone)]
pub struct CatalogStore {
    db: Db,
}

fn product(row: &Row<'_>) -> rusqlite::Result<Product> {
    Ok(Product {
        id: row.get(0)?,
        sku: row.get(1)?,
        name: row.get(2)?,
        description: row.get(3)?,
        price_cents: row.get(4)?,
        currency: row.get(5)?,
        updated_at: row.get(6)?,
    })
}

fn sku_taken(e: rusqlite::Error, sku: &str) -> ApiError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            ApiError::conflict(format!("sku {sku} is already used by another product"))
        }
        e => e.into(),
    }
}

impl CatalogStore {
    /// The store over `db` (which must have [`SCHEMA`]).
    pub fn new(db: Db) -> Self {
        CatalogStore { db }
    }

    /// A page of products in id order.
    pub async fn list(&self, limit: i64, offset: i64) -> Result<Page<Product>, ApiError> {
        self.db
            .call(move |c| {
                let total = c.query_row("SELECT COUNT(*) FROM products", [], |r| r.get(0))?;
                let mut stmt = c.prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM products ORDER BY id LIMIT ?1 OFFSET ?2"
                ))?;
                let items = stmt
                    .query_map(params![limit, offset], product)?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Page { items, total })
            })
            .await
    }

    /// One product, or 404.
    pub async fn get(&self, id: i64) -> Result<Product, ApiError> {
        self.db
            .call(move |c| {
                c.query_row(
                    &format!("SELECT {COLUMNS} FROM products WHERE id = ?1"),
                    [id],
                    product,
                )
                .optional()?
                .ok_or_else(|| ApiError::product_not_found(id))
            })
            .await
    }

    /// Creates a product; 409 when its SKU is taken.
    pub async fn create(&self, input: ProductInput) -> Result<Product, ApiError> {
        input.validate()?;
        self.db
            .call(move |c| {
                c.query_row(
                    &format!(
                        "INSERT INTO products (sku, name, description, price_cents, currency, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING {COLUMNS}"
                    ),
                    params![input.sku, input.name, input.description, input.price_cents, input.currency, now_rfc3339()],
                    product,
                )
                .map_err(|e| sku_taken(e, &input.sku))
            })
            .await
    }

    /// Replaces a product's fields; 404 when it does not exist.
    pub async fn update(&self, id: i64, input: ProductInput) -> Result<Product, ApiError> {
        input.validate()?;
        self.db
            .call(move |c| {
                c.query_row(
                    &format!(
                        "UPDATE products SET sku = ?2, name = ?3, description = ?4, price_cents = ?5,
                         currency = ?6, updated_at = ?7 WHERE id = ?1 RETURNING {COLUMNS}"
                    ),
                    params![id, input.sku, input.name, input.description, input.price_cents, input.currency, now_rfc3339()],
                    product,
                )
                .optional()
                .map_err(|e| sku_taken(e, &input.sku))?
                .ok_or_else(|| ApiError::product_not_found(id))
            })
            .await
    }

    /// Deletes a product; 404 when it does not exist.
    pub async fn delete(&self, id: i64) -> Result<(), ApiError> {
        self.db
            .call(
                move |c| match c.execute("DELETE FROM products WHERE id = ?1", [id])? {
                    0 => Err(ApiError::product_not_found(id)),
                    _ => Ok(()),
                },
            )
            .await
    }
}

/// Writes `products` as they are (ids and `updated_at` kept), inserting or replacing by id:
/// how an import copies them from another owner.
pub fn upsert(tx: &Transaction<'_>, products: &[Product]) -> rusqlite::Result<()> {
    for p in products {
        tx.execute(
            "INSERT INTO products (id, sku, name, description, price_cents, currency, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (id) DO UPDATE SET sku = excluded.sku, name = excluded.name,
               description = excluded.description, price_cents = excluded.price_cents,
               currency = excluded.currency, updated_at = excluded.updated_at",
            params![
                p.id,
                p.sku,
                p.name,
                p.description,
                p.price_cents,
                p.currency,
                p.updated_at
            ],
        )?;
    }
    Ok(())
}
