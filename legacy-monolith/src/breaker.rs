//! A circuit breaker: after `threshold` failures in a row the remote service is presumed down
//! and calls fail at once for `cool_down`, instead of each one waiting out connect timeouts and
//! retries. Then one trial call is let through: success closes the circuit, failure opens it
//! again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Breaker tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the circuit.
    pub threshold: u32,
    /// How long an open circuit fails fast before a trial call.
    pub cool_down: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            threshold: 5,
            cool_down: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out since `since`; a trial that never reports back (its future was
    /// dropped) is given up on after a cool-down, so the breaker cannot wedge half-open.
    HalfOpen {
        since: Instant,
    },
}

/// A circuit breaker; share it between the calls to one service.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    state: Mutex<State>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go out now.
    pub fn allow(&self) -> bool {
        let mut state = self.state();
        let now = Instant::now();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { since } if now >= since + self.settings.cool_down => {
                *state = State::HalfOpen { since: now };
                true
            }
            State::HalfOpen { .. } => false,
        }
    }

    /// The service answered.
    pub fn success(&self) {
        *self.state() = State::Closed { failures: 0 };
    }

    /// The service did not answer, or failed.
    pub fn failure(&self) {
        let mut state = self.state();
        let open = State::Open {
            until: Instant::now() + self.settings.cool_down,
        };
        *state = match *state {
            State::Closed { failures } if failures + 1 >= self.settings.threshold => open,
            State::Closed { failures } => State::Closed {
                failures: failures + 1,
            },
            State::HalfOpen { .. } | State::Open { .. } => open,
        };
    }

    /// Whether calls are being refused now.
    pub fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { until } if Instant::now() < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings {
            threshold: 3,
            cool_down: Duration::from_secs(10),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_failures_in_a_row() {
        let b = breaker();
        b.failure();
        b.failure();
        b.success(); // a success resets the count
        b.failure();
        b.failure();
        assert!(b.allow());
        b.failure();
        assert!(b.is_open());
        assert!(!b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_trial_through() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        assert!(!b.allow());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow(), "trial after the cool-down");
        assert!(!b.allow(), "only one trial at a time");
        b.failure();
        assert!(!b.allow(), "a failed trial opens it again");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        b.success();
        assert!(b.allow() && b.allow(), "a good trial closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_trial_does_not_wedge_it() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        // The trial's future is dropped: neither success nor failure is reported.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
    }
}
