//! Generated `routes.yaml` files.

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Routes in the main proxy's config besides the measured ones (never matched by the load).
pub const FILLER_ROUTES: usize = 100;

/// Path prefix of the `extracted` route.
pub const EXTRACTED_PREFIX: &str = "/ext";
/// Path prefix of the `canary` route (50%, sticky on `x-user-id`).
pub const CANARY_PREFIX: &str = "/can";
/// Path prefix of the route in `shadow` mode.
pub const SHADOW_ON_PREFIX: &str = "/shadow-on";
/// Path prefix of the same route in `legacy` mode.
pub const SHADOW_OFF_PREFIX: &str = "/shadow-off";
/// Header the canary is sticky on.
pub const STICKY_HEADER: &str = "x-user-id";

/// The main config: fallback and `svc` on `backend`, `mirror` (shadow copies) on `mirror`.
pub fn main_config(backend: SocketAddr, mirror: SocketAddr) -> String {
    let mut y = format!(
        "upstreams:\n  legacy: http://{backend}\n  svc: http://{backend}\n  mirror: http://{mirror}\nfallback: legacy\nroutes:\n"
    );
    let _ = write!(
        y,
        "  - name: extracted\n    match: {{prefix: {EXTRACTED_PREFIX}}}\n    upstream: svc\n    mode: extracted\n"
    );
    let _ = write!(
        y,
        "  - name: canary\n    match: {{prefix: {CANARY_PREFIX}}}\n    upstream: svc\n    mode: canary\n    percent: 50\n    sticky: header:{STICKY_HEADER}\n"
    );
    let _ = write!(
        y,
        "  - name: shadow-on\n    match: {{prefix: {SHADOW_ON_PREFIX}}}\n    upstream: mirror\n    mode: shadow\n"
    );
    let _ = write!(
        y,
        "  - name: shadow-off\n    match: {{prefix: {SHADOW_OFF_PREFIX}}}\n    upstream: mirror\n    mode: legacy\n"
    );
    filler(&mut y, FILLER_ROUTES, |_| "extracted");
    y
}

/// A config with `routes` routes for the reload scenario, plus `/hot` (extracted) that the
/// load goes to. `variant` 0 and 1 differ in the mode of every tenth filler route.
pub fn large_config(backend: SocketAddr, routes: usize, variant: u8) -> String {
    let mut y = format!(
        "upstreams:\n  legacy: http://{backend}\n  svc: http://{backend}\nfallback: legacy\nroutes:\n  - name: hot\n    match: {{prefix: /hot}}\n    upstream: svc\n    mode: extracted\n"
    );
    filler(&mut y, routes.saturating_sub(1), |i| {
        if i % 10 == 0 && variant == 1 {
            "legacy"
        } else {
            "extracted"
        }
    });
    y
}

fn filler(y: &mut String, n: usize, mode: impl Fn(usize) -> &'static str) {
    for i in 0..n {
        let path = if i % 4 == 0 {
            format!("exact: /api/v{}/resource-{i}", i % 3 + 1)
        } else {
            format!("prefix: /api/v{}/resource-{i}", i % 3 + 1)
        };
        let _ = write!(
            y,
            "  - name: route-{i}\n    match: {{{path}}}\n    upstream: svc\n    mode: {}\n",
            mode(i)
        );
    }
}
