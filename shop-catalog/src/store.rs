//! The catalog service's store and HTTP API: products, their table and `/api/products`,
//! answering exactly as the monolith's catalog module does. It started as a copy of that
//! module and now evolves on its own.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rusqlite::{params, OptionalExtension, Row};
use shop_api::error::parse_id;
use shop_api::wire::{now_rfc3339, Page, Paging, Product, ProductInput};
use shop_api::{ApiError, ApiJson, ApiQuery, Db};

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

/// `/api/products` and below.
pub fn routes(store: CatalogStore) -> Router {
    Router::new()
        .route("/api/products", get(list).post(create))
        .route("/api/products/{id}", get(read).put(update).delete(remove))
        .with_state(store)
}

async fn list(
    State(s): State<CatalogStore>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<axum::Json<Page<Product>>, ApiError> {
    let (limit, offset) = paging.resolve()?;
    Ok(axum::Json(s.list(limit, offset).await?))
}

async fn read(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
) -> Result<axum::Json<Product>, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    Ok(axum::Json(s.get(id).await?))
}

async fn create(
    State(s): State<CatalogStore>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<(StatusCode, axum::Json<Product>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(s.create(input).await?)))
}

async fn update(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<axum::Json<Product>, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    Ok(axum::Json(s.update(id, input).await?))
}

async fn remove(
    State(s): State<CatalogStore>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id, |t| ApiError::product_not_found(t))?;
    s.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
