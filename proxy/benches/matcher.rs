//! Route matching with 10, 1,000 and 10,000 routes: a prefix hit deep in the path, an exact
//! hit, and a miss that falls through to the fallback.

mod support;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, Method};
use strangler::config;
use strangler::matcher::Matcher;

/// A prefix route's path (index not a multiple of 4) near the middle of an `n`-route table.
fn prefix_hit_path(n: usize) -> String {
    let mut i = n / 2;
    if i % 4 == 0 {
        i += 1;
    }
    format!("/api/v{}/resource-{i}/items/42/details", i % 3 + 1)
}

/// An exact route's path near the end of an `n`-route table (index a multiple of 4, not 5).
fn exact_hit_path(n: usize) -> String {
    let mut i = (n - 1) / 4 * 4;
    if i % 5 == 0 && i >= 4 {
        i -= 4;
    }
    format!("/api/v{}/resource-{i}", i % 3 + 1)
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let headers = HeaderMap::new();
    let method = Method::GET;
    for n in [10usize, 1_000, 10_000] {
        let checked = match config::parse(&support::routes_yaml(n)) {
            Ok(c) => c,
            Err(diags) => panic!("generated config is invalid: {diags:?}"),
        };
        let routes = checked.config.routes;
        let matcher = Matcher::new(&routes);
        let cases = [
            ("prefix_hit", prefix_hit_path(n)),
            ("exact_hit", exact_hit_path(n)),
            ("miss", "/static/css/site/main.css".to_string()),
        ];
        for (what, path) in cases {
            let found = matcher.find(&routes, &path, &method, &headers);
            assert_eq!(
                found.is_some(),
                what != "miss",
                "{what} {path} with {n} routes"
            );
            group.bench_with_input(BenchmarkId::new(what, n), &path, |b, path| {
                b.iter(|| {
                    matcher.find(
                        std::hint::black_box(&routes),
                        std::hint::black_box(path),
                        &method,
                        &headers,
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
