//! The sample shop's catalog, written once: the legacy monolith's catalog module and
//! `catalog-service` are both thin layers over it, so they answer byte for byte alike.
//!
//! # Layout
//!
//! - [`store`]: the products table, its queries and validation ([`CatalogStore`]).
//! - [`http`]: the HTTP API, `/api/products` ([`routes`]).
#![warn(missing_docs)]

pub mod http;
pub mod store;

pub use http::routes;
pub use store::{CatalogStore, SCHEMA};
