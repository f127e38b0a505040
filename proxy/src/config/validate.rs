//! The validator: walks the positioned YAML tree, reports every problem it finds with its
//! position, and builds a [`Config`] when the tree is usable.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderName, Method};

use super::diagnostics::Diagnostic;
use super::duration::parse_duration;
use super::types::*;
use super::yaml::{self, Kind, Node, Pos};
use crate::normalize::normalize_path;

const TOP_FIELDS: &[&str] = &[
    "listen",
    "admin",
    "upstreams",
    "fallback",
    "routes",
    "adapters",
    "limits",
    "shadow",
    "tls",
    "trusted_proxies",
    "admin_token_file",
];
const TLS_FIELDS: &[&str] = &["cert", "key", "sni", "redirect_http"];
const SNI_FIELDS: &[&str] = &["cert", "key"];
const SHADOW_GLOBAL_FIELDS: &[&str] = &["max_in_flight", "report_file", "keep_mismatches"];
const SHADOW_ROUTE_FIELDS: &[&str] = &[
    "sample",
    "methods",
    "strip_headers",
    "compare_headers",
    "ignore_headers",
    "ignore",
    "noise",
    "max_body_bytes",
    "record",
];
const UPSTREAM_FIELDS: &[&str] = &[
    "url",
    "urls",
    "timeout",
    "connect_timeout",
    "balance",
    "circuit_breaker",
    "outlier",
    "ca",
];
const BREAKER_FIELDS: &[&str] = &[
    "consecutive_failures",
    "error_rate",
    "min_requests",
    "window",
    "open_for",
];
const OUTLIER_FIELDS: &[&str] = &["consecutive_failures", "eject_for", "max_ejected_percent"];
const FAILOVER_FIELDS: &[&str] = &["on"];
const RETRY_FIELDS: &[&str] = &["attempts", "backoff", "budget", "on"];
const PROMOTE_FIELDS: &[&str] = &[
    "min_compared",
    "min_match",
    "steps",
    "dwell",
    "min_requests",
    "max_error_rate",
    "max_p99_ratio",
    "interval",
];
const ROUTE_FIELDS: &[&str] = &[
    "name",
    "match",
    "upstream",
    "mode",
    "percent",
    "sticky",
    "shadow",
    "max_body_bytes",
    "timeout",
    "failover",
    "retries",
    "promote",
];
const MATCH_FIELDS: &[&str] = &["exact", "prefix", "methods", "headers"];
const LIMIT_FIELDS: &[&str] = &[
    "max_head_bytes",
    "max_headers",
    "max_uri_bytes",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
];

/// Validates `text`, pushing every problem into `diags`. Returns a config when the file was
/// well-formed enough to build one; the caller rejects it if any error was pushed. Relative
/// paths in the file (certificates, keys, CA, token file) are taken from `base`, the config
/// file's directory.
pub(super) fn validate(text: &str, base: &Path, diags: &mut Vec<Diagnostic>) -> Option<Config> {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            diags.push(Diagnostic::error(
                Pos {
                    line: 1,
                    col: 1,
                    offset: 0,
                },
                "the file is empty",
            ));
            return None;
        }
        Err(e) => {
            diags.push(Diagnostic::error(
                e.pos,
                format!("YAML syntax error: {}", e.message),
            ));
            return None;
        }
    };
    let mut v = Validator {
        diags,
        declared: Vec::new(),
        base: base.to_path_buf(),
    };
    v.config(&root)
}

struct Validator<'d> {
    diags: &'d mut Vec<Diagnostic>,
    /// Every upstream name declared, valid or not, so that a bad URL is reported once and
    /// not again at each route that names the upstream.
    declared: Vec<String>,
    /// The config file's directory, which relative paths start from.
    base: PathBuf,
}

/// The fields of one mapping, looked up by name.
///
/// A mapping has a handful of keys, so a linear scan beats hashing each of them.
struct Fields<'n> {
    node: &'n Node,
    entries: Vec<(&'n str, &'n Node)>,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        // The last one wins, should a key ever appear twice (the parser rejects that).
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, n)| *n)
            .filter(|n| !n.is_null())
    }
}

