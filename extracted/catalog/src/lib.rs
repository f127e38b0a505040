//! `catalog-service`: the catalog cut out of the sample monolith. It owns products in its own
//! SQLite database and serves the same `/api/products` API, byte for byte.
//!
//! # Layout
//!
//! - [`import`]: copies products from the monolith through its public API.
#![warn(missing_docs)]

pub mod import;

use std::path::Path;

use axum::routing::get;
use axum::Router;
use shop_api::Db;

/// Opens (creating and migrating) the service's database.
pub fn open_db(path: &Path) -> rusqlite::Result<Db> {
    Db::open(path, &[shop_catalog::SCHEMA, import::SCHEMA].concat())
}

/// The service's HTTP API.
pub fn app(db: Db) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(shop_catalog::routes(shop_catalog::CatalogStore::new(db)))
}
