//! What the sample shop's three programs share: the legacy monolith, `catalog-service` and
//! `inventory-service` answer the same API, byte for byte, because they serialize the same
//! types with the same code.
//!
//! # Layout
//!
//! - [`wire`]: the JSON request and response types, and their validation.
//! - [`error`]: [`ApiError`] (status + short JSON message) and extractors that turn bad input
//!   (bad JSON, missing fields, oversized bodies, bad query strings) into a clear 4xx.
//! - [`http`]: request ids, access logs, body limits, graceful shutdown, tracing set-up.
//! - [`db`]: a SQLite connection shared by async handlers.
//! - [`service`]: an extracted service's command line, serving and shutdown, written once.
//! - [`import`]: the paging, resumable import a service copies its data from the monolith with.
#![warn(missing_docs)]

pub mod db;
pub mod error;
pub mod http;
pub mod import;
pub mod service;
pub mod wire;

pub use db::Db;
pub use error::{ApiError, ApiJson, ApiQuery};
pub use http::RequestId;