impl Validator<'_> {
    fn error(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos, msg));
    }

    fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(pos, msg));
    }

    /// Checks that `node` is a mapping with only `allowed` keys, reporting each unknown one.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        what: impl fmt::Display,
        allowed: &[&str],
    ) -> Option<Fields<'n>> {
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!("{what} must be a mapping, found {}", node.type_name()),
            );
            return None;
        };
        let mut fields = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => fields.push((k, value)),
                Some(k) => self.error(
                    key.pos,
                    format!(
                        "unknown field `{k}` in {what}, expected one of: {}",
                        allowed.join(", ")
                    ),
                ),
                None => self.error(key.pos, format!("{what} has a key that is not a string")),
            }
        }
        Some(Fields {
            node,
            entries: fields,
        })
    }

    fn string<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n str> {
        match node.as_str() {
            Some(s) => Some(s),
            None => {
                self.error(
                    node.pos,
                    format!("{what} must be a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    fn required<'n>(
        &mut self,
        f: &Fields<'n>,
        name: &str,
        what: impl fmt::Display,
    ) -> Option<&'n Node> {
        let node = f.get(name);
        if node.is_none() {
            self.error(f.node.pos, format!("{what} is missing the field `{name}`"));
        }
        node
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let f = self.fields(root, "the config", TOP_FIELDS)?;
        let listen = f.get("listen").and_then(|n| self.address(n, "listen"));
        let admin = f.get("admin").and_then(|n| self.address(n, "admin"));
        let upstreams = match self.required(&f, "upstreams", "the config") {
            Some(n) => self.upstreams(n),
            None => BTreeMap::new(),
        };
        let fallback = self.required(&f, "fallback", "the config").and_then(|n| {
            let name = self.string(n, "fallback")?;
            if !self.declared.iter().any(|d| d == name) {
                self.error(
                    n.pos,
                    format!(
                        "fallback `{name}` is not a defined upstream{}",
                        known(&upstreams)
                    ),
                );
            }
            Some(name.to_string())
        });
        let routes = match f.get("routes") {
            Some(n) => self.routes(n, &upstreams),
            None => Vec::new(),
        };
        let adapters = match f.get("adapters") {
            Some(n) => self.adapters(n, &upstreams),
            None => BTreeMap::new(),
        };
        let limits = match f.get("limits") {
            Some(n) => self.limits(n),
            None => Limits::default(),
        };
        let shadow = match f.get("shadow") {
            Some(n) => self.shadow_global(n),
            None => ShadowGlobal::default(),
        };
        let tls = f.get("tls").and_then(|n| self.tls(n));
        let trusted_proxies = match f.get("trusted_proxies") {
            Some(n) => self.trusted_proxies(n),
            None => Vec::new(),
        };
        let admin_token = match f.get("admin_token_file") {
            Some(n) => self.admin_token_file(n),
            None => std::env::var(ADMIN_TOKEN_ENV)
                .ok()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .map(|secret| AdminToken {
                    source: ADMIN_TOKEN_ENV.to_string(),
                    secret,
                }),
        };
        if let (Some(node), Some(Some(addr)), None) = (f.get("admin"), admin, &admin_token) {
            if !addr.ip().is_loopback() {
                self.warn(
                    node.pos,
                    format!("the admin API on {addr} is reachable off this host but has no token: set `admin_token_file` or {ADMIN_TOKEN_ENV}; until then it answers 401 to everything but /healthz"),
                );
            }
        }
        Some(Config {
            listen: listen.flatten(),
            admin: admin.flatten(),
            upstreams,
            fallback: fallback?,
            routes,
            adapters,
            limits,
            shadow,
            tls,
            trusted_proxies,
            admin_token,
            version: String::new(),
        })
    }

    fn address(&mut self, node: &Node, what: &str) -> Option<Option<SocketAddr>> {
        let text = self.string(node, what)?;
        match text.parse::<SocketAddr>() {
            Ok(addr) => Some(Some(addr)),
            Err(_) => {
                self.error(
                    node.pos,
                    format!(
                        "invalid {what} address `{text}`: expected IP:PORT, like 127.0.0.1:8080"
                    ),
                );
                None
            }
        }
    }

    fn upstreams(&mut self, node: &Node) -> BTreeMap<String, Upstream> {
        let mut out = BTreeMap::new();
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!(
                    "upstreams must be a mapping of name to URL, found {}",
                    node.type_name()
                ),
            );
            return out;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key, "an upstream name") else {
                continue;
            };
            self.declared.push(name.to_string());
            if !valid_name(name, true) {
                self.error(
                    key.pos,
                    format!("invalid upstream name `{name}`: use letters, digits, `-` and `_`"),
                );
                continue;
            }
            if let Some(upstream) = self.upstream(name, value) {
                out.insert(name.to_string(), upstream);
            }
        }
        out
    }

    fn upstream(&mut self, name: &str, node: &Node) -> Option<Upstream> {
        let mut up = Upstream {
            name: name.to_string(),
            url: String::new(),
            endpoints: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            balance: Balance::P2c,
            circuit_breaker: None,
            outlier: None,
            tls: None,
        };
        let mut ca_node = None;
        let url_nodes: Vec<&Node> = match &node.kind {
            Kind::Scalar { .. } => vec![node],
            _ => {
                let what = format!("upstream `{name}`");
                let f = self.fields(node, &what, UPSTREAM_FIELDS)?;
                let mut ok = true;
                ca_node = f.get("ca");
                if let Some(n) = f.get("timeout") {
                    match self.duration(n, "timeout") {
                        Some(d) => up.timeout = d,
                        None => ok = false,
                    }
                }
                if let Some(n) = f.get("connect_timeout") {
                    match self.duration(n, "connect_timeout") {
                        Some(d) => up.connect_timeout = d,
                        None => ok = false,
                    }
                }
                if let Some(n) = f.get("balance") {
                    match n.as_str() {
                        Some("p2c") => up.balance = Balance::P2c,
                        Some("least_requests") => up.balance = Balance::LeastRequests,
                        _ => {
                            self.error(n.pos, "balance must be p2c or least_requests");
                            ok = false;
                        }
                    }
                }
                if let Some(n) = f.get("circuit_breaker") {
                    up.circuit_breaker = self.breaker(n);
                    ok &= up.circuit_breaker.is_some();
                }
                if let Some(n) = f.get("outlier") {
                    up.outlier = self.outlier(n);
                    ok &= up.outlier.is_some();
                }
                let nodes = match (f.get("url"), f.get("urls")) {
                    (Some(_), Some(n)) => {
                        self.error(n.pos, format!("{what} has both `url` and `urls`; use one"));
                        return None;
                    }
                    (Some(n), None) => vec![n],
                    (None, Some(n)) => match n.as_seq() {
                        Some(items) if !items.is_empty() => items.iter().collect(),
                        _ => {
                            self.error(n.pos, "urls must be a non-empty list of base URLs");
                            return None;
                        }
                    },
                    (None, None) => {
                        self.error(node.pos, format!("{what} needs `url` (or `urls`)"));
                        return None;
                    }
                };
                if !ok {
                    return None;
                }
                nodes
            }
        };
        let mut https_first = false;
        let first_url_node = url_nodes.first().copied();
        for url_node in url_nodes {
            let url = self.string(url_node, "an upstream URL")?;
            match parse_base_url(url) {
                Ok((origin, base_path, https)) => {
                    if up.endpoints.is_empty() {
                        https_first = https;
                    } else if https != https_first {
                        self.error(
                            url_node.pos,
                            format!("upstream `{name}` mixes http:// and https:// instances"),
                        );
                        return None;
                    }
                    up.endpoints.push(EndpointAddr {
                        url: url.to_string(),
                        origin,
                        base_path,
                    })
                }
                Err(msg) => {
                    self.error(
                        url_node.pos,
                        format!("invalid URL `{url}` for upstream `{name}`: {msg}"),
                    );
                    return None;
                }
            }
        }
        up.url = up.endpoints.first()?.url.clone();
        up.tls = match (https_first, ca_node) {
            (false, None) => None,
            (false, Some(n)) => {
                self.error(
                    n.pos,
                    format!("upstream `{name}` has a `ca` but its URL is not https://"),
                );
                return None;
            }
            (true, None) => match crate::tls::system_client_config() {
                Ok(client) => Some(UpstreamTls {
                    ca: None,
                    anchors: "system".into(),
                    client,
                }),
                Err(e) => {
                    let pos = first_url_node.map_or(node.pos, |n| n.pos);
                    self.error(pos, format!("upstream `{name}`: {e}"));
                    return None;
                }
            },
            (true, Some(n)) => Some(self.upstream_ca(name, n)?),
        };
        Some(up)
    }

    fn duration(&mut self, node: &Node, what: &str) -> Option<std::time::Duration> {
        let text = self.string(node, what)?;
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.error(node.pos, format!("{what} must be greater than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(node.pos, format!("{what}: {msg}"));
                None
            }
        }
    }

    fn routes(&mut self, node: &Node, upstreams: &BTreeMap<String, Upstream>) -> Vec<Route> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!("routes must be a list, found {}", node.type_name()),
            );
            return Vec::new();
        };
        let mut routes: Vec<Route> = Vec::with_capacity(items.len());
        let mut names: HashMap<&str, usize> = HashMap::with_capacity(items.len());
        // Only routes with the same path can hide one another. Routes are chained by a hash
        // of their path: `last_by_hash` holds the latest route with that hash, `earlier` each
        // route's predecessor in its chain. A collision only adds a candidate that `hides`
        // (which compares the paths) turns down.
        let hasher = std::collections::hash_map::RandomState::new();
        let mut last_by_hash: HashMap<u64, usize> = HashMap::with_capacity(items.len());
        let mut earlier: Vec<Option<usize>> = Vec::with_capacity(items.len());
        for item in items {
            // Duplicates are found by name alone, so one is reported even when either route
            // has other problems.
            let name = item
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some("name")))
                .and_then(|(_, v)| v.as_str());
            let duplicate = name.and_then(|n| names.get(n).map(|first| (n, *first)));
            if let Some((name, first)) = duplicate {
                self.error(
                    item.pos,
                    format!("duplicate route name `{name}` (first defined on line {first})"),
                );
            } else if let Some(name) = name {
                names.insert(name, item.pos.line);
            }
            let Some(route) = self.route(item, upstreams) else {
                continue;
            };
            if duplicate.is_some() {
                continue;
            }
            let index = routes.len();
            let prev = last_by_hash.insert(hasher.hash_one(&route.matcher.path), index);
            // The first route in the file that hides this one is named: walk the chain back to
            // the start and keep the last (earliest) match.
            let mut hider = None;
            let mut at = prev;
            while let Some(i) = at {
                if hides(&routes[i], &route) {
                    hider = Some(i);
                }
                at = earlier[i];
            }
            if let Some(first) = hider {
                let first = &routes[first];
                self.warn(
                    item.pos,
                    format!(
                        "route `{}` is unreachable: route `{}` (line {}) comes first and matches every request it would",
                        route.name, first.name, first.line
                    ),
                );
            }
            earlier.push(prev);
            routes.push(route);
        }
        routes
    }

    fn route(&mut self, node: &Node, upstreams: &BTreeMap<String, Upstream>) -> Option<Route> {
        let f = self.fields(node, "a route", ROUTE_FIELDS)?;
        let name = self.required(&f, "name", "a route").and_then(|n| {
            let name = self.string(n, "a route name")?;
            if !valid_name(name, false) {
                self.error(
                    n.pos,
                    format!("invalid route name `{name}`: use lowercase letters, digits and `-`"),
                );
                return None;
            }
            Some(name)
        });
        let what = RouteWhat(name);
        let matcher = self
            .required(&f, "match", what)
            .and_then(|n| self.route_match(n, what));
        let upstream = self.required(&f, "upstream", what).and_then(|n| {
            let up = self.string(n, "upstream")?;
            if !self.declared.iter().any(|d| d == up) {
                self.error(
                    n.pos,
                    format!("{what} uses unknown upstream `{up}`{}", known(upstreams)),
                );
                return None;
            }
            Some(up)
        });
        let mode = match f.get("mode") {
            None => Some(Mode::Legacy),
            Some(n) => {
                let text = self.string(n, "mode");
                let mode = text.and_then(Mode::parse);
                if let (Some(text), None) = (text, mode) {
                    self.error(
                        n.pos,
                        format!(
                            "invalid mode `{text}`: expected legacy, shadow, canary or extracted"
                        ),
                    );
                }
                mode
            }
        };
        let percent = f.get("percent").map(|n| (n.pos, self.percent(n)));
        let sticky = f.get("sticky").map(|n| (n.pos, self.sticky(n)));
        let shadow = match f.get("shadow") {
            Some(n) => self.shadow_route(n, what),
            None => Some(ShadowRoute::default()),
        };
        let max_body_bytes = match f.get("max_body_bytes") {
            Some(n) => match n.as_str().and_then(parse_size) {
                Some(v) => Some(Some(v as u64)),
                None => {
                    self.error(
                        n.pos,
                        "max_body_bytes must be a whole number of bytes (KiB or MiB allowed)",
                    );
                    None
                }
            },
            None => Some(None),
        };
        let route_timeout = match f.get("timeout") {
            Some(n) => self.duration(n, "timeout").map(Some),
            None => Some(None),
        };
        let failover = f.get("failover").map(|n| self.failover(n));
        let retries = f.get("retries").map(|n| self.retries(n));
        let promote = f.get("promote").map(|n| self.promote(n));
        if let Some(mode) = mode {
            if mode == Mode::Canary && percent.is_none() {
                self.error(
                    node.pos,
                    format!("{what} is a canary but has no `percent` (0-100)"),
                );
            }
            if mode != Mode::Canary {
                if let Some((pos, _)) = percent {
                    self.warn(
                        pos,
                        format!(
                            "`percent` is ignored: {what} is in mode {}, not canary",
                            mode.as_str()
                        ),
                    );
                }
                if let Some((pos, _)) = sticky {
                    self.warn(
                        pos,
                        format!(
                            "`sticky` is ignored: {what} is in mode {}, not canary",
                            mode.as_str()
                        ),
                    );
                }
            }
        }
        let percent = match percent {
            Some((_, p)) => Some(p?),
            None => None,
        };
        let sticky = match sticky {
            Some((_, s)) => Some(s?),
            None => None,
        };
        Some(Route {
            name: name?.to_string(),
            matcher: matcher?,
            upstream: upstream?.to_string(),
            mode: mode?,
            percent,
            sticky,
            shadow: shadow?,
            max_body_bytes: max_body_bytes?,
            timeout: route_timeout?,
            failover: match failover {
                Some(p) => Some(p?),
                None => None,
            },
            retries: match retries {
                Some(p) => Some(p?),
                None => None,
            },
            promote: match promote {
                Some(p) => Some(p?),
                None => None,
            },
            line: node.pos.line,
        })
    }

    fn route_match(&mut self, node: &Node, what: RouteWhat<'_>) -> Option<RouteMatch> {
        let what = MatchOf(what);
        let f = self.fields(node, what, MATCH_FIELDS)?;
        let path = match (f.get("exact"), f.get("prefix")) {
            (Some(_), Some(p)) => {
                self.error(
                    p.pos,
                    format!("{what} has both `exact` and `prefix`; use one"),
                );
                None
            }
            (None, None) => {
                self.error(node.pos, format!("{what} needs `exact` or `prefix`"));
                None
            }
            (Some(n), None) => self.match_path(n).map(PathMatch::Exact),
            (None, Some(n)) => self.match_path(n).map(|mut p| {
                // A prefix covers whole segments, so `/api/` and `/api` mean the same. The path
                // starts with `/`, so trimmed to nothing it was all slashes: keep one.
                let trimmed = p.trim_end_matches('/').len();
                p.truncate(trimmed.max(1));
                PathMatch::Prefix(p)
            }),
        };
        let methods = f.get("methods").map(|n| self.methods(n));
        let headers = f.get("headers").map(|n| self.match_headers(n));
        Some(RouteMatch {
            path: path?,
            methods: match methods {
                Some(m) => Some(m?),
                None => None,
            },
            headers: match headers {
                Some(h) => h?,
                None => Vec::new(),
            },
        })
    }

    fn match_path(&mut self, node: &Node) -> Option<String> {
        let text = self.string(node, "a path")?;
        if !text.starts_with('/') {
            self.error(node.pos, format!("path `{text}` must start with `/`"));
            return None;
        }
        match normalize_path(text) {
            Ok(p) if p == text => Some(p),
            Ok(p) => {
                self.error(
                    node.pos,
                    format!("path `{text}` is not normalized; write it as `{p}`"),
                );
                None
            }
            Err(e) => {
                self.error(node.pos, format!("invalid path `{text}`: {e}"));
                None
            }
        }
    }

    fn methods(&mut self, node: &Node) -> Option<Vec<Method>> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!(
                    "methods must be a list like [GET, HEAD], found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            let Some(text) = self.string(item, "a method") else {
                ok = false;
                continue;
            };
            match Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
                Ok(m) if !out.contains(&m) => out.push(m),
                Ok(_) => self.warn(item.pos, format!("method `{text}` is listed twice")),
                Err(_) => {
                    self.error(item.pos, format!("invalid method `{text}`"));
                    ok = false;
                }
            }
        }
        if ok && out.is_empty() {
            self.error(node.pos, "methods is empty, so the route would match nothing; leave it out to match any method");
            return None;
        }
        ok.then_some(out)
    }

    fn match_headers(&mut self, node: &Node) -> Option<Vec<(HeaderName, String)>> {
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!(
                    "headers must be a mapping of name to value, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (key, value) in entries {
            let name = self.string(key, "a header name");
            let value = self.string(value, "a header value");
            let (Some(name), Some(value)) = (name, value) else {
                ok = false;
                continue;
            };
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => out.push((h, value.to_string())),
                Err(_) => {
                    self.error(key.pos, format!("invalid header name `{name}`"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn percent(&mut self, node: &Node) -> Option<f64> {
        let text = match &node.kind {
            Kind::Scalar {
                value,
                quoted: false,
            } => value.as_str(),
            _ => {
                self.error(
                    node.pos,
                    format!(
                        "percent must be a number from 0 to 100, found {}",
                        node.type_name()
                    ),
                );
                return None;
            }
        };
        match text.trim_end_matches('%').parse::<f64>() {
            Ok(p) if (0.0..=100.0).contains(&p) => {
                if (p * 100.0).fract() != 0.0 {
                    self.error(
                        node.pos,
                        format!("percent `{text}` has more than two decimals"),
                    );
                    return None;
                }
                Some(p)
            }
            _ => {
                self.error(
                    node.pos,
                    format!("percent must be a number from 0 to 100, found `{text}`"),
                );
                None
            }
        }
    }

    fn sticky(&mut self, node: &Node) -> Option<Sticky> {
        let text = self.string(node, "sticky")?;
        let bad = |v: &mut Self, why: &str| {
            v.error(
                node.pos,
                format!("invalid sticky `{text}`: {why}; expected header:NAME or cookie:NAME"),
            );
            None
        };
        let Some((kind, name)) = text.split_once(':') else {
            return bad(self, "missing `:`");
        };
        let name = name.trim();
        match kind.trim() {
            "header" => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Some(Sticky::Header(h)),
                Err(_) => bad(self, "not a valid header name"),
            },
            "cookie" if !name.is_empty() && name.bytes().all(is_token_byte) => {
                Some(Sticky::Cookie(name.to_string()))
            }
            "cookie" => bad(self, "not a valid cookie name"),
            _ => bad(self, "unknown kind"),
        }
    }

    fn adapters(
        &mut self,
        node: &Node,
        upstreams: &BTreeMap<String, Upstream>,
    ) -> BTreeMap<String, AdapterMode> {
        let mut out = BTreeMap::new();
        let Some(entries) = node.as_map() else {
            self.error(
                node.pos,
                format!(
                    "adapters must be a mapping of capability to local|remote, found {}",
                    node.type_name()
                ),
            );
            return out;
        };
        for (key, value) in entries {
            let Some(name) = self.string(key, "an adapter name") else {
                continue;
            };
            if !valid_name(name, true) {
                self.error(
                    key.pos,
                    format!("invalid adapter name `{name}`: use letters, digits, `-` and `_`"),
                );
                continue;
            }
            let Some(text) = self.string(value, "an adapter mode") else {
                continue;
            };
            let mode = match text {
                "local" => AdapterMode::Local,
                "remote" => AdapterMode::Remote,
                _ => {
                    self.error(
                        value.pos,
                        format!(
                            "invalid adapter mode `{text}` for `{name}`: expected local or remote"
                        ),
                    );
                    continue;
                }
            };
            if mode == AdapterMode::Remote && !self.declared.iter().any(|d| d == name) {
                self.error(
                    value.pos,
                    format!("adapter `{name}` is remote but there is no upstream named `{name}` to back it{}", known(upstreams)),
                );
                continue;
            }
            out.insert(name.to_string(), mode);
        }
        out
    }

    fn limits(&mut self, node: &Node) -> Limits {
        let mut limits = Limits::default();
        let Some(f) = self.fields(node, "limits", LIMIT_FIELDS) else {
            return limits;
        };
        let sizes: [(&str, &mut usize); 4] = [
            ("max_head_bytes", &mut limits.max_head_bytes),
            ("max_headers", &mut limits.max_headers),
            ("max_uri_bytes", &mut limits.max_uri_bytes),
            ("max_connections", &mut limits.max_connections),
        ];
        for (name, slot) in sizes {
            if let Some(n) = f.get(name) {
                match n.as_str().and_then(parse_size) {
                    Some(v) if v > 0 => *slot = v,
                    _ => self.error(
                        n.pos,
                        format!(
                            "{name} must be a positive whole number (sizes may use KiB or MiB)"
                        ),
                    ),
                }
            }
        }
        for (name, slot) in [
            ("header_read_timeout", &mut limits.header_read_timeout),
            ("idle_timeout", &mut limits.idle_timeout),
        ] {
            if let Some(d) = f.get(name).and_then(|n| self.duration(n, name)) {
                *slot = d;
            }
        }
        limits
    }
}

/// How messages name a route: "route `NAME`", or "a route" when it has no usable name.
/// Formatted only when a message is, not once per route.
#[derive(Clone, Copy)]
struct RouteWhat<'a>(Option<&'a str>);

impl fmt::Display for RouteWhat<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(name) => write!(f, "route `{name}`"),
            None => f.write_str("a route"),
        }
    }
}

