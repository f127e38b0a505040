//! `strangler explain`: which route, mode and upstream would serve a request, and why.

use http::{HeaderMap, Method};
use serde::Serialize;

use crate::canary;
use crate::config::{Config, Mode};
use crate::matcher::Matcher;
use crate::normalize::normalize_path;

/// The answer of `explain`, also its `--json` form.
#[derive(Debug, Serialize, PartialEq)]
pub struct Explanation {
    /// The normalized path.
    pub path: String,
    /// The matched route, or `None` when the request falls through.
    pub route: Option<String>,
    /// The route's mode.
    pub mode: Option<Mode>,
    /// The route's upstream, or the fallback when no route matches.
    pub upstream: String,
    /// A canary's share in percent.
    #[serde(serialize_with = "crate::config::percent_number")]
    pub percent: Option<f64>,
    /// The sticky key's bucket (0..9999), when the route is a canary and the key was given.
    pub bucket: Option<u32>,
    /// `upstream` or `fallback`: which serves this request; `None` when that is random.
    pub side: Option<&'static str>,
    /// The sticky key's source, for the text form.
    #[serde(skip)]
    pub sticky: Option<String>,
    /// The upstream that serves, for the text form.
    #[serde(skip)]
    pub serving: Option<String>,
}

/// Explains a request. `target` may carry a query, which does not take part in routing.
pub fn explain(
    config: &Config,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
) -> Result<Explanation, String> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let path =
        normalize_path(path).map_err(|e| format!("the proxy would answer 400: bad path: {e}"))?;
    let matcher = Matcher::new(&config.routes);
    let Some(i) = matcher.find(&config.routes, &path, method, headers) else {
        return Ok(Explanation {
            path,
            route: None,
            mode: None,
            upstream: config.fallback.clone(),
            percent: None,
            bucket: None,
            side: Some("fallback"),
            sticky: None,
            serving: Some(config.fallback.clone()),
        });
    };
    let route = &config.routes[i];
    let share = route.share_bp();
    let key = route
        .sticky
        .as_ref()
        .and_then(|s| canary::sticky_key(s, headers));
    let bucket = match route.mode {
        Mode::Canary => key.map(canary::bucket),
        _ => None,
    };
    let side = match route.mode {
        Mode::Legacy | Mode::Shadow => Some("fallback"),
        Mode::Extracted => Some("upstream"),
        Mode::Canary => match bucket {
            Some(b) if b < share => Some("upstream"),
            Some(_) => Some("fallback"),
            None if share == 0 => Some("fallback"),
            None if share >= canary::BUCKETS => Some("upstream"),
            None => None,
        },
    };
    let serving = match side {
        Some("upstream") => Some(route.upstream.clone()),
        Some(_) => Some(config.fallback.clone()),
        None => None,
    };
    Ok(Explanation {
        path,
        route: Some(route.name.clone()),
        mode: Some(route.mode),
        upstream: route.upstream.clone(),
        percent: (route.mode == Mode::Canary)
            .then_some(route.percent)
            .flatten(),
        bucket,
        side,
        sticky: route.sticky.as_ref().map(|s| s.to_string()),
        serving,
    })
}

impl Explanation {
    /// The text form of `explain`, for a person.
    pub fn to_text(&self, config: &Config) -> String {
        let mut out = format!("path:      {}\n", self.path);
        let url = |name: &str| {
            config
                .upstream(name)
                .map(|u| u.url.clone())
                .unwrap_or_default()
        };
        match &self.route {
            None => {
                out.push_str("route:     none: falls through to the fallback\n");
                out.push_str(&format!(
                    "upstream:  {} ({})\n",
                    self.upstream,
                    url(&self.upstream)
                ));
            }
            Some(name) => {
                let m = config
                    .routes
                    .iter()
                    .find(|r| &r.name == name)
                    .map(|r| &r.matcher);
                let rule = match m.map(|m| &m.path) {
                    Some(crate::config::PathMatch::Exact(p)) => format!("exact {p}"),
                    Some(crate::config::PathMatch::Prefix(p)) => format!("prefix {p}"),
                    None => String::new(),
                };
                out.push_str(&format!("route:     {name} ({rule})\n"));
                if let Some(mode) = self.mode {
                    out.push_str(&format!("mode:      {}\n", mode.as_str()));
                }
                out.push_str(&format!(
                    "upstream:  {} ({})\n",
                    self.upstream,
                    url(&self.upstream)
                ));
                if let Some(p) = self.percent {
                    out.push_str(&format!("percent:   {p}\n"));
                }
                match (self.bucket, &self.sticky) {
                    (Some(b), Some(s)) => out.push_str(&format!(
                        "bucket:    {b} of 10000 (key from {s}; upstream when bucket < {})\n",
                        (self.percent.unwrap_or(0.0) * 100.0).round()
                    )),
                    (None, Some(s)) if self.mode == Some(Mode::Canary) => {
                        out.push_str(&format!("bucket:    no key given ({s}): split at random\n"))
                    }
                    _ => {}
                }
            }
        }
        match (&self.side, &self.serving) {
            (Some(side), Some(serving)) => {
                out.push_str(&format!("served by: {serving} ({side})\n"))
            }
            _ => out.push_str("served by: random per request, in the canary's proportion\n"),
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(
            "upstreams:\n  legacy: http://127.0.0.1:1\n  new: http://127.0.0.1:2\nfallback: legacy\nroutes:\n  - name: c\n    match: {prefix: /c}\n    upstream: new\n    mode: canary\n    percent: 50\n    sticky: header:x-user-id\n",
        )
        .unwrap()
        .config
    }

    #[test]
    fn canary_with_key_has_bucket_and_side() {
        let c = config();
        let mut h = HeaderMap::new();
        h.insert("x-user-id", "alice".parse().unwrap());
        let e = explain(&c, &Method::GET, "/c/../c/1?x=1", &h).unwrap();
        assert_eq!(e.path, "/c/1");
        let b = canary::bucket(b"alice");
        assert_eq!(e.bucket, Some(b));
        assert_eq!(e.side, Some(if b < 5000 { "upstream" } else { "fallback" }));
    }

    #[test]
    fn canary_without_key_is_random() {
        let e = explain(&config(), &Method::GET, "/c", &HeaderMap::new()).unwrap();
        assert_eq!((e.bucket, e.side), (None, None));
    }

    #[test]
    fn unmatched_goes_to_the_fallback() {
        let e = explain(&config(), &Method::GET, "/x", &HeaderMap::new()).unwrap();
        assert_eq!(
            (e.route.as_deref(), e.upstream.as_str(), e.side),
            (None, "legacy", Some("fallback"))
        );
    }

    #[test]
    fn bad_paths_are_explained_as_400() {
        assert!(explain(&config(), &Method::GET, "/../x", &HeaderMap::new()).is_err());
    }
}
