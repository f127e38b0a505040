//! `catalog-service`: the catalog cut out of the sample monolith. It owns products in its own
//! SQLite database and serves the same `/api/products` API, byte for byte, from the
//! [`shop_catalog`] crate the monolith serves too; [`shop_api::service`] does the rest.
//!
//! `catalog-service import --from URL` copies every product from the monolith's public API
//! (`GET /api/products`, page by page in id order), keeping ids and `updated_at` so both
//! answer alike. Products deleted from the monolith after an import are not deleted here.
#![warn(missing_docs)]

use shop_api::import::{always, Import};
use shop_api::service::Service;
use shop_api::wire::Product;
use shop_catalog::CatalogStore;

/// The catalog service.
pub const SERVICE: Service<Product> = Service {
    name: "catalog-service",
    about: "The catalog service extracted from the sample monolith.",
    listen: "127.0.0.1:8082",
    schema: shop_catalog::SCHEMA,
    routes: |db| shop_catalog::routes(CatalogStore::new(db)),
    import: Import {
        rows: "products",
        path: "/api/products",
        save: shop_catalog::store::upsert,
        check: always,
    },
};