/// "the match of ROUTE", for messages about a route's `match`.
#[derive(Clone, Copy)]
struct MatchOf<'a>(RouteWhat<'a>);

impl fmt::Display for MatchOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the match of {}", self.0)
    }
}

/// Whether route `a`, earlier in the file, matches every request `b` would.
fn hides(a: &Route, b: &Route) -> bool {
    let methods_cover = match (&a.matcher.methods, &b.matcher.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(am), Some(bm)) => bm.iter().all(|m| am.contains(m)),
    };
    let headers_cover = a
        .matcher
        .headers
        .iter()
        .all(|(n, v)| b.matcher.headers.iter().any(|(bn, bv)| bn == n && bv == v));
    a.matcher.path == b.matcher.path && methods_cover && headers_cover
}

fn valid_name(name: &str, allow_upper: bool) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || (allow_upper && (b == b'_' || b.is_ascii_uppercase()))
        })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn known(upstreams: &BTreeMap<String, Upstream>) -> String {
    if upstreams.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        format!(" (known: {})", names.join(", "))
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (num, mult) = if let Some(n) = text.strip_suffix("KiB") {
        (n, 1024)
    } else if let Some(n) = text.strip_suffix("MiB") {
        (n, 1024 * 1024)
    } else {
        (text, 1)
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

/// Splits an upstream base URL into its origin, its path prefix, and whether it is https.
pub(super) fn parse_base_url(url: &str) -> Result<(http::uri::Authority, String, bool), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(format!(
                "unsupported scheme `{other}`; use http:// or https://"
            ))
        }
        None => return Err("missing scheme; write it like http://127.0.0.1:8081".into()),
    };
    let authority = uri.authority().ok_or("missing host")?.clone();
    if authority.as_str().contains('@') {
        return Err("credentials in upstream URLs are not supported".into());
    }
    if authority.host().is_empty() {
        return Err("missing host".into());
    }
    if uri.query().is_some() {
        return Err("an upstream URL cannot have a query".into());
    }
    let path = uri.path().trim_end_matches('/');
    if !path.is_empty() {
        normalize_path(path).map_err(|e| format!("bad path: {e}"))?;
    }
    Ok((authority, path.to_string(), https))
}

