//! A cheap monotonic clock for bookkeeping that counts in seconds: idle and header-read
//! timeouts, and idle pooled connections.
//!
//! `CLOCK_MONOTONIC_COARSE` is read from the vDSO without touching the TSC; its resolution
//! is the kernel tick (a few milliseconds). The hot path reads the time several times per
//! request, and none of these readers needs better.

/// Milliseconds since an arbitrary fixed point (the system's boot, on Linux).
pub fn now_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs * 1000 + nanos / 1_000_000
}

#[cfg(test)]
mod tests {
    #[test]
    fn moves_forward_with_the_precise_clock() {
        let start = (super::now_ms(), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(30));
        let coarse = super::now_ms() - start.0;
        let precise = start.1.elapsed().as_millis() as u64;
        // Within a few ticks of each other (a tick is at most 10 ms).
        assert!(
            coarse + 20 >= precise && coarse <= precise + 20,
            "{coarse} vs {precise}"
        );
    }
}
