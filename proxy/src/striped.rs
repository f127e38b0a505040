//! Request counters and latency histograms striped per worker thread.
//!
//! Every request bumps a counter and a histogram shared by all workers. prometheus-client's
//! own histogram takes a mutex per observation, and its counter is one atomic: with two or
//! more workers serving the same route, those cache lines bounce between cores on every
//! request. Here each worker writes its own cache-line-aligned stripe, and a scrape adds the
//! stripes up, so the exported series are exactly what prometheus-client would export.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Stripes per metric: one per worker, and one shared by every other thread.
static STRIPES: OnceLock<usize> = OnceLock::new();

thread_local! {
    /// The calling worker's stripe (`usize::MAX` off the workers).
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Sizes the stripes for `workers` worker threads. Called once, before any metric is made;
/// later calls change nothing.
pub fn set_workers(workers: usize) {
    let _ = STRIPES.set(workers.max(1) + 1);
}

/// Marks the calling thread as worker `index`.
pub fn enter_worker(index: usize) {
    STRIPE.with(|s| s.set(index));
}

fn stripes() -> usize {
    *STRIPES
        .get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZero::get) + 1)
}

/// The calling thread's stripe among `n`: its own on a worker, the last one elsewhere.
fn stripe(n: usize) -> usize {
    STRIPE.with(Cell::get).min(n - 1)
}

/// One atomic alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Line(AtomicU64);

/// A monotonic counter.
#[derive(Debug, Clone)]
pub struct StripedCounter(Arc<[Line]>);

impl Default for StripedCounter {
    fn default() -> Self {
        StripedCounter((0..stripes()).map(|_| Line::default()).collect())
    }
}

impl StripedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0[stripe(self.0.len())]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUCKETS: usize = LATENCY_BUCKETS.len() + 1;

/// One worker's share of a histogram.
#[derive(Debug, Default)]
#[repr(align(64))]
struct HistogramStripe {
    count: AtomicU64,
    /// In microseconds: a u64 of them lasts 584,000 years of summed latency.
    sum_micros: AtomicU64,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
}

/// A latency histogram over [`LATENCY_BUCKETS`].
#[derive(Debug, Clone)]
pub struct StripedHistogram(Arc<[HistogramStripe]>);

impl Default for StripedHistogram {
    fn default() -> Self {
        StripedHistogram((0..stripes()).map(|_| HistogramStripe::default()).collect())
    }
}

impl StripedHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = &self.0[stripe(self.0.len())];
        let secs = d.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(BUCKETS - 1);
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        s.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Sum in seconds, count, and per-bucket counts (not cumulative) with their bounds.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut count = 0;
        let mut micros = 0u128;
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .map(|b| (b, 0))
            .collect();
        for s in self.0.iter() {
            count += s.count.load(Ordering::Relaxed);
            micros += u128::from(s.sum_micros.load(Ordering::Relaxed));
            for (total, b) in buckets.iter_mut().zip(&s.buckets) {
                total.1 += b.load(Ordering::Relaxed);
            }
        }
        (micros as f64 / 1e6, count, buckets)
    }
}

impl TypedMetric for StripedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for StripedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_add_up_across_threads() {
        let counter = StripedCounter::default();
        let histogram = StripedHistogram::default();
        std::thread::scope(|scope| {
            for worker in 0..3 {
                let (counter, histogram) = (&counter, &histogram);
                scope.spawn(move || {
                    enter_worker(worker);
                    for _ in 0..100 {
                        counter.inc();
                        histogram.observe(Duration::from_millis(2));
                    }
                });
            }
        });
        counter.inc();
        assert_eq!(counter.get(), 301);
        let (sum, count, buckets) = histogram.totals();
        assert_eq!(count, 300);
        assert!((sum - 0.6).abs() < 1e-9);
        // 2 ms falls in the 0.0025 bucket, the third.
        assert_eq!(buckets[2], (0.0025, 300));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 300);
        assert_eq!(buckets.last().map(|b| b.0), Some(f64::INFINITY));
    }
}
