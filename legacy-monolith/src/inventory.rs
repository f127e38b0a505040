//! The inventory module: stock per SKU and the reservations that hold it, their tables and
//! their HTTP API (`/api/inventory`), served from the [`shop_inventory`] crate that
//! `inventory-service` serves too, and the local [`Inventory`] port over it.

use async_trait::async_trait;
use shop_api::wire::{Reservation, ReserveRequest};
use shop_api::RequestId;
pub use shop_inventory::{routes, InventoryStore, IDEMPOTENCY_KEY, SCHEMA};

use crate::ports::{Inventory, PortError};

/// The local [`Inventory`]: this module, called in-process.
#[derive(Debug, Clone)]
pub struct LocalInventory(pub InventoryStore);

#[async_trait]
impl Inventory for LocalInventory {
    fn owner(&self) -> String {
        "local".into()
    }

    async fn reserve(
        &self,
        sku: &str,
        qty: i64,
        order_ref: &str,
        idempotency_key: &str,
        _rid: &RequestId,
    ) -> Result<Reservation, PortError> {
        let req = ReserveRequest {
            qty,
            order_ref: order_ref.to_string(),
        };
        Ok(self
            .0
            .reserve(sku.to_string(), req, Some(idempotency_key.to_string()))
            .await?)
    }

    async fn release_order(&self, order_ref: &str, _rid: &RequestId) -> Result<i64, PortError> {
        Ok(self.0.release_order(order_ref.to_string()).await?.released)
    }
}
