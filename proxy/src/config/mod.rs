//! `routes.yaml`: the migration plan, parsed with positions and validated whole.
//!
//! Loading is two stages: [`yaml`] turns text into a tree that remembers line and column of
//! every node, then [`validate`] walks it, collects every problem (not just the first) and
//! builds a [`Config`]. Parse from a `&str` with [`parse`] so tests can pass inline YAML.

mod diagnostics;
mod duration;
pub mod edit;
mod types;
mod validate;
pub mod yaml;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use diagnostics::{Diagnostic, Severity};
pub use duration::parse_duration;
pub use types::*;

/// What a successful validation gives: the config and any warnings.
#[derive(Debug)]
pub struct Checked {
    /// The validated config.
    pub config: Config,
    /// Problems that do not stop the config from being used.
    pub warnings: Vec<Diagnostic>,
}

/// Parses and validates `text`, with relative paths taken from the current directory. On
/// failure, every problem found (errors and warnings) is returned, in file order.
pub fn parse(text: &str) -> Result<Checked, Vec<Diagnostic>> {
    parse_at(text, Path::new("."))
}

/// Parses and validates `text` read from a file in the directory `base`: relative paths in
/// it (certificates, keys, CA, token file) are taken from there.
pub fn parse_at(text: &str, base: &Path) -> Result<Checked, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let config = validate::validate(text, base, &mut diags);
    diags.sort_by_key(|d| (d.line, d.col));
    match config {
        Some(mut config) if !diags.iter().any(|d| d.severity == Severity::Error) => {
            config.version = version_of(text.as_bytes());
            Ok(Checked {
                config,
                warnings: diags,
            })
        }
        _ => Err(diags),
    }
}

/// Reads and validates the file at `path`. A file that cannot be read is one diagnostic
/// without a position.
pub fn load(path: &Path) -> Result<Checked, Vec<Diagnostic>> {
    let text = std::fs::read(path)
        .map_err(|e| vec![Diagnostic::error_nowhere(format!("cannot read file: {e}"))])?;
    let text = String::from_utf8(text)
        .map_err(|e| vec![Diagnostic::error_nowhere(format!("file is not UTF-8: {e}"))])?;
    parse_at(&text, &config_dir(path))
}

/// The directory relative paths in the config file at `path` start from.
pub fn config_dir(path: &Path) -> std::path::PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    }
}

/// The config version: hex SHA-256 of the file's bytes.
pub fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An upstream from a base URL given outside the file (`strangler compare --legacy URL`).
pub fn upstream_from_url(
    name: &str,
    url: &str,
    timeout: std::time::Duration,
) -> Result<Upstream, String> {
    let (origin, base_path, https) =
        validate::parse_base_url(url).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    let tls = match https {
        false => None,
        true => Some(UpstreamTls {
            ca: None,
            anchors: "system".into(),
            client: crate::tls::system_client_config().map_err(|e| format!("`{url}`: {e}"))?,
        }),
    };
    Ok(Upstream {
        name: name.to_string(),
        url: url.to_string(),
        endpoints: vec![EndpointAddr {
            url: url.to_string(),
            origin,
            base_path,
        }],
        timeout,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT.min(timeout),
        tls,
        balance: Balance::P2c,
        circuit_breaker: None,
        outlier: None,
    })
}
