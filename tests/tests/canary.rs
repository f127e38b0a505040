//! Canary splits: share, stickiness (header and cookie), stability across restarts, monotonic
//! cohorts when the percent rises, agreement with `explain --json`, and the keyless split.

use std::time::Duration;

use futures_util::StreamExt;
use strangler_e2e::{eventually, routes_yaml, Backend, CliOutput, Proxy};

fn canary_yaml(legacy: &Backend, svc: &Backend, percent: u32, sticky: &str) -> String {
    routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        &format!(
            "routes:\n  - name: catalog\n    match: {{prefix: /api/products}}\n    upstream: svc\n    mode: canary\n    percent: {percent}\n{sticky}"
        ),
    )
}

const BY_HEADER: &str = "    sticky: header:x-user-id\n";

/// For each key, whether the upstream (`svc`) served it, with header `name: key` (or the given
/// cookie). Requests run 16 at a time; results keep the keys' order.
async fn upstream_sides(proxy: &Proxy, keys: &[String], header: &str, cookie: bool) -> Vec<bool> {
    futures_util::stream::iter(keys.iter())
        .map(|key| async move {
            let (name, value) = if cookie {
                ("cookie", format!("theme=dark; {header}={key}; lang=en"))
            } else {
                (header, key.clone())
            };
            let served = proxy
                .served_by("/api/products/1", &[(name, value.as_str())])
                .await;
            match served.as_str() {
                "svc" => true,
                "legacy" => false,
                other => panic!("request for key {key} failed: {other}"),
            }
        })
        .buffered(16)
        .collect()
        .await
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn share(sides: &[bool]) -> f64 {
    sides.iter().filter(|s| **s).count() as f64 / sides.len() as f64
}

/// The keys whose sides in `before` and `after` satisfy `moved(before, after)`, in order.
fn keys_where<'a>(
    keys: &'a [String],
    before: &[bool],
    after: &[bool],
    moved: impl Fn(bool, bool) -> bool,
) -> Vec<&'a String> {
    keys.iter()
        .zip(before.iter().zip(after.iter()))
        .filter(|(_, (b, a))| moved(**b, **a))
        .map(|(k, _)| k)
        .collect()
}

