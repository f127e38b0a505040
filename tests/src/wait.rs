//! Bounded waiting for things that happen asynchronously, such as a reload taking effect.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns true; panics with `what` if it is still false
/// after `within`.
pub async fn eventually<F>(within: Duration, what: &str, mut check: F)
where
    F: AsyncFnMut() -> bool,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
