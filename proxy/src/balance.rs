//! An upstream's instances: picking one per request (power of two choices or least
//! requests) and passive outlier ejection (an instance that keeps failing is taken out of
//! rotation for a while, longer each time).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Balance, EndpointAddr, OutlierPolicy};

/// One instance and its live state (kept across reloads while its URL stays).
#[derive(Debug)]
pub struct Endpoint {
    /// Where it is.
    pub addr: EndpointAddr,
    in_flight: AtomicUsize,
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`epoch`] until which it is ejected (0: in rotation).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

/// Marks a request in flight on an endpoint until dropped.
pub struct InFlight<'a>(&'a Endpoint);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since the process's balance epoch.
pub fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Endpoint {
    /// A new endpoint, in rotation.
    pub fn new(addr: EndpointAddr) -> Self {
        Endpoint {
            addr,
            in_flight: AtomicUsize::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Whether it is out of rotation at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// Picks the instance for one request among those in rotation (all of them, should every
/// one be ejected).
pub fn pick(endpoints: &[Arc<Endpoint>], balance: Balance) -> &Arc<Endpoint> {
    if endpoints.len() == 1 {
        return &endpoints[0];
    }
    let now = now_ms();
    let live: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| !e.is_ejected(now)).collect();
    let pool: Vec<&Arc<Endpoint>> = if live.is_empty() {
        endpoints.iter().collect()
    } else {
        live
    };
    match (balance, pool.len()) {
        (_, 1) => pool[0],
        (Balance::P2c, n) => {
            let a = fastrand::usize(..n);
            let b = (a + 1 + fastrand::usize(..n - 1)) % n;
            if pool[b].in_flight() < pool[a].in_flight() {
                pool[b]
            } else {
                pool[a]
            }
        }
        (Balance::LeastRequests, n) => {
            // Start at a random place so ties spread.
            let start = fastrand::usize(..n);
            (0..n)
                .map(|i| pool[(start + i) % n])
                .min_by_key(|e| e.in_flight())
                .unwrap_or(pool[0])
        }
    }
}

/// Records the outcome of a request on `endpoint`; with outlier ejection on, ejects it after
/// enough failures in a row (never more than the policy's share of the instances, and never
/// the last one). Returns the ejection time when it ejected.
pub fn record(
    endpoint: &Endpoint,
    ok: bool,
    all: &[Arc<Endpoint>],
    policy: Option<&OutlierPolicy>,
) -> Option<Duration> {
    if ok {
        // Read first: a store on every request would pull the line from the other cores.
        if endpoint.consecutive_failures.load(Ordering::Relaxed) != 0 {
            endpoint.consecutive_failures.store(0, Ordering::Relaxed);
        }
        return None;
    }
    let failures = endpoint
        .consecutive_failures
        .fetch_add(1, Ordering::Relaxed)
        + 1;
    let policy = policy?;
    let now = now_ms();
    if all.len() < 2 || failures < policy.consecutive_failures || endpoint.is_ejected(now) {
        return None;
    }
    let ejected = all.iter().filter(|e| e.is_ejected(now)).count();
    let max = ((all.len() as u64 * u64::from(policy.max_ejected_percent)) / 100).max(1) as usize;
    if ejected >= max.min(all.len() - 1) {
        return None;
    }
    let times = endpoint.ejections.fetch_add(1, Ordering::Relaxed).min(10);
    let duration = policy.eject_for.saturating_mul(1 << times);
    endpoint
        .ejected_until
        .store(now + duration.as_millis() as u64, Ordering::Relaxed);
    endpoint.consecutive_failures.store(0, Ordering::Relaxed);
    Some(duration)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint::new(EndpointAddr {
                    url: format!("http://127.0.0.1:{}", 1000 + i),
                    origin: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    base_path: String::new(),
                }))
            })
            .collect()
    }

    #[test]
    fn least_requests_prefers_the_idle_instance() {
        let eps = endpoints(3);
        let _busy: Vec<InFlight> = vec![eps[0].start(), eps[1].start()];
        for _ in 0..20 {
            assert_eq!(pick(&eps, Balance::LeastRequests).addr.url, eps[2].addr.url);
        }
    }

    #[test]
    fn p2c_never_picks_the_busiest_of_two() {
        let eps = endpoints(2);
        let _busy = eps[0].start();
        for _ in 0..20 {
            assert_eq!(pick(&eps, Balance::P2c).addr.url, eps[1].addr.url);
        }
    }

    #[test]
    fn failing_instance_is_ejected_and_skipped() {
        let eps = endpoints(3);
        let policy = OutlierPolicy {
            consecutive_failures: 2,
            eject_for: Duration::from_secs(60),
            max_ejected_percent: 50,
        };
        assert!(record(&eps[0], false, &eps, Some(&policy)).is_none());
        assert!(record(&eps[0], false, &eps, Some(&policy)).is_some());
        for _ in 0..50 {
            assert_ne!(pick(&eps, Balance::P2c).addr.url, eps[0].addr.url);
        }
        // At most half: a second failing instance stays in rotation.
        record(&eps[1], false, &eps, Some(&policy));
        assert!(record(&eps[1], false, &eps, Some(&policy)).is_none());
    }

    #[test]
    fn success_resets_the_count() {
        let eps = endpoints(2);
        let policy = OutlierPolicy {
            consecutive_failures: 2,
            ..OutlierPolicy::default()
        };
        record(&eps[0], false, &eps, Some(&policy));
        record(&eps[0], true, &eps, Some(&policy));
        assert!(record(&eps[0], false, &eps, Some(&policy)).is_none());
    }
}
