//! A per-upstream circuit breaker: opens after failures in a row or an error rate over a
//! window, fails fast while open, then lets one probe through (half-open): its success closes
//! the circuit, its failure opens it again.

use std::sync::Mutex;
use std::time::Instant;

use crate::config::BreakerPolicy;
use crate::lock::lock;

/// The breaker's state, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Requests flow.
    Closed,
    /// Requests fail fast.
    Open,
    /// One probe is allowed through.
    HalfOpen,
}

#[derive(Debug)]
struct State {
    phase: Phase,
    opened_at: Instant,
    probe_started: Option<Instant>,
    consecutive: u32,
    window_start: Instant,
    total: u32,
    failures: u32,
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        let now = Instant::now();
        Breaker {
            state: Mutex::new(State {
                phase: Phase::Closed,
                opened_at: now,
                probe_started: None,
                consecutive: 0,
                window_start: now,
                total: 0,
                failures: 0,
            }),
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether a request may go to the upstream now.
    pub fn allow(&self, policy: &BreakerPolicy) -> bool {
        self.allow_with_change(policy).0
    }

    /// Whether a request may go to the upstream now, and the new phase when letting it
    /// through moved the breaker to half-open.
    pub fn allow_with_change(&self, policy: &BreakerPolicy) -> (bool, Option<Phase>) {
        let mut s = self.lock();
        let now = Instant::now();
        let allowed = match s.phase {
            Phase::Closed => true,
            Phase::Open if now.duration_since(s.opened_at) >= policy.open_for => {
                s.phase = Phase::HalfOpen;
                s.probe_started = Some(now);
                return (true, Some(Phase::HalfOpen));
            }
            Phase::Open => false,
            // One probe at a time; a probe that never reported back is replaced after a while.
            Phase::HalfOpen => match s.probe_started {
                Some(t) if now.duration_since(t) < policy.open_for => false,
                _ => {
                    s.probe_started = Some(now);
                    true
                }
            },
        };
        (allowed, None)
    }

    /// Records a request's outcome. Returns the new phase when it changed.
    pub fn record(&self, policy: &BreakerPolicy, ok: bool) -> Option<Phase> {
        let mut s = self.lock();
        let now = Instant::now();
        let before = s.phase;
        if now.duration_since(s.window_start) >= policy.window {
            s.window_start = now;
            s.total = 0;
            s.failures = 0;
        }
        s.total += 1;
        if ok {
            s.consecutive = 0;
        } else {
            s.consecutive += 1;
            s.failures += 1;
        }
        match (s.phase, ok) {
            (Phase::HalfOpen, true) => {
                s.phase = Phase::Closed;
                s.window_start = now;
                s.total = 0;
                s.failures = 0;
            }
            (Phase::HalfOpen, false) => open(&mut s, now),
            (Phase::Closed, false) => {
                let rate_tripped = s.total >= policy.min_requests
                    && u64::from(s.failures) * 100
                        >= u64::from(s.total) * u64::from(policy.error_rate);
                if s.consecutive >= policy.consecutive_failures || rate_tripped {
                    open(&mut s, now);
                }
            }
            _ => {}
        }
        (s.phase != before).then_some(s.phase)
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.lock().phase
    }
}

fn open(s: &mut State, now: Instant) {
    s.phase = Phase::Open;
    s.opened_at = now;
    s.probe_started = None;
    s.consecutive = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            error_rate: 50,
            min_requests: 10,
            window: Duration::from_secs(60),
            open_for: Duration::from_millis(50),
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_and_half_opens() {
        let b = Breaker::default();
        let p = policy();
        b.record(&p, false);
        b.record(&p, false);
        assert!(b.allow(&p));
        assert_eq!(b.record(&p, false), Some(Phase::Open));
        assert!(!b.allow(&p));
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(&p), "one probe after open_for");
        assert_eq!(b.phase(), Phase::HalfOpen);
        assert!(!b.allow(&p), "only one probe at a time");
        assert_eq!(b.record(&p, true), Some(Phase::Closed));
        assert!(b.allow(&p));
    }

    #[test]
    fn a_failed_probe_opens_again() {
        let b = Breaker::default();
        let p = policy();
        for _ in 0..3 {
            b.record(&p, false);
        }
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.allow(&p));
        assert_eq!(b.record(&p, false), Some(Phase::Open));
        assert!(!b.allow(&p));
    }

    #[test]
    fn opens_on_error_rate() {
        let b = Breaker::default();
        let p = policy();
        for i in 0..10 {
            // Alternate, so never three in a row: 50% over 10 requests.
            b.record(&p, i % 2 == 0);
        }
        assert_eq!(b.phase(), Phase::Open);
    }
}
