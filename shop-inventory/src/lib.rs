//! The sample shop's inventory, written once: the legacy monolith's inventory module and
//! `inventory-service` are both thin layers over it, so they answer byte for byte alike.
//!
//! # Layout
//!
//! - [`store`]: stock and reservations: tables, queries and validation ([`InventoryStore`]).
//! - [`http`]: the HTTP API, `/api/inventory` ([`routes`]).
#![warn(missing_docs)]

pub mod http;
pub mod store;

pub use http::{routes, IDEMPOTENCY_KEY};
pub use store::{InventoryStore, SCHEMA};
