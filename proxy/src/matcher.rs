//! The route matcher, compiled once per config.
//!
//! Exact paths and prefixes live in hash maps keyed by path, so a lookup costs one probe for
//! the exact path plus one per segment of the request path, however many routes there are.
//! Each bucket keeps its routes in file order; the first whose methods and headers match wins.
//! Precedence falls out of the probe order: exact, then the longest prefix down to `/`.

use std::collections::HashMap;

use http::{HeaderMap, Method};

use crate::config::{PathMatch, Route};

/// A compiled index over a config's routes.
#[derive(Debug, Default)]
pub struct Matcher {
    exact: HashMap<String, Vec<usize>>,
    prefix: HashMap<String, Vec<usize>>,
}

impl Matcher {
    /// Indexes `routes`; the indices returned by [`Matcher::find`] point into it.
    pub fn new(routes: &[Route]) -> Self {
        let mut m = Matcher::default();
        for (i, route) in routes.iter().enumerate() {
            let (map, path) = match &route.matcher.path {
                PathMatch::Exact(p) => (&mut m.exact, p),
                PathMatch::Prefix(p) => (&mut m.prefix, p),
            };
            map.entry(path.clone()).or_default().push(i);
        }
        m
    }

    /// The index of the route serving a request with this normalized `path`, `method` and
    /// `headers`, or `None` when it falls through to the fallback.
    pub fn find(
        &self,
        routes: &[Route],
        path: &str,
        method: &Method,
        headers: &HeaderMap,
    ) -> Option<usize> {
        let first_match = |ids: Option<&Vec<usize>>| {
            ids?.iter()
                .copied()
                .find(|&i| filters_match(&routes[i], method, headers))
        };
        if let Some(i) = first_match(self.exact.get(path)) {
            return Some(i);
        }
        if self.prefix.is_empty() {
            return None;
        }
        // Longest first: the whole path, then the path cut before each `/` from the right.
        if let Some(i) = first_match(self.prefix.get(path)) {
            return Some(i);
        }
        let bytes = path.as_bytes();
        for end in (1..bytes.len()).rev() {
            if bytes[end] == b'/' {
                if let Some(i) = first_match(self.prefix.get(&path[..end])) {
                    return Some(i);
                }
            }
        }
        if path != "/" {
            return first_match(self.prefix.get("/"));
        }
        None
    }
}

fn filters_match(route: &Route, method: &Method, headers: &HeaderMap) -> bool {
    if let Some(methods) = &route.matcher.methods {
        if !methods.contains(method) {
            return false;
        }
    }
    route.matcher.headers.iter().all(|(name, want)| {
        headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes() == want.as_bytes())
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config;

    fn routes(spec: &str) -> Vec<Route> {
        let yaml = format!("upstreams:\n  legacy: http://127.0.0.1:1\n  new: http://127.0.0.1:2\nfallback: legacy\nroutes:\n{spec}");
        config::parse(&yaml).unwrap().config.routes
    }

    fn find(
        routes: &[Route],
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let m = Matcher::new(routes);
        m.find(
            routes,
            path,
            &Method::from_bytes(method.as_bytes()).unwrap(),
            &h,
        )
        .map(|i| routes[i].name.clone())
    }

    const TABLE: &str = "
  - {name: products, match: {prefix: /api/products}, upstream: new}
  - {name: product-7, match: {exact: /api/products/7}, upstream: new}
  - {name: api, match: {prefix: /api}, upstream: new}
  - {name: api-get, match: {prefix: /api/orders, methods: [GET]}, upstream: new}
  - {name: beta, match: {prefix: /beta, headers: {X-Beta: '1'}}, upstream: new}
  - {name: beta-2, match: {prefix: /beta}, upstream: new}
  - {name: first, match: {prefix: /dup}, upstream: new}
  - {name: second, match: {prefix: /dup, methods: [POST]}, upstream: new}
";

    #[test]
    fn exact_beats_prefix() {
        let r = routes(TABLE);
        assert_eq!(
            find(&r, "GET", "/api/products/7", &[]).as_deref(),
            Some("product-7")
        );
        assert_eq!(
            find(&r, "GET", "/api/products/8", &[]).as_deref(),
            Some("products")
        );
    }

    #[test]
    fn longest_prefix_wins_on_whole_segments() {
        let r = routes(TABLE);
        assert_eq!(
            find(&r, "GET", "/api/products", &[]).as_deref(),
            Some("products")
        );
        assert_eq!(
            find(&r, "GET", "/api/products/", &[]).as_deref(),
            Some("products")
        );
        assert_eq!(
            find(&r, "GET", "/api/productsX", &[]).as_deref(),
            Some("api")
        );
        assert_eq!(find(&r, "GET", "/apix", &[]), None);
        assert_eq!(find(&r, "GET", "/", &[]), None);
    }

    #[test]
    fn methods_fall_back_to_a_shorter_prefix() {
        let r = routes(TABLE);
        assert_eq!(
            find(&r, "GET", "/api/orders/1", &[]).as_deref(),
            Some("api-get")
        );
        assert_eq!(
            find(&r, "POST", "/api/orders/1", &[]).as_deref(),
            Some("api")
        );
    }

    #[test]
    fn headers_filter_case_insensitive_names() {
        let r = routes(TABLE);
        assert_eq!(
            find(&r, "GET", "/beta/x", &[("x-beta", "1")]).as_deref(),
            Some("beta")
        );
        assert_eq!(
            find(&r, "GET", "/beta/x", &[("x-beta", "2")]).as_deref(),
            Some("beta-2")
        );
    }

    #[test]
    fn file_order_among_equals() {
        let r = routes(TABLE);
        assert_eq!(find(&r, "POST", "/dup", &[]).as_deref(), Some("first"));
    }

    #[test]
    fn root_prefix_catches_everything() {
        let r = routes("  - {name: all, match: {prefix: /}, upstream: new}\n");
        assert_eq!(find(&r, "GET", "/", &[]).as_deref(), Some("all"));
        assert_eq!(find(&r, "GET", "/a/b", &[]).as_deref(), Some("all"));
    }

    #[test]
    fn ten_thousand_routes() {
        let mut spec = String::new();
        for i in 0..10_000 {
            spec.push_str(&format!(
                "  - {{name: r{i}, match: {{prefix: /svc/{i}/items}}, upstream: new}}\n"
            ));
        }
        let r = routes(&spec);
        assert_eq!(
            find(&r, "GET", "/svc/9999/items/1", &[]).as_deref(),
            Some("r9999")
        );
        assert_eq!(find(&r, "GET", "/svc/9999/other", &[]), None);
    }
}
