//! Retry budgets and backoff. A budget lets retries add at most a share of the requests an
//! upstream gets (plus a small reserve), as Envoy's and Linkerd's do, so that during an outage
//! retries cannot multiply the load on a failing service.

use std::sync::Mutex;
use std::time::Duration;

/// Retries that can be spent before any request has deposited (and the most ever saved).
const RESERVE: f64 = 10.0;
/// Longest backoff between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One upstream's retry budget.
#[derive(Debug)]
pub struct Budget {
    tokens: Mutex<f64>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            tokens: Mutex::new(RESERVE),
        }
    }
}

impl Budget {
    /// Each request earns `percent`/100 of a retry.
    pub fn deposit(&self, percent: u32) {
        let mut t = crate::lock::lock(&self.tokens);
        *t = (*t + f64::from(percent) / 100.0).min(RESERVE.max(f64::from(percent) / 10.0));
    }

    /// Spends one retry, if the budget has one.
    pub fn withdraw(&self) -> bool {
        let mut t = crate::lock::lock(&self.tokens);
        if *t >= 1.0 {
            *t -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The wait before retry number `attempt` (1-based): exponential from `base`, with full
/// jitter between half and all of it, capped at one second.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(10));
    let capped = exp.min(MAX_BACKOFF);
    capped.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_caps_retries_at_a_share_of_requests() {
        let b = Budget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            b.deposit(20);
            if b.withdraw() {
                retries += 1;
            }
        }
        // 20% of 1000 requests plus the reserve.
        assert!((200..=211).contains(&retries), "{retries}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 1) <= base);
        assert!(backoff(base, 3) >= Duration::from_millis(200));
        assert!(backoff(base, 20) <= MAX_BACKOFF);
    }
}
