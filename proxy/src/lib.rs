//! Strangler: a hot-reloadable reverse proxy for strangler-fig migrations.
//!
//! # Layout
//!
//! - [`config`]: `routes.yaml` parsed (with positions) and validated into a [`config::Config`].
//! - [`normalize`]: the request-path normalizer every request goes through before matching.
//! - [`matcher`]: the route matcher, compiled once per config.
//! - [`canary`]: the stable sticky hash that splits a canary between upstream and fallback.
//! - [`reload`]: the reload loop (file watcher, SIGHUP, admin trigger) and the live snapshot.
//! - [`proxy`]: the per-request forwarding path.
//! - [`server`]: listeners, connection limits, graceful shutdown.
//! - [`admin`]: the admin API.
//! - [`metrics`]: Prometheus metrics.
#![warn(missing_docs)]

pub mod normalize;
pub mod canary;
pub mod config;
pub mod matcher;
