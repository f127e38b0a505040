//! `inventory-service`: the inventory cut out of the sample monolith. It owns stock and
//! reservations in its own SQLite database and serves the same `/api/inventory` API, byte for
//! byte, from the [`shop_inventory`] crate the monolith serves too; [`shop_api::service`]
//! does the rest.
//!
//! `inventory-service import --from URL` copies every stock level from the monolith's public
//! API (`GET /api/inventory`, page by page in SKU order). Stock levels only: reservations stay
//! with the owner that made them (the units they hold are in the imported `reserved` count).
//! Once this service holds reservations of its own it owns the stock, and an import, which
//! would overwrite live counts, is refused.
#![warn(missing_docs)]

use shop_api::import::Import;
use shop_api::service::Service;
use shop_api::wire::StockLevel;
use shop_inventory::InventoryStore;

/// The inventory service.
pub const SERVICE: Service<StockLevel> = Service {
    name: "inventory-service",
    about: "The inventory service extracted from the sample monolith.",
    listen: "127.0.0.1:8083",
    schema: shop_inventory::SCHEMA,
    routes: |db| shop_inventory::routes(InventoryStore::new(db)),
    import: Import {
        rows: "stock levels",
        path: "/api/inventory",
        save: shop_inventory::store::upsert,
        check: refuse_once_owned,
    },
};

/// Refuses an import once this service holds reservations of its own.
fn refuse_once_owned(c: &rusqlite::Connection) -> anyhow::Result<()> {
    let owned = shop_inventory::store::reservation_count(c)?;
    if owned > 0 {
        anyhow::bail!(
            "this service already holds {owned} reservations of its own: it owns the stock now, \
             and importing would overwrite live counts"
        );
    }
    Ok(())
}
