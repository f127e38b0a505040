//! The sample legacy monolith: a small shop (catalog, inventory, orders) in one binary on one
//! SQLite database, built to be strangled.
//!
//! # Layout
//!
//! - [`catalog`], [`inventory`], [`orders`]: the three modules, each owning its tables and
//!   its part of the HTTP API.
//! - [`ports`]: the [`ports::Catalog`] and [`ports::Inventory`] interfaces that orders use;
//!   orders never read another module's tables.
//! - [`remote`]: their HTTP implementations for the extracted services, with timeouts,
//!   bounded retries, idempotency keys and a [`breaker`].
//! - [`seed`]: first-start data; [`page`]: the HTML page at `/`.
//!
//! Which implementation of each port is live comes from the `adapters:` section of
//! `routes.yaml`, followed live through [`strangler::adapter`].
#![warn(missing_docs)]

pub mod breaker;
pub mod catalog;
pub mod inventory;
pub mod orders;
pub mod page;
pub mod ports;
pub mod remote;
pub mod seed;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use shop_api::Db;
use strangler::adapter::{Binding, FollowConfig, Selection};
use strangler::config::{AdapterMode, Config};
use strangler::reload::FileWatcher;

use crate::catalog::{CatalogStore, LocalCatalog};
use crate::inventory::{InventoryStore, LocalInventory};
use crate::orders::{Orders, OwnerResolver};
use crate::ports::{Catalog, Inventory, PortError};
use crate::remote::{RemoteCatalog, RemoteInventory, RemoteSettings};

/// How to start the monolith.
#[derive(Debug, Clone)]
pub struct Options {
    /// The SQLite file (created, migrated and seeded on first start).
    pub db: PathBuf,
    /// `routes.yaml` to read `adapters:` from and follow; all local when `None`.
    pub config: Option<PathBuf>,
    /// Products to seed on first start.
    pub seed_products: usize,
}

const META_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/// A monolith ready to serve.
pub struct Monolith {
    /// The whole HTTP API (without the common layers, which `shop_api::http::serve` adds).
    pub router: Router,
    /// The orders module.
    pub orders: Orders,
    /// The live catalog adapter.
    pub catalog: Arc<Binding<dyn Catalog>>,
    /// The live inventory adapter.
    pub inventory: Arc<Binding<dyn Inventory>>,
    _watch: Option<FileWatcher>,
}

type Bindings = (Arc<Binding<dyn Catalog>>, Arc<Binding<dyn Inventory>>);

/// `GET /healthz`: 200 `{"status": "ok", "adapters": {"catalog": OWNER, "inventory": OWNER}}`,
/// OWNER being `local` or `remote URL`: what the orders module calls now.
async fn healthz(
    axum::extract::State((catalog, inventory)): axum::extract::State<Bindings>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "status": "ok",
        "adapters": {
            "catalog": catalog.adapter().current().owner(),
            "inventory": inventory.adapter().current().owner(),
        }
    }))
}

/// Opens (creating and migrating) the monolith's database at `path`, and seeds it with
/// `seed_products` products on first start.
pub fn open_db(path: &Path, seed_products: usize) -> anyhow::Result<Db> {
    let schema = [
        META_SCHEMA,
        catalog::SCHEMA,
        inventory::SCHEMA,
        orders::SCHEMA,
    ]
    .concat();
    let db = Db::open(path, &schema)
        .with_context(|| format!("cannot open database {}", path.display()))?;
    let seeded = seed::seed(&db, seed_products)?;
    if seeded > 0 {
        tracing::info!(products = seeded, "seeded a new database");
    }
    Ok(db)
}

/// Binds the port `name`: the `local` implementation, or the remote one `remote` builds for
/// the upstream `routes.yaml` selects (staying local when it cannot be built).
fn bind<P: ?Sized + Send + Sync + 'static>(
    name: &'static str,
    config: Option<&Config>,
    local: Arc<P>,
    remote: fn(RemoteSettings) -> Result<Arc<P>, PortError>,
) -> Arc<Binding<P>> {
    Arc::new(Binding::new(name, config, move |sel: &Selection| {
        match (&sel.mode, &sel.upstream) {
            (AdapterMode::Remote, Some(up)) => remote(RemoteSettings::for_upstream(up))
                .unwrap_or_else(|e| {
                    tracing::error!("cannot build the remote {name}, staying local: {e}");
                    local.clone()
                }),
            _ => local.clone(),
        }
    }))
}

/// Opens the database, seeds it on first start, builds the adapters from `routes.yaml` and
/// starts following the file. Call inside a tokio runtime.
pub async fn open(options: &Options) -> anyhow::Result<Monolith> {
    let db = open_db(&options.db, options.seed_products)?;
    let catalog_store = CatalogStore::new(db.clone());
    let inventory_store = InventoryStore::new(db.clone());

    let config = match &options.config {
        Some(path) => Some(
            strangler::config::load(path)
                .map_err(|diags| {
                    let file = path.display().to_string();
                    let lines: Vec<String> =
                        diags.iter().map(|d| d.display(&file).to_string()).collect();
                    anyhow::anyhow!("invalid config:\n{}", lines.join("\n"))
                })?
                .config,
        ),
        None => None,
    };

    let local_catalog: Arc<dyn Catalog> = Arc::new(LocalCatalog(catalog_store.clone()));
    let catalog = bind("catalog", config.as_ref(), local_catalog, |settings| {
        Ok(Arc::new(RemoteCatalog::new(settings)?))
    });
    let local_inventory: Arc<dyn Inventory> = Arc::new(LocalInventory(inventory_store.clone()));
    let inventory = bind(
        "inventory",
        config.as_ref(),
        local_inventory.clone(),
        |settings| Ok(Arc::new(RemoteInventory::new(settings)?)),
    );
    tracing::info!(
        catalog = %catalog.adapter().current().owner(),
        inventory = %inventory.adapter().current().owner(),
        "adapters"
    );

    let orders = Orders::new(db.clone(), catalog.adapter(), inventory.adapter());
    // Stock of orders that failed while their inventory owner was down is released once it
    // is back, also across restarts.
    let resolve: OwnerResolver = Arc::new(move |owner: &str| -> Option<Arc<dyn Inventory>> {
        if owner == "local" {
            return Some(local_inventory.clone());
        }
        let url = owner.strip_prefix("remote ")?;
        let settings = RemoteSettings::new(url, Duration::from_secs(1), Duration::from_secs(5));
        RemoteInventory::new(settings)
            .ok()
            .map(|r| Arc::new(r) as Arc<dyn Inventory>)
    });
    let resumed = orders.resume_compensations(&resolve).await?;
    if resumed > 0 {
        tracing::info!(resumed, "resumed releasing the stock of failed orders");
    }

    let watch = match &options.config {
        Some(path) => Some(
            strangler::adapter::watch(
                path,
                vec![
                    catalog.clone() as Arc<dyn FollowConfig>,
                    inventory.clone() as Arc<dyn FollowConfig>,
                ],
            )
            .with_context(|| format!("cannot watch {}", path.display()))?,
        ),
        None => None,
    };

    let router = Router::new()
        .route("/", get(page::index).with_state(catalog.adapter()))
        .route(
            "/healthz",
            get(healthz).with_state((catalog.clone(), inventory.clone())),
        )
        .merge(catalog::routes(catalog_store))
        .merge(inventory::routes(inventory_store))
        .merge(orders::routes(orders.clone()));
    Ok(Monolith {
        router,
        orders,
        catalog,
        inventory,
        _watch: watch,
    })
}