/// The edge settings: `tls:`, `trusted_proxies:`, `admin_token_file:`, an upstream's `ca:`.
impl Validator<'_> {
    /// A path from the file, relative to the config file's directory.
    fn path(&mut self, node: &Node, what: &str) -> Option<PathBuf> {
        let text = self.string(node, what)?;
        if text.is_empty() {
            self.error(node.pos, format!("{what} is empty"));
            return None;
        }
        Some(self.base.join(text))
    }

    fn tls(&mut self, node: &Node) -> Option<Tls> {
        let f = self.fields(node, "tls", TLS_FIELDS)?;
        let redirect_http = f
            .get("redirect_http")
            .and_then(|n| self.address(n, "redirect_http"));
        let default = self.cert_pair(&f, "tls");
        let mut sni = Vec::new();
        let mut by_name = HashMap::new();
        let mut ok = true;
        if let Some(n) = f.get("sni") {
            match n.as_map() {
                Some(entries) => {
                    for (key, value) in entries {
                        let Some(host) = self.string(key, "an SNI host name") else {
                            ok = false;
                            continue;
                        };
                        let host = host.to_ascii_lowercase();
                        if rustls_pki_types::DnsName::try_from(host.as_str()).is_err() {
                            self.error(key.pos, format!("invalid SNI host name `{host}`"));
                            ok = false;
                            continue;
                        }
                        let what = format!("the certificate for `{host}`");
                        let Some(pair_fields) = self.fields(value, &what, SNI_FIELDS) else {
                            ok = false;
                            continue;
                        };
                        match self.cert_pair(&pair_fields, &what) {
                            Some((_, _, key)) => {
                                sni.push(host.clone());
                                by_name.insert(host, key);
                            }
                            None => ok = false,
                        }
                    }
                }
                None => {
                    self.error(
                        n.pos,
                        format!(
                            "tls.sni must be a mapping of host name to {{cert, key}}, found {}",
                            n.type_name()
                        ),
                    );
                    ok = false;
                }
            }
        }
        let (cert, key, default) = default?;
        if !ok {
            return None;
        }
        match crate::tls::server_config(default, by_name) {
            Ok(server) => Some(Tls {
                cert,
                key,
                sni,
                redirect_http: redirect_http.flatten(),
                server,
            }),
            Err(e) => {
                self.error(node.pos, format!("tls: {e}"));
                None
            }
        }
    }

    /// Loads the `cert` and `key` of a mapping, reporting a problem at the field at fault.
    fn cert_pair(
        &mut self,
        f: &Fields<'_>,
        what: &str,
    ) -> Option<(PathBuf, PathBuf, Arc<rustls::sign::CertifiedKey>)> {
        let cert_node = self.required(f, "cert", what);
        let key_node = self.required(f, "key", what);
        let cert = cert_node.and_then(|n| self.path(n, "cert"));
        let key = key_node.and_then(|n| self.path(n, "key"));
        let (cert, key, cert_node, key_node) = (cert?, key?, cert_node?, key_node?);
        match crate::tls::load_pair(&cert, &key) {
            Ok(pair) => Some((cert, key, pair)),
            Err(e) => {
                let pos = match e.field {
                    crate::tls::PairField::Cert => cert_node.pos,
                    crate::tls::PairField::Key => key_node.pos,
                };
                self.error(pos, e.message);
                None
            }
        }
    }

    fn upstream_ca(&mut self, name: &str, node: &Node) -> Option<UpstreamTls> {
        let path = self.path(node, "ca")?;
        let loaded = std::fs::read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                crate::tls::client_config_with_ca(&path)
                    .map(|client| (super::version_of(&bytes), client))
            });
        match loaded {
            Ok((anchors, client)) => Some(UpstreamTls {
                ca: Some(path),
                anchors,
                client,
            }),
            Err(e) => {
                self.error(node.pos, format!("ca of upstream `{name}`: {e}"));
                None
            }
        }
    }

    fn trusted_proxies(&mut self, node: &Node) -> Vec<ipnet::IpNet> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!(
                    "trusted_proxies must be a list of addresses or CIDR ranges like 10.0.0.0/8, found {}",
                    node.type_name()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Some(text) = self.string(item, "a trusted proxy") else {
                continue;
            };
            let parsed = text
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => out.push(net.trunc()),
                Err(_) => self.error(
                    item.pos,
                    format!("invalid trusted proxy `{text}`: expected an address or a CIDR range like 10.0.0.0/8"),
                ),
            }
        }
        out
    }

    fn admin_token_file(&mut self, node: &Node) -> Option<AdminToken> {
        let path = self.path(node, "admin_token_file")?;
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Some(AdminToken {
                source: path.display().to_string(),
                secret: text.trim().to_string(),
            }),
            Ok(_) => {
                self.error(
                    node.pos,
                    format!("admin_token_file {} is empty", path.display()),
                );
                None
            }
            Err(e) => {
                self.error(
                    node.pos,
                    format!("cannot read admin_token_file {}: {e}", path.display()),
                );
                None
            }
        }
    }
}