/// `explain --json GET /api/products/1 -H HEADER` on the proxy's config (must exit 0), parsed.
fn explain_products(proxy: &Proxy, header: &str) -> serde_json::Value {
    let config = proxy.config_path().to_str().expect("utf-8 path");
    let out = CliOutput::run(
        &[
            "explain",
            "--config",
            config,
            "--json",
            "GET",
            "/api/products/1",
            "-H",
            header,
        ],
        proxy.dir(),
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(0), "explain failed: {out:?}");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("explain --json is not JSON ({e}): {}", out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_share_is_close_to_the_percent_and_stable() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let proxy = Proxy::start(&canary_yaml(&legacy, &svc, 30, BY_HEADER)).await;
    let keys = keys(2000, "user");
    let first = upstream_sides(&proxy, &keys, "x-user-id", false).await;
    let s = share(&first);
    assert!(
        (0.26..=0.34).contains(&s),
        "30% canary over 2000 sticky keys served {:.1}% by the upstream",
        s * 100.0
    );
    // Same key, same side, every time.
    let again = upstream_sides(&proxy, &keys[..300], "x-user-id", false).await;
    assert_eq!(again, first[..300], "a sticky key changed side");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_keep_their_side_across_a_restart() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = canary_yaml(&legacy, &svc, 40, BY_HEADER);
    let keys = keys(400, "restart");
    let proxy = Proxy::start(&yaml).await;
    let before = upstream_sides(&proxy, &keys, "x-user-id", false).await;
    drop(proxy);
    let proxy = Proxy::start(&yaml).await;
    let after = upstream_sides(&proxy, &keys, "x-user-id", false).await;
    let moved = keys_where(&keys, &before, &after, |b, a| b != a);
    assert!(
        moved.is_empty(),
        "{} keys changed side after a restart, e.g. {:?}",
        moved.len(),
        &moved[..moved.len().min(5)]
    );
    // Both sides are really in play.
    assert!(before.iter().any(|s| *s) && before.iter().any(|s| !*s));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_percent_only_moves_keys_to_the_upstream() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let proxy = Proxy::start(&canary_yaml(&legacy, &svc, 30, BY_HEADER)).await;
    let keys = keys(1000, "cohort");
    let at30 = upstream_sides(&proxy, &keys, "x-user-id", false).await;

    let raised = canary_yaml(&legacy, &svc, 60, BY_HEADER);
    proxy.replace_config_by_rename(&raised);
    eventually(
        Duration::from_secs(10),
        "the 60% config is live",
        async || proxy.has_version_of(raised.as_bytes()).await,
    )
    .await;
    let at60 = upstream_sides(&proxy, &keys, "x-user-id", false).await;
    let moved_back = keys_where(&keys, &at30, &at60, |was, now| was && !now);
    assert!(
        moved_back.is_empty(),
        "{} keys moved from the upstream back to the fallback when the percent rose, e.g. {:?}",
        moved_back.len(),
        &moved_back[..moved_back.len().min(5)]
    );
    let s = share(&at60);
    assert!(
        (0.55..=0.65).contains(&s),
        "60% canary served {:.1}% by the upstream",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_agrees_with_explain_buckets() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = canary_yaml(&legacy, &svc, 30, BY_HEADER);
    let proxy = Proxy::start(&yaml).await;
    let keys = keys(60, "explain");
    let observed = upstream_sides(&proxy, &keys, "x-user-id", false).await;
    for (key, served_by_upstream) in keys.iter().zip(observed) {
        let json = explain_products(&proxy, &format!("x-user-id: {key}"));
        let bucket = json["bucket"]
            .as_u64()
            .unwrap_or_else(|| panic!("no bucket for key {key}: {json}"));
        assert!(bucket < 10_000, "bucket {bucket} out of range");
        let by_rule = bucket < 30 * 100;
        assert_eq!(
            json["side"],
            if by_rule { "upstream" } else { "fallback" },
            "explain's side disagrees with its own bucket rule for {key}: {json}"
        );
        assert_eq!(
            served_by_upstream, by_rule,
            "the proxy routed key {key} (bucket {bucket}) against the bucket rule"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_stickiness_keeps_each_key_on_one_side() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let proxy = Proxy::start(&canary_yaml(&legacy, &svc, 30, "    sticky: cookie:uid\n")).await;
    let keys = keys(600, "cookie");
    let first = upstream_sides(&proxy, &keys, "uid", true).await;
    let second = upstream_sides(&proxy, &keys, "uid", true).await;
    assert_eq!(first, second, "a cookie key changed side");
    // explain reads the same cookie and agrees.
    for (key, served_by_upstream) in keys.iter().zip(&first).take(8) {
        let json = explain_products(&proxy, &format!("Cookie: theme=dark; uid={key}; lang=en"));
        let want = if *served_by_upstream {
            "upstream"
        } else {
            "fallback"
        };
        assert_eq!(
            json["side"], want,
            "explain disagrees with the proxy for cookie key {key}: {json}"
        );
    }
    let s = share(&first);
    assert!(
        (0.23..=0.37).contains(&s),
        "30% cookie canary over 600 keys served {:.1}% by the upstream",
        s * 100.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_split_is_random_in_proportion() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    // One route with sticky (requests sent without its header) and one without sticky at all.
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        r#"routes:
  - name: keyed
    match: {prefix: /api/products}
    upstream: svc
    mode: canary
    percent: 30
    sticky: header:x-user-id
  - name: unkeyed
    match: {prefix: /api/orders}
    upstream: svc
    mode: canary
    percent: 30
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    for path in ["/api/products/1", "/api/orders/1"] {
        let sides: Vec<bool> = futures_util::stream::iter(0..800)
            .map(|_| async {
                match proxy.served_by(path, &[]).await.as_str() {
                    "svc" => true,
                    "legacy" => false,
                    other => panic!("request failed: {other}"),
                }
            })
            .buffered(16)
            .collect()
            .await;
        let s = share(&sides);
        assert!(
            (0.20..=0.40).contains(&s),
            "30% keyless canary on {path} served {:.1}% by the upstream",
            s * 100.0
        );
    }
}
