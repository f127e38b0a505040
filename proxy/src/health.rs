//! Live health of each upstream: its circuit breaker, its retry budget and its instances'
//! state. Kept across reloads (by upstream name, and instance URL), so a reload neither
//! closes an open circuit nor forgets an ejection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::balance::{self, Endpoint};
use crate::breaker::{Breaker, Phase};
use crate::config::EndpointAddr;
use crate::lock::lock;
use crate::retry::Budget;

/// One upstream's live state.
#[derive(Debug, Default)]
pub struct UpstreamHealth {
    /// Its circuit breaker (used when the upstream configures one).
    pub breaker: Breaker,
    /// Its retry budget.
    pub budget: Budget,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl UpstreamHealth {
    /// The endpoints for these addresses, reusing the state of those already known.
    pub fn endpoints(&self, addrs: &[EndpointAddr]) -> Vec<Arc<Endpoint>> {
        let mut known = lock(&self.endpoints);
        let out: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|a| {
                known
                    .entry(a.url.clone())
                    .or_insert_with(|| Arc::new(Endpoint::new(a.clone())))
                    .clone()
            })
            .collect();
        known.retain(|url, _| addrs.iter().any(|a| &a.url == url));
        out
    }

    /// The state for the admin API.
    pub fn to_json(&self, endpoints: &[Arc<Endpoint>]) -> Value {
        let now = balance::now_ms();
        let circuit = match self.breaker.phase() {
            Phase::Closed => "closed",
            Phase::Open => "open",
            Phase::HalfOpen => "half_open",
        };
        json!({
            "circuit": circuit,
            "instances": endpoints.iter().map(|e| json!({
                "url": e.addr.url,
                "in_flight": e.in_flight(),
                "ejected": e.is_ejected(now),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Every upstream's live state.
#[derive(Debug, Default)]
pub struct Registry {
    upstreams: Mutex<HashMap<String, Arc<UpstreamHealth>>>,
}

impl Registry {
    /// The state of the upstream named `name`.
    pub fn upstream(&self, name: &str) -> Arc<UpstreamHealth> {
        lock(&self.upstreams)
            .entry(name.to_string())
            .or_default()
            .clone()
    }
}
