//! Strangler: a hot-reloadable reverse proxy for strangler-fig migrations.
//!
//! # Layout
//!
//! - [`config`]: `routes.yaml` parsed (with positions) and validated into a [`config::Config`].
//! - [`normalize`]: the request-path normalizer every request goes through before matching.
//! - [`matcher`]: the route matcher, compiled once per config.
//! - [`canary`]: the stable sticky hash that splits a canary between upstream and fallback.
//! - [`snapshot`]: a config compiled with its matcher and upstream clients, swapped whole.
//! - [`reload`]: the reload loop (file watcher, SIGHUP, admin trigger) and the live snapshot.
//! - [`proxy`]: the per-request forwarding path; [`headers`]: hop-by-hop and X-Forwarded-*.
//! - [`upstream`]: pooled upstream clients and failure classification (502 vs 504).
//! - [`forward`]: attempts, retries ([`retry`]) and failover; [`balance`]: instances and
//!   outlier ejection; [`breaker`]: circuit breaking; [`health`]: their state across reloads.
//! - [`promotion`]: gated promotion plans and automatic rollback.
//! - [`server`]: the accept loop, connection limits and timeouts, graceful shutdown.
//! - [`tls`]: rustls server (SNI, ALPN) and upstream client configs; [`redirect`]: the
//!   plain-HTTP listener that redirects to HTTPS.
//! - [`trusted`]: trusted proxies, whose `X-Forwarded-*` are believed.
//! - [`body_limit`]: a route's `max_body_bytes` on a streaming body.
//! - [`handover`]: zero-downtime binary upgrades, listening sockets passed to the new process.
//! - [`shadow`]: shadow copies, the comparer (`shadow::compare`) and its reports.
//! - [`admin`]: the admin API; [`metrics`]: Prometheus metrics.
//! - [`run`], [`cli`], [`explain`], [`status`], [`table`], [`logging`]: the command line.
#![warn(missing_docs)]

pub mod adapter;
pub mod admin;
pub mod balance;
pub mod body_limit;
pub mod breaker;
pub mod canary;
pub mod cli;
pub mod coarse_clock;
pub mod config;
pub mod explain;
pub mod forward;
pub mod handover;
pub mod headers;
pub mod health;
pub mod http1_client;
pub mod lock;
pub mod logging;
pub mod matcher;
pub mod metrics;
pub mod normalize;
pub mod promotion;
pub mod proxy;
pub mod redirect;
pub mod reload;
pub mod retry;
pub mod run;
pub mod server;
pub mod shadow;
pub mod snapshot;
pub mod status;
pub mod striped;
pub mod table;
pub mod tls;
pub mod trusted;
pub mod upstream;
