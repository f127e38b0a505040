//! Generated route tables shared by the benchmarks.

use std::fmt::Write as _;

/// A routes.yaml with `n` routes: three API versions, one in four an exact path, one in five
/// limited to GET and HEAD.
pub fn routes_yaml(n: usize) -> String {
    let mut y = String::from(
        "upstreams:\n  legacy: http://127.0.0.1:8081\n  svc: http://127.0.0.1:8082\nfallback: legacy\nroutes:\n",
    );
    for i in 0..n {
        let kind = if i % 4 == 0 { "exact" } else { "prefix" };
        let _ = write!(
            y,
            "  - name: route-{i}\n    match:\n      {kind}: /api/v{}/resource-{i}\n",
            i % 3 + 1
        );
        if i % 5 == 0 {
            y.push_str("      methods: [GET, HEAD]\n");
        }
        y.push_str("    upstream: svc\n    mode: extracted\n");
    }
    y
}
