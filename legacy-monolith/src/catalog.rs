//! The catalog module: products, their table and their HTTP API (`/api/products`), served
//! from the [`shop_catalog`] crate that `catalog-service` serves too, and the local
//! [`Catalog`] port over it.

use async_trait::async_trait;
use shop_api::wire::{Page, Product};
use shop_api::RequestId;
pub use shop_catalog::{routes, CatalogStore, SCHEMA};

use crate::ports::{Catalog, PortError};

/// The local [`Catalog`]: this module, called in-process.
#[derive(Debug, Clone)]
pub struct LocalCatalog(pub CatalogStore);

#[async_trait]
impl Catalog for LocalCatalog {
    fn owner(&self) -> String {
        "local".into()
    }

    async fn product(&self, id: i64, _rid: &RequestId) -> Result<Product, PortError> {
        Ok(self.0.get(id).await?)
    }

    async fn list(
        &self,
        limit: i64,
        offset: i64,
        _rid: &RequestId,
    ) -> Result<Page<Product>, PortError> {
        Ok(self.0.list(limit, offset).await?)
    }
}
