//! Test support for the end-to-end tests: they start the real `strangler` binary as a separate
//! process and talk to it over sockets, like a user would.
//!
//! # Layout
//!
//! - [`binary`]: where the `strangler` binary is, and a bounded runner for its one-shot commands
//!   (`check`, `explain`, `run` on a bad file).
//! - [`proxy`]: [`Proxy`], a running `strangler run` with its own config directory, ports and log
//!   file; killed on drop.
//! - [`backend`]: fake upstreams built in one line on `127.0.0.1:0` (echo, slow, big download,
//!   upload counter, WebSocket echo) and a refusing address.
//! - [`client`]: an HTTP client with redirects off, [`get_json`], and raw TCP helpers for
//!   requests a client library refuses to send.
//! - [`wait`]: [`eventually`], a bounded poll for things that happen asynchronously (reloads).
//! - [`metrics`]: a small Prometheus text-format reader.
//! - [`tls`]: a throwaway CA (rcgen), an HTTPS client that reports ALPN and the certificate
//!   presented, server configs for HTTPS backends.
#![warn(missing_docs)]

pub mod backend;
pub mod binary;
pub mod client;
pub mod metrics;
pub mod proxy;
pub mod shop;
pub mod tls;
pub mod wait;

pub use backend::{hang_up_url, refusing_url, Backend, Blackhole};
pub use binary::{strangler_bin, strangler_cmd, CliOutput};
pub use client::{get_json, http_client, raw, RawResponse};
pub use metrics::Metrics;
pub use proxy::{free_port, sha256_hex, Proxy, ProxyBuilder};
pub use wait::eventually;

/// A `routes.yaml` text: `upstreams:` from `(name, url)` pairs, `fallback:` the first of them,
/// then `routes` verbatim (which should start with `routes:` or be empty). No `listen`/`admin`:
/// [`Proxy`] passes them as flags.
pub fn routes_yaml(upstreams: &[(&str, &str)], routes: &str) -> String {
    let mut yaml = String::from("upstreams:\n");
    for (name, url) in upstreams {
        yaml.push_str(&format!("  {name}: {url}\n"));
    }
    let fallback = upstreams.first().map(|(n, _)| *n).unwrap_or("legacy");
    yaml.push_str(&format!("fallback: {fallback}\n"));
    yaml.push_str(routes);
    if !yaml.ends_with('\n') {
        yaml.push('\n');
    }
    yaml
}