/// The `shadow:` sections, top-level and per route.
impl Validator<'_> {
    fn shadow_global(&mut self, node: &Node) -> ShadowGlobal {
        let mut g = ShadowGlobal::default();
        let Some(f) = self.fields(node, "shadow", SHADOW_GLOBAL_FIELDS) else {
            return g;
        };
        if let Some(n) = f.get("max_in_flight") {
            g.max_in_flight = self.positive(n, "max_in_flight").unwrap_or(g.max_in_flight);
        }
        if let Some(n) = f.get("keep_mismatches") {
            g.keep_mismatches = self
                .positive(n, "keep_mismatches")
                .unwrap_or(g.keep_mismatches);
        }
        if let Some(n) = f.get("report_file") {
            g.report_file = self.string(n, "report_file").map(std::path::PathBuf::from);
        }
        g
    }

    fn shadow_route(&mut self, node: &Node, what: RouteWhat<'_>) -> Option<ShadowRoute> {
        let what = format!("the shadow settings of {what}");
        let f = self.fields(node, &what, SHADOW_ROUTE_FIELDS)?;
        let mut s = ShadowRoute::default();
        let mut ok = true;
        if let Some(n) = f.get("sample") {
            match self.percent(n) {
                Some(p) => s.sample = p,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("methods") {
            match self.methods(n) {
                Some(m) => s.methods = m,
                None => ok = false,
            }
        }
        for (key, slot) in [
            ("strip_headers", &mut s.strip_headers),
            ("compare_headers", &mut s.compare_headers),
            ("ignore_headers", &mut s.ignore_headers),
        ] {
            if let Some(n) = f.get(key) {
                match self.header_names(n, key) {
                    Some(h) => *slot = h,
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get("ignore") {
            match self.json_paths(n) {
                Some(p) => s.ignore = p,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("noise") {
            match n.as_str() {
                Some("true") => s.noise = true,
                Some("false") => s.noise = false,
                _ => {
                    self.error(n.pos, "noise must be true or false");
                    ok = false;
                }
            }
        }
        if let Some(n) = f.get("max_body_bytes") {
            match n.as_str().and_then(parse_size) {
                Some(v) if v > 0 => s.max_body_bytes = v,
                _ => {
                    self.error(
                        n.pos,
                        "max_body_bytes must be a positive size (KiB or MiB allowed)",
                    );
                    ok = false;
                }
            }
        }
        if let Some(n) = f.get("record") {
            s.record = self.string(n, "record").map(std::path::PathBuf::from);
        }
        ok.then_some(s)
    }

    fn positive(&mut self, node: &Node, what: &str) -> Option<usize> {
        match node.as_str().and_then(|t| t.parse::<usize>().ok()) {
            Some(v) if v > 0 => Some(v),
            _ => {
                self.error(node.pos, format!("{what} must be a positive whole number"));
                None
            }
        }
    }

    fn header_names(&mut self, node: &Node, what: &str) -> Option<Vec<HeaderName>> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!(
                    "{what} must be a list of header names, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match item.as_str().map(|t| HeaderName::from_bytes(t.as_bytes())) {
                Some(Ok(h)) => out.push(h),
                _ => {
                    self.error(item.pos, format!("{what}: invalid header name"));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn json_paths(&mut self, node: &Node) -> Option<Vec<String>> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!(
                    "ignore must be a list of JSON paths like /items/*/updated_at, found {}",
                    node.type_name()
                ),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match item.as_str() {
                Some(p) if p.starts_with('/') && p.len() > 1 => out.push(p.to_string()),
                _ => {
                    self.error(
                        item.pos,
                        "ignore: a JSON path starts with `/`, like /items/*/updated_at",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// Resilience: circuit breakers, outlier ejection, failover, retries, promotion plans.
impl Validator<'_> {
    fn breaker(&mut self, node: &Node) -> Option<BreakerPolicy> {
        let mut p = BreakerPolicy::default();
        if node.as_str() == Some("true") {
            return Some(p);
        }
        let f = self.fields(node, "circuit_breaker", BREAKER_FIELDS)?;
        let mut ok = true;
        for (key, slot) in [
            ("consecutive_failures", &mut p.consecutive_failures),
            ("min_requests", &mut p.min_requests),
        ] {
            if let Some(n) = f.get(key) {
                match self.positive(n, key).and_then(|v| u32::try_from(v).ok()) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get("error_rate") {
            match self.percent(n) {
                Some(v) if v > 0.0 => p.error_rate = v.round() as u32,
                _ => ok = false,
            }
        }
        for (key, slot) in [("window", &mut p.window), ("open_for", &mut p.open_for)] {
            if let Some(n) = f.get(key) {
                match self.duration(n, key) {
                    Some(d) => *slot = d,
                    None => ok = false,
                }
            }
        }
        ok.then_some(p)
    }

    fn outlier(&mut self, node: &Node) -> Option<OutlierPolicy> {
        let mut p = OutlierPolicy::default();
        if node.as_str() == Some("true") {
            return Some(p);
        }
        let f = self.fields(node, "outlier", OUTLIER_FIELDS)?;
        let mut ok = true;
        if let Some(n) = f.get("consecutive_failures") {
            match self
                .positive(n, "consecutive_failures")
                .and_then(|v| u32::try_from(v).ok())
            {
                Some(v) => p.consecutive_failures = v,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("eject_for") {
            match self.duration(n, "eject_for") {
                Some(d) => p.eject_for = d,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("max_ejected_percent") {
            match self.percent(n) {
                Some(v) => p.max_ejected_percent = v.round() as u32,
                None => ok = false,
            }
        }
        ok.then_some(p)
    }

    fn fail_on(&mut self, node: &Node) -> Option<Vec<FailOn>> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                "`on` must be a list of: connect, timeout, reset, 5xx",
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match item.as_str() {
                Some("connect") => out.push(FailOn::Connect),
                Some("timeout") => out.push(FailOn::Timeout),
                Some("reset") => out.push(FailOn::Reset),
                Some("5xx") => out.push(FailOn::Status5xx),
                _ => {
                    self.error(item.pos, "expected one of: connect, timeout, reset, 5xx");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// `failover: true`, or `failover: {on: [...]}`. `Some(None)` means turned off.
    fn failover(&mut self, node: &Node) -> Option<FailoverPolicy> {
        let default = FailoverPolicy {
            on: vec![FailOn::Connect, FailOn::Timeout],
        };
        if node.as_str() == Some("true") {
            return Some(default);
        }
        let f = self.fields(node, "failover", FAILOVER_FIELDS)?;
        match f.get("on") {
            Some(n) => Some(FailoverPolicy {
                on: self.fail_on(n)?,
            }),
            None => Some(default),
        }
    }

    fn retries(&mut self, node: &Node) -> Option<RetryPolicy> {
        let mut p = RetryPolicy {
            attempts: 2,
            backoff: std::time::Duration::from_millis(25),
            budget: 20,
            on: vec![FailOn::Connect, FailOn::Reset],
        };
        let f = self.fields(node, "retries", RETRY_FIELDS)?;
        let mut ok = true;
        if let Some(n) = f.get("attempts") {
            match n.as_str().and_then(|t| t.parse::<u32>().ok()) {
                Some(v) if v <= 5 => p.attempts = v,
                _ => {
                    self.error(n.pos, "attempts must be a whole number from 0 to 5");
                    ok = false;
                }
            }
        }
        if let Some(n) = f.get("backoff") {
            match self.duration(n, "backoff") {
                Some(d) => p.backoff = d,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("budget") {
            match self.percent(n) {
                Some(v) => p.budget = v.round() as u32,
                None => ok = false,
            }
        }
        if let Some(n) = f.get("on") {
            match self.fail_on(n) {
                Some(on) => p.on = on,
                None => ok = false,
            }
        }
        ok.then_some(p)
    }

    fn promote(&mut self, node: &Node) -> Option<PromotePlan> {
        let mut p = PromotePlan::default();
        let f = self.fields(node, "promote", PROMOTE_FIELDS)?;
        let mut ok = true;
        for (key, slot) in [
            ("min_compared", &mut p.min_compared),
            ("min_requests", &mut p.min_requests),
        ] {
            if let Some(n) = f.get(key) {
                match n.as_str().and_then(|t| t.parse::<u64>().ok()) {
                    Some(v) => *slot = v,
                    None => {
                        self.error(n.pos, format!("{key} must be a whole number"));
                        ok = false;
                    }
                }
            }
        }
        for (key, slot) in [
            ("min_match", &mut p.min_match),
            ("max_error_rate", &mut p.max_error_rate),
        ] {
            if let Some(n) = f.get(key) {
                match self.percent(n) {
                    Some(v) => *slot = v,
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get("max_p99_ratio") {
            match n.as_str().and_then(|t| t.parse::<f64>().ok()) {
                Some(v) if v >= 1.0 => p.max_p99_ratio = v,
                _ => {
                    self.error(n.pos, "max_p99_ratio must be a number of at least 1");
                    ok = false;
                }
            }
        }
        for (key, slot) in [("dwell", &mut p.dwell), ("interval", &mut p.interval)] {
            if let Some(n) = f.get(key) {
                match self.duration(n, key) {
                    Some(d) => *slot = d,
                    None => ok = false,
                }
            }
        }
        if let Some(n) = f.get("steps") {
            let steps: Option<Vec<f64>> = n.as_seq().and_then(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().and_then(|t| t.parse::<f64>().ok()))
                    .collect()
            });
            match steps {
                Some(steps)
                    if !steps.is_empty()
                        && steps.windows(2).all(|w| w[0] < w[1])
                        && steps.iter().all(|s| *s > 0.0 && *s <= 100.0) =>
                {
                    p.steps = steps
                }
                _ => {
                    self.error(
                        n.pos,
                        "steps must be a rising list of canary percents in (0, 100], like [5, 25, 50, 100]",
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{parse, Severity};
    use super::*;

    const BASE: &str = "upstreams:\n  legacy: http://127.0.0.1:8081\n  catalog: http://127.0.0.1:8082/v1/\nfallback: legacy\n";

    fn errors(yaml: &str) -> Vec<Diagnostic> {
        parse(yaml)
            .unwrap_err()
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect()
    }

    fn one_error(yaml: &str) -> Diagnostic {
        let errs = errors(yaml);
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    fn warnings(yaml: &str) -> Vec<Diagnostic> {
        parse(yaml).unwrap().warnings
    }

    fn with_route(route: &str) -> String {
        format!("{BASE}routes:\n{route}")
    }

    #[test]
    fn a_full_config_validates() {
        let yaml = format!(
            "listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9901\n{BASE}routes:\n  - name: catalog\n    match:\n      prefix: /api/products/\n      methods: [get, HEAD]\n      headers: {{X-Beta: \"1\"}}\n    upstream: catalog\n    mode: canary\n    percent: 12.5\n    sticky: header:x-user-id\nadapters:\n  catalog: remote\nlimits:\n  max_headers: 50\n  header_read_timeout: 2s\n"
        );
        let checked = parse(&yaml).unwrap();
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let c = checked.config;
        assert_eq!(c.fallback, "legacy");
        let r = &c.routes[0];
        assert_eq!(r.matcher.path, PathMatch::Prefix("/api/products".into()));
        assert_eq!(r.matcher.methods, Some(vec![Method::GET, Method::HEAD]));
        assert_eq!(r.matcher.headers[0].0.as_str(), "x-beta");
        assert_eq!(r.share_bp(), 1250);
        assert_eq!(
            r.sticky,
            Some(Sticky::Header(HeaderName::from_static("x-user-id")))
        );
        assert_eq!(c.upstreams["catalog"].endpoints[0].base_path, "/v1");
        assert_eq!(c.adapters["catalog"], AdapterMode::Remote);
        assert_eq!(c.limits.max_headers, 50);
        assert_eq!(c.version.len(), 64);
    }

    #[test]
    fn syntax_error_has_position() {
        let e = one_error("upstreams: [\nfallback: x\n");
        assert!(e.line >= 1 && e.message.contains("syntax"), "{e:?}");
    }

    #[test]
    fn empty_file() {
        assert!(one_error("").message.contains("empty"));
    }

    #[test]
    fn unknown_fields_everywhere_are_all_reported() {
        let yaml = with_route("  - name: a\n    match: {prefix: /a, bogus: 1}\n    upstream: catalog\n    colour: red\n")
            + "extra: 1\n";
        let errs = errors(&yaml);
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![7, 9, 10], "{errs:#?}");
        assert!(errs.iter().all(|e| e.message.contains("unknown field")));
    }

    #[test]
    fn unknown_upstream() {
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: nope\n",
        ));
        assert_eq!((e.line, e.col), (8, 15));
        assert!(e.message.contains("unknown upstream `nope`"));
    }

    #[test]
    fn unknown_fallback() {
        let e = one_error("upstreams:\n  a: http://127.0.0.1:1\nfallback: b\n");
        assert_eq!((e.line, e.col), (3, 11));
    }

    #[test]
    fn duplicate_route_name_points_at_the_second() {
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n  - name: a\n    match: {prefix: /b}\n    upstream: catalog\n",
        ));
        assert_eq!(e.line, 9);
        assert!(e.message.contains("duplicate route name"));
    }

    #[test]
    fn duplicate_is_reported_even_when_the_route_has_other_problems() {
        let errs = errors(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n  - name: a\n    match: {prefix: /b}\n    upstream: nope\n",
        ));
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].message.contains("duplicate route name") && errs[0].line == 9);
    }

    #[test]
    fn bad_mode() {
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    mode: live\n",
        ));
        assert_eq!(e.line, 9);
        assert!(e.message.contains("invalid mode"));
    }

    #[test]
    fn percent_out_of_range() {
        for p in ["150", "-1", "abc", "'50'"] {
            let e = one_error(&with_route(&format!(
                "  - name: a\n    match: {{prefix: /a}}\n    upstream: catalog\n    mode: canary\n    percent: {p}\n"
            )));
            assert_eq!(e.line, 10, "{p}");
        }
    }

    #[test]
    fn canary_needs_percent() {
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    mode: canary\n",
        ));
        assert!(e.message.contains("percent"));
    }

    #[test]
    fn bad_sticky() {
        for s in [
            "x-user",
            "header:",
            "query:id",
            "cookie:a b",
            "header:bad header",
        ] {
            let e = one_error(&with_route(&format!(
                "  - name: a\n    match: {{prefix: /a}}\n    upstream: catalog\n    mode: canary\n    percent: 5\n    sticky: \"{s}\"\n"
            )));
            assert!(e.message.contains("invalid sticky"), "{s}: {e:?}");
        }
    }

    #[test]
    fn percent_and_sticky_outside_canary_warn() {
        let w = warnings(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    mode: extracted\n    percent: 5\n    sticky: cookie:uid\n",
        ));
        assert_eq!(w.len(), 2);
        assert!(w.iter().all(|w| w.severity == Severity::Warning));
    }

    #[test]
    fn unreachable_route_warns() {
        let w = warnings(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n  - name: b\n    match: {prefix: /a, methods: [GET]}\n    upstream: catalog\n",
        ));
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].line, 9);
        // The narrower route first does not hide the wider one.
        let w = warnings(&with_route(
            "  - name: b\n    match: {prefix: /a, methods: [GET]}\n    upstream: catalog\n  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n",
        ));
        assert!(w.is_empty());
    }

    #[test]
    fn adapters_are_checked() {
        let e = one_error(&format!("{BASE}adapters:\n  inventory: remote\n"));
        assert!(e.message.contains("no upstream named `inventory`"));
        let e = one_error(&format!("{BASE}adapters:\n  catalog: sometimes\n"));
        assert!(e.message.contains("local or remote"));
        assert!(parse(&format!(
            "{BASE}adapters:\n  inventory: local\n  catalog: remote\n"
        ))
        .is_ok());
    }

    #[test]
    fn malformed_url_address_duration() {
        let e = one_error("upstreams:\n  legacy: 127.0.0.1:8081\nfallback: legacy\n");
        assert!(e.message.contains("invalid URL"), "{e:?}");
        let e = one_error(&format!("listen: localhost\n{BASE}"));
        assert!(e.message.contains("invalid listen address"));
        let e = one_error(
            "upstreams:\n  legacy: {url: 'http://127.0.0.1:1', timeout: 5}\nfallback: legacy\n",
        );
        assert!(e.message.contains("duration"), "{e:?}");
    }

    #[test]
    fn bad_route_names_and_paths() {
        let e = one_error(&with_route(
            "  - name: Catalog_1\n    match: {prefix: /a}\n    upstream: catalog\n",
        ));
        assert!(e.message.contains("invalid route name"));
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a/../b}\n    upstream: catalog\n",
        ));
        assert!(e.message.contains("not normalized"));
        let e = one_error(&with_route(
            "  - name: a\n    match: {exact: a}\n    upstream: catalog\n",
        ));
        assert!(e.message.contains("must start with"));
        let e = one_error(&with_route(
            "  - name: a\n    match: {exact: /a, prefix: /a}\n    upstream: catalog\n",
        ));
        assert!(e.message.contains("both"));
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let yaml = "listen: nowhere\nupstreams:\n  legacy: ftp://x\nfallback: legacy\nroutes:\n  - name: a\n    match: {prefix: /a}\n    upstream: x\n    mode: sideways\n";
        assert!(errors(yaml).len() >= 4, "{:#?}", errors(yaml));
    }

    #[test]
    fn shadow_settings() {
        let c = parse(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    mode: shadow\n    shadow:\n      sample: 50\n      methods: [GET, POST]\n      strip_headers: [Authorization]\n      ignore: [/items/*/updated_at]\n      noise: true\n      max_body_bytes: 64KiB\n",
        ))
        .unwrap()
        .config;
        let s = &c.routes[0].shadow;
        assert_eq!(s.sample, 50.0);
        assert_eq!(s.methods, vec![Method::GET, Method::POST]);
        assert_eq!(s.strip_headers[0].as_str(), "authorization");
        assert!(s.noise);
        assert_eq!(s.max_body_bytes, 64 * 1024);
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    shadow: {ignore: [items]}\n",
        ));
        assert!(e.message.contains("JSON path"));
        let e = one_error(&format!("{BASE}shadow:\n  max_in_flight: 0\n"));
        assert!(e.message.contains("max_in_flight"));
    }

    #[test]
    fn limits() {
        let c = parse(&format!(
            "{BASE}limits:\n  max_head_bytes: 32KiB\n  idle_timeout: 5s\n"
        ))
        .unwrap()
        .config;
        assert_eq!(c.limits.max_head_bytes, 32 * 1024);
        let e = one_error(&format!("{BASE}limits:\n  max_headers: -3\n"));
        assert!(e.message.contains("max_headers"));
    }

    /// Edge settings: certificates are made here, in a temp dir the YAML points into.
    mod edge {
        use super::super::super::parse_at;
        use super::*;

        struct Certs {
            dir: tempfile::TempDir,
        }

        fn certs() -> Certs {
            let dir = tempfile::tempdir().unwrap();
            for (name, host) in [("a", "a.example"), ("b", "b.example")] {
                let key = rcgen::KeyPair::generate().unwrap();
                let cert = rcgen::CertificateParams::new(vec![host.to_string()])
                    .unwrap()
                    .self_signed(&key)
                    .unwrap();
                std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
                std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())
                    .unwrap();
            }
            std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
            Certs { dir }
        }

        impl Certs {
            fn parse(&self, yaml: &str) -> Result<Checked, Vec<Diagnostic>> {
                parse_at(yaml, self.dir.path())
            }

            fn one_error(&self, yaml: &str) -> Diagnostic {
                let errs: Vec<Diagnostic> = self
                    .parse(yaml)
                    .unwrap_err()
                    .into_iter()
                    .filter(|d| d.severity == Severity::Error)
                    .collect();
                assert_eq!(errs.len(), 1, "{errs:#?}");
                errs.into_iter().next().unwrap()
            }
        }

        use super::super::super::Checked;

        #[test]
        fn tls_with_sni_and_redirect_loads_relative_to_the_config_dir() {
            let c = certs();
            let cfg = c
                .parse(&format!("{BASE}tls:\n  cert: a.crt\n  key: a.key\n  sni:\n    B.example: {{cert: b.crt, key: b.key}}\n  redirect_http: 127.0.0.1:8081\n"))
                .unwrap()
                .config;
            let tls = cfg.tls.unwrap();
            assert_eq!(tls.cert, c.dir.path().join("a.crt"));
            assert_eq!(tls.sni, vec!["b.example".to_string()]);
            assert_eq!(tls.redirect_http, Some("127.0.0.1:8081".parse().unwrap()));
            assert_eq!(
                tls.server.alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }

        #[test]
        fn tls_a_bad_certificate_points_at_cert() {
            let c = certs();
            let e = c.one_error(&format!("{BASE}tls:\n  cert: garbage.pem\n  key: a.key\n"));
            assert_eq!((e.line, e.col), (6, 9), "{e:?}");
            let e = c.one_error(&format!("{BASE}tls:\n  cert: missing.crt\n  key: a.key\n"));
            assert_eq!((e.line, e.col), (6, 9), "{e:?}");
        }

        #[test]
        fn tls_a_key_of_another_certificate_points_at_key() {
            let c = certs();
            let e = c.one_error(&format!("{BASE}tls:\n  cert: a.crt\n  key: b.key\n"));
            assert_eq!((e.line, e.col), (7, 8), "{e:?}");
            assert!(e.message.contains("does not match"), "{e:?}");
        }

        #[test]
        fn tls_needs_cert_and_key() {
            let c = certs();
            let e = c.one_error(&format!("{BASE}tls:\n  cert: a.crt\n"));
            assert!(e.message.contains("`key`"), "{e:?}");
        }

        #[test]
        fn tls_sni_checks_the_host_name_and_its_pair() {
            let c = certs();
            let e = c.one_error(&format!(
                "{BASE}tls:\n  cert: a.crt\n  key: a.key\n  sni:\n    'bad name!': {{cert: b.crt, key: b.key}}\n"
            ));
            assert!(e.message.contains("invalid SNI host name"), "{e:?}");
            let e = c.one_error(&format!(
                "{BASE}tls:\n  cert: a.crt\n  key: a.key\n  sni:\n    b.example: {{cert: garbage.pem, key: b.key}}\n"
            ));
            assert_eq!(e.line, 9, "{e:?}");
        }

        #[test]
        fn tls_redirect_http_must_be_an_address() {
            let c = certs();
            let e = c.one_error(&format!(
                "{BASE}tls:\n  cert: a.crt\n  key: a.key\n  redirect_http: port80\n"
            ));
            assert!(e.message.contains("redirect_http"), "{e:?}");
        }

        #[test]
        fn https_upstream_with_a_ca() {
            let c = certs();
            let cfg = c
                .parse("upstreams:\n  legacy: {url: 'https://a.example:8443/', ca: a.crt}\nfallback: legacy\n")
                .unwrap()
                .config;
            let tls = cfg.upstreams["legacy"].tls.clone().unwrap();
            assert_eq!(tls.ca, Some(c.dir.path().join("a.crt")));
            assert_eq!(tls.anchors.len(), 64);
            assert_eq!(cfg.upstreams["legacy"].scheme(), "https");
        }

        #[test]
        fn upstream_ca_must_load_and_needs_https() {
            let c = certs();
            let e = c.one_error(
                "upstreams:\n  legacy: {url: 'https://x', ca: garbage.pem}\nfallback: legacy\n",
            );
            assert_eq!(e.line, 2);
            assert!(e.message.contains("ca of upstream"), "{e:?}");
            let e = c.one_error(
                "upstreams:\n  legacy: {url: 'http://x', ca: a.crt}\nfallback: legacy\n",
            );
            assert!(e.message.contains("not https"), "{e:?}");
        }

        #[test]
        fn trusted_proxies_are_addresses_or_ranges() {
            let cfg = parse(&format!(
                "{BASE}trusted_proxies: [10.0.0.0/8, 192.0.2.7, 'fd00::/8']\n"
            ))
            .unwrap()
            .config;
            assert_eq!(cfg.trusted_proxies.len(), 3);
            assert_eq!(cfg.trusted_proxies[1].to_string(), "192.0.2.7/32");
            let e = one_error(&format!(
                "{BASE}trusted_proxies: [10.0.0.0/8, 10.0.0.0/40]\n"
            ));
            assert_eq!((e.line, e.col), (5, 31), "{e:?}");
            let e = one_error(&format!("{BASE}trusted_proxies: 10.0.0.0/8\n"));
            assert!(e.message.contains("must be a list"), "{e:?}");
        }

        #[test]
        fn admin_token_file_is_read_and_must_not_be_empty() {
            let c = certs();
            std::fs::write(c.dir.path().join("token"), "abc123\n").unwrap();
            std::fs::write(c.dir.path().join("empty"), "\n").unwrap();
            let cfg = c
                .parse(&format!("{BASE}admin_token_file: token\n"))
                .unwrap()
                .config;
            assert_eq!(cfg.admin_token.unwrap().secret, "abc123");
            let e = c.one_error(&format!("{BASE}admin_token_file: empty\n"));
            assert!(e.message.contains("empty"), "{e:?}");
            let e = c.one_error(&format!("{BASE}admin_token_file: nope\n"));
            assert!(e.message.contains("cannot read"), "{e:?}");
        }

        #[test]
        fn an_admin_off_loopback_without_a_token_warns() {
            let c = certs();
            // Only when the environment holds no token either.
            if std::env::var_os(ADMIN_TOKEN_ENV).is_some() {
                return;
            }
            let w = c
                .parse(&format!("admin: 0.0.0.0:9901\n{BASE}"))
                .unwrap()
                .warnings;
            assert_eq!(w.len(), 1, "{w:?}");
            assert_eq!((w[0].line, w[0].col), (1, 8));
            std::fs::write(c.dir.path().join("token"), "abc").unwrap();
            let w = c
                .parse(&format!(
                    "admin: 0.0.0.0:9901\n{BASE}admin_token_file: token\n"
                ))
                .unwrap()
                .warnings;
            assert!(w.is_empty(), "{w:?}");
            assert!(parse(&format!("admin: 127.0.0.1:9901\n{BASE}"))
                .unwrap()
                .warnings
                .is_empty());
        }

        #[test]
        fn route_max_body_bytes_and_timeout() {
            let cfg = parse(&with_route(
                "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    max_body_bytes: 1MiB\n    timeout: 250ms\n",
            ))
            .unwrap()
            .config;
            assert_eq!(cfg.routes[0].max_body_bytes, Some(1024 * 1024));
            assert_eq!(
                cfg.routes[0].timeout,
                Some(std::time::Duration::from_millis(250))
            );
            let e = one_error(&with_route(
                "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    max_body_bytes: lots\n",
            ));
            assert!(e.message.contains("max_body_bytes"), "{e:?}");
            let e = one_error(&with_route(
                "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    timeout: 0s\n",
            ));
            assert!(e.message.contains("timeout"), "{e:?}");
        }
    }

    #[test]
    fn resilience_settings() {
        let yaml = "upstreams:\n  legacy: http://127.0.0.1:8081\n  catalog:\n    urls: [http://127.0.0.1:8082, http://127.0.0.1:8092]\n    balance: least_requests\n    circuit_breaker: {consecutive_failures: 3, open_for: 2s}\n    outlier: true\nfallback: legacy\nroutes:\n  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    mode: extracted\n    failover: {on: [connect, timeout, 5xx]}\n    retries: {attempts: 3, budget: 10}\n    promote: {steps: [10, 50, 100], dwell: 1s, min_requests: 5}\n";
        let c = parse(yaml).unwrap().config;
        let up = &c.upstreams["catalog"];
        assert_eq!(up.endpoints.len(), 2);
        assert_eq!(up.balance, Balance::LeastRequests);
        assert_eq!(up.circuit_breaker.as_ref().unwrap().consecutive_failures, 3);
        assert!(up.outlier.is_some());
        let r = &c.routes[0];
        assert_eq!(r.failover.as_ref().unwrap().on.len(), 3);
        assert_eq!(r.retries.as_ref().unwrap().attempts, 3);
        assert_eq!(r.promote.as_ref().unwrap().steps, vec![10.0, 50.0, 100.0]);
    }

    #[test]
    fn resilience_errors() {
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    failover: {on: [sometimes]}\n",
        ));
        assert!(e.message.contains("connect, timeout"));
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    retries: {attempts: 9}\n",
        ));
        assert!(e.message.contains("attempts"));
        let e = one_error(&with_route(
            "  - name: a\n    match: {prefix: /a}\n    upstream: catalog\n    promote: {steps: [50, 10]}\n",
        ));
        assert!(e.message.contains("rising"));
        let e = one_error("upstreams:\n  legacy: {urls: []}\nfallback: legacy\n");
        assert!(e.message.contains("non-empty"));
        let e = one_error(
            "upstreams:\n  legacy: {url: 'http://a:1', balance: random}\nfallback: legacy\n",
        );
        assert!(e.message.contains("balance"));
    }
}
