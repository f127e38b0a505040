//! The interfaces the orders module reaches catalog and inventory through. Orders never
//! touch those modules' tables: each interface has a local implementation (the monolith's own
//! module) and a remote one (an HTTP client for the extracted service), and `routes.yaml`'s
//! `adapters:` section says which is live.

use async_trait::async_trait;
use shop_api::wire::{Page, Product, Reservation};
use shop_api::RequestId;

/// Why a call through a port failed, classified by what the caller should do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// The thing asked for does not exist (404).
    NotFound(String),
    /// The owner refused: too little stock, an order already released (409).
    Refused(String),
    /// The owner rejected the request as malformed (another 4xx): a bug on our side.
    Invalid(String),
    /// The owner could not be reached or failed (connect error, timeout, 5xx, circuit open).
    /// Nothing is known about whether a write took effect.
    Unavailable(String),
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::NotFound(m) | PortError::Refused(m) | PortError::Invalid(m) => {
                f.write_str(m)
            }
            PortError::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

impl std::error::Error for PortError {}

impl From<shop_api::ApiError> for PortError {
    /// The local implementations speak [`shop_api::ApiError`]; map it the way the remote
    /// ones map HTTP statuses, so both fail alike.
    fn from(e: shop_api::ApiError) -> Self {
        from_status(e.status.as_u16(), e.message)
    }
}

/// Classifies an error answer by status.
pub fn from_status(status: u16, message: String) -> PortError {
    match status {
        404 => PortError::NotFound(message),
        409 => PortError::Refused(message),
        400..=499 => PortError::Invalid(message),
        _ => PortError::Unavailable(message),
    }
}

/// Products, as orders and the HTML page need them.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// `local` or `remote (URL)`, for logs and the order record.
    fn owner(&self) -> String;
    /// One product.
    async fn product(&self, id: i64, rid: &RequestId) -> Result<Product, PortError>;
    /// A page of products in id order.
    async fn list(
        &self,
        limit: i64,
        offset: i64,
        rid: &RequestId,
    ) -> Result<Page<Product>, PortError>;
}

/// One order line's stock to hold: what [`Inventory::reserve`] is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold<'a> {
    /// The SKU.
    pub sku: &'a str,
    /// How many units.
    pub qty: i64,
    /// The order the units are held for (what [`Inventory::release_order`] releases).
    pub order_ref: &'a str,
    /// The same key always gives the same reservation, so a retried call never holds stock
    /// twice.
    pub idempotency_key: &'a str,
}

/// Stock, as orders need it.
#[async_trait]
pub trait Inventory: Send + Sync {
    /// `local` or `remote (URL)`: recorded with each order so its stock can be found later.
    fn owner(&self) -> String;
    /// Holds stock for an order line; idempotent by the hold's key.
    async fn reserve(&self, hold: Hold<'_>, rid: &RequestId) -> Result<Reservation, PortError>;
    /// Releases every reservation held for `order_ref` (including any whose answer was
    /// lost) and refuses later ones for it. Harmless to repeat. Returns how many it released.
    async fn release_order(&self, order_ref: &str, rid: &RequestId) -> Result<i64, PortError>;
}
