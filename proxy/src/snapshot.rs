//! One config snapshot: the validated config plus everything compiled from it (matcher,
//! metric labels, upstream targets), built completely before it is swapped in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::balance::{self, Endpoint};
use crate::config::{Config, Upstream};
use crate::health::{Registry, UpstreamHealth};
use crate::matcher::Matcher;
use crate::metrics::Name;
use crate::promotion::{Promotions, RoutePromotion};

/// An upstream ready to receive requests.
#[derive(Debug)]
pub struct Target {
    /// Name, as a metric label.
    pub name: Name,
    /// Where it is and its timeouts.
    pub upstream: Upstream,
    /// Its circuit breaker, retry budget and instances' state (shared across snapshots).
    pub health: Arc<UpstreamHealth>,
    /// Its instances.
    pub endpoints: Vec<Arc<Endpoint>>,
}

impl Target {
    /// A target with its live state from `registry`.
    pub fn new(upstream: Upstream, registry: &Registry) -> Target {
        let health = registry.upstream(&upstream.name);
        Target {
            name: Name::from(upstream.name.as_str()),
            endpoints: health.endpoints(&upstream.endpoints),
            health,
            upstream,
        }
    }

    /// The instance for the next request.
    pub fn pick(&self) -> &Arc<Endpoint> {
        balance::pick(&self.endpoints, self.upstream.balance)
    }
}

/// Runtime view of a route: its label and its upstream.
#[derive(Debug)]
pub struct RouteTarget {
    /// Route name, as a metric label.
    pub name: Name,
    /// The route's own upstream.
    pub upstream: Arc<Target>,
    /// Its promotion plan's live state, when it has a plan.
    pub promotion: Option<Arc<RoutePromotion>>,
}

/// A config and everything compiled from it. Requests keep the snapshot they started on.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// The route index.
    pub matcher: Matcher,
    /// Per route (same order as `config.routes`).
    pub routes: Vec<RouteTarget>,
    /// The fallback upstream.
    pub fallback: Arc<Target>,
    /// Label used for requests no route covers.
    pub fallback_route: Name,
    /// When this snapshot was loaded.
    pub loaded_at: SystemTime,
    /// The file it came from.
    pub source: PathBuf,
}

impl Snapshot {
    /// Compiles `config`. Validation guarantees every upstream name resolves.
    pub fn build(
        config: Config,
        source: PathBuf,
        registry: &Registry,
        promotions: &Promotions,
    ) -> Snapshot {
        let targets: HashMap<&str, Arc<Target>> = config
            .upstreams
            .values()
            .map(|u| (u.name.as_str(), Arc::new(Target::new(u.clone(), registry))))
            .collect();
        let target = |name: &str| {
            targets
                .get(name)
                .cloned()
                .unwrap_or_else(|| unreachable_target(name, registry))
        };
        let plans = promotions.sync(&config.routes);
        let routes = config
            .routes
            .iter()
            .zip(plans)
            .map(|(r, promotion)| RouteTarget {
                name: Name::from(r.name.as_str()),
                upstream: target(&r.upstream),
                promotion,
            })
            .collect();
        let fallback = target(&config.fallback);
        Snapshot {
            matcher: Matcher::new(&config.routes),
            routes,
            fallback,
            fallback_route: Name::from(crate::metrics::FALLBACK_ROUTE),
            config,
            loaded_at: SystemTime::now(),
            source,
        }
    }
}

// Validation rejects configs naming unknown upstreams; should one slip through, requests to it
// fail with 502 rather than the proxy panicking.
fn unreachable_target(name: &str, registry: &Registry) -> Arc<Target> {
    tracing::error!(
        upstream = name,
        "route names an upstream that does not exist"
    );
    let url = "http://127.0.0.1:0".to_string();
    let upstream = Upstream {
        name: name.to_string(),
        url: url.clone(),
        endpoints: vec![crate::config::EndpointAddr {
            url,
            origin: http::uri::Authority::from_static("127.0.0.1:0"),
            base_path: String::new(),
        }],
        timeout: crate::config::DEFAULT_TIMEOUT,
        connect_timeout: crate::config::DEFAULT_CONNECT_TIMEOUT,
        tls: None,
        balance: crate::config::Balance::P2c,
        circuit_breaker: None,
        outlier: None,
    };
    Arc::new(Target::new(upstream, registry))
}
