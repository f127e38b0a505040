//! `inventory-service`: the inventory cut out of the sample monolith. It owns stock and
//! reservations in its own SQLite database and serves the same `/api/inventory` API, byte for
//! byte.
//!
//! # Layout
//!
//! - [`import`]: copies stock levels from the monolith through its public API.
#![warn(missing_docs)]

pub mod import;

use std::path::Path;

use axum::routing::get;
use axum::Router;
use shop_api::Db;

/// Opens (creating and migrating) the service's database.
pub fn open_db(path: &Path) -> rusqlite::Result<Db> {
    Db::open(path, &[shop_inventory::SCHEMA, import::SCHEMA].concat())
}

/// The service's HTTP API.
pub fn app(db: Db) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(shop_inventory::routes(shop_inventory::InventoryStore::new(
            db,
        )))
}
