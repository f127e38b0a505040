//! Shadow traffic: a route in `mode: shadow` is served by the fallback while a copy goes to the
//! route's upstream (the candidate) and the two answers are compared. Covers the comparison
//! (match, a changed field, ignore rules, noise learning), which requests are copied (methods,
//! stripped headers, the copy marker), that the client never waits for or sees the copy (slow
//! and down candidates, the in-flight cap), the `record:` and `report_file` files, and the
//! `strangler shadow-report` and `strangler compare` commands.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use strangler_e2e::backend::{Received, Scripted};
use strangler_e2e::{http_client, refusing_url, routes_yaml, CliOutput, Proxy};

/// How long asynchronous shadow results may take to show up.
const WAIT: Duration = Duration::from_secs(10);
/// Bound for one-shot CLI commands.
const CLI: Duration = Duration::from_secs(20);

/// One shadow route: `name`, covering `prefix`, copied to `upstream`, with `shadow` lines (YAML,
/// unindented, may be empty) under its `shadow:` key.
fn route(name: &str, prefix: &str, upstream: &str, shadow: &str) -> String {
    let mut out = format!(
        "  - name: {name}\n    match: {{prefix: {prefix}}}\n    upstream: {upstream}\n    mode: shadow\n"
    );
    if !shadow.trim().is_empty() {
        out.push_str("    shadow:\n");
        for line in shadow.lines() {
            out.push_str("      ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A config: `legacy` is the fallback, then the other upstreams, the routes, and `top` verbatim
/// (top-level keys such as `shadow:`).
fn config(upstreams: &[(&str, &str)], routes: &[String], top: &str) -> String {
    let mut text = String::from("routes:\n");
    for r in routes {
        text.push_str(r);
    }
    text.push_str(top);
    routes_yaml(upstreams, &text)
}

/// The usual setup: fallback `legacy`, candidate `candidate`, one shadow route `items` on
/// `/items` with the given shadow settings.
fn items_config(legacy: &Scripted, candidate: &Scripted, shadow: &str, top: &str) -> String {
    config(
        &[("legacy", &legacy.url), ("candidate", &candidate.url)],
        &[route("items", "/items", "candidate", shadow)],
        top,
    )
}

/// A JSON answer with nested objects and arrays, the same for the same path.
fn catalog(path: &str) -> Value {
    json!({
        "path": path,
        "count": 2,
        "items": [
            {"id": 1, "name": "apple", "price": 1.5, "updated_at": "2024-01-01T00:00:00Z"},
            {"id": 2, "name": "pear", "price": 2, "updated_at": "2024-01-01T00:00:00Z"}
        ]
    })
}

/// A backend that answers [`catalog`] for every path and keeps what it got.
async fn catalog_backend() -> Scripted {
    Scripted::json(|r: &Received, _| catalog(&r.path)).await
}

/// A backend that answers [`catalog`] with a `served_at` of `offset` plus the call's number, so
/// it changes on every call.
async fn stamped_catalog(offset: usize) -> Scripted {
    Scripted::json(move |r: &Received, n| {
        let mut v = catalog(&r.path);
        v["served_at"] = json!(offset + n);
        v
    })
    .await
}

/// A candidate that answers [`catalog`], but with the pear renamed `PEAR` on `/items/2` only.
async fn pear_renamed_on_items_2() -> Scripted {
    Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        if r.path == "/items/2" {
            v["items"][1]["name"] = json!("PEAR");
        }
        v
    })
    .await
}

/// A backend that answers `{"side": "legacy", "path": PATH}` and keeps what it got.
async fn legacy_side() -> Scripted {
    Scripted::json(|r: &Received, _| json!({"side": "legacy", "path": r.path})).await
}

/// The `items` config with a copy cap (`shadow: max_in_flight`) of `max_in_flight`.
fn capped_config(legacy: &Scripted, candidate: &Scripted, max_in_flight: usize) -> String {
    items_config(
        legacy,
        candidate,
        "",
        &format!("shadow:\n  max_in_flight: {max_in_flight}\n"),
    )
}

/// A [`catalog`] fallback, a [`catalog`] candidate that answers after a second, and a proxy on
/// [`capped_config`] with `max_in_flight`.
async fn capped_proxy(max_in_flight: usize) -> (Scripted, Scripted, Proxy) {
    let legacy = catalog_backend().await;
    let candidate =
        Scripted::json_after(Duration::from_secs(1), |r: &Received, _| catalog(&r.path)).await;
    let proxy = Proxy::start(&capped_config(&legacy, &candidate, max_in_flight)).await;
    (legacy, candidate, proxy)
}

/// `GET /shadow` as JSON.
async fn shadow_doc(proxy: &Proxy) -> Value {
    let resp = http_client()
        .get(proxy.admin_url("/shadow"))
        .send()
        .await
        .expect("GET /shadow");
    assert_eq!(resp.status(), 200, "GET /shadow status");
    resp.json().await.expect("GET /shadow is JSON")
}

/// One route's entry of `GET /shadow` (null when the route has no results yet).
async fn stats(proxy: &Proxy, route: &str) -> Value {
    shadow_doc(proxy).await["routes"][route].clone()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Waits until `route`'s stats satisfy `ok`, then returns them.
async fn wait_stats(proxy: &Proxy, route: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let s = stats(proxy, route).await;
        if ok(&s) {
            return s;
        }
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {WAIT:?} waiting for {what} on route {route}; last /shadow entry: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `route` has compared `n` copies.
async fn wait_compared(proxy: &Proxy, route: &str, n: u64) -> Value {
    wait_stats(proxy, route, &format!("{n} comparisons"), |s| {
        num(s, "compared") >= n
    })
    .await
}

/// Sends `method path` through the proxy with `headers` and `body`; returns status, the
/// `x-request-id` answered and the body as JSON (null when not JSON).
async fn send(
    proxy: &Proxy,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http_client().request(method, proxy.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_empty() {
        req = req.body(body.to_string());
    }
    let resp = req.send().await.expect("request through the proxy");
    let status = resp.status().as_u16();
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = resp.bytes().await.expect("response body");
    (
        status,
        id,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn get(proxy: &Proxy, path: &str) -> (u16, Value) {
    let (status, _, body) = send(proxy, "GET", path, &[], "").await;
    (status, body)
}

/// The generalized paths listed under a stats entry's `key` (`top_differences`, `noise`).
fn paths_of(s: &Value, key: &str) -> BTreeSet<String> {
    s[key]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d["path"].as_str().map(str::to_string))
        .collect()
}

/// The difference paths of the kept mismatch for `request` (`GET /items/1`).
fn mismatch_paths(s: &Value, request: &str) -> Vec<String> {
    let m = s["last_mismatches"]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["request"] == request))
        .unwrap_or_else(|| panic!("no kept mismatch for {request}: {s:#}"));
    m["differences"]
        .as_array()
        .expect("differences is a list")
        .iter()
        .map(|d| d["path"].as_str().expect("difference path").to_string())
        .collect()
}

fn shadow_metric(m: &strangler_e2e::Metrics, route: &str, outcome: &str) -> f64 {
    m.sum(
        "strangler_shadow_total",
        &[("route", route), ("outcome", outcome)],
    )
}

fn cli(args: &[&str], cwd: &Path) -> CliOutput {
    CliOutput::run(args, cwd, CLI)
}

/// Runs `strangler compare` on the `requests` file against `legacy` and `candidate`, then
/// `extra` arguments, in `cwd`.
fn compare(cwd: &Path, requests: &str, legacy: &str, candidate: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec![
        "compare",
        "--requests",
        requests,
        "--legacy",
        legacy,
        "--candidate",
        candidate,
    ];
    args.extend_from_slice(extra);
    cli(&args, cwd)
}

/// The stdout of a `--json` command, parsed.
fn stdout_json(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).expect("--json prints JSON")
}

/// The one route entry of a `strangler compare --json` document.
fn only_report(doc: &Value) -> &Value {
    doc["routes"]
        .as_object()
        .and_then(|r| r.values().next())
        .expect("one report entry")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_backends_match_fully_and_copies_are_marked() {
    let legacy = catalog_backend().await;
    let candidate = catalog_backend().await;
    let proxy = Proxy::start(&items_config(&legacy, &candidate, "", "")).await;

    let paths = ["/items/1", "/items/2", "/items/3?color=red"];
    for p in paths {
        let (status, body) = get(&proxy, p).await;
        assert_eq!(status, 200, "GET {p}");
        assert_eq!(body, catalog(p), "GET {p} is the fallback's answer");
    }
    let s = wait_compared(&proxy, "items", 3).await;
    assert_eq!(num(&s, "compared"), 3, "{s:#}");
    assert_eq!(num(&s, "matched"), 3, "{s:#}");
    assert_eq!(num(&s, "mismatched"), 0, "{s:#}");
    assert_eq!(num(&s, "errors"), 0, "{s:#}");
    assert_eq!(num(&s, "copied"), 3, "{s:#}");
    assert_eq!(num(&s, "dropped"), 0, "{s:#}");
    assert_eq!(s["match_rate"].as_f64(), Some(1.0), "{s:#}");
    assert!(paths_of(&s, "top_differences").is_empty(), "{s:#}");
    assert_eq!(s["last_mismatches"], json!([]), "{s:#}");

    let copies = candidate.received();
    assert_eq!(copies.len(), 3, "one copy per request: {copies:?}");
    let copied_paths: BTreeSet<&str> = copies.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        copied_paths,
        paths.into_iter().collect(),
        "copies keep path and query"
    );
    for c in &copies {
        assert_eq!(c.method, "GET");
        assert_eq!(c.header("x-strangler-shadow"), Some("1"), "copy {c:?}");
    }
    let served = legacy.received();
    assert_eq!(
        served.len(),
        3,
        "the fallback serves each request once: {served:?}"
    );
    for r in &served {
        assert_eq!(
            r.header("x-strangler-shadow"),
            None,
            "the client's own request is not marked as a copy: {r:?}"
        );
    }

    let m = proxy.metrics().await;
    assert_eq!(shadow_metric(&m, "items", "matched"), 3.0, "{}", m.text);
    assert_eq!(shadow_metric(&m, "items", "mismatched"), 0.0, "{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_field_is_reported_by_its_generalized_path() {
    let legacy = catalog_backend().await;
    let candidate = Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        v["items"][1]["name"] = json!("PEAR");
        v
    })
    .await;
    let proxy = Proxy::start(&items_config(&legacy, &candidate, "", "")).await;

    let mut ids = BTreeSet::new();
    for p in ["/items/1", "/items/2"] {
        let (status, id, body) = send(&proxy, "GET", p, &[], "").await;
        assert_eq!(status, 200);
        assert_eq!(
            body["items"][1]["name"], "pear",
            "the client gets the fallback's answer, never the candidate's"
        );
        ids.insert(id);
    }
    let s = wait_compared(&proxy, "items", 2).await;
    assert_eq!(num(&s, "matched"), 0, "{s:#}");
    assert_eq!(num(&s, "mismatched"), 2, "{s:#}");
    assert_eq!(s["match_rate"].as_f64(), Some(0.0), "{s:#}");
    let top = s["top_differences"].as_array().expect("top_differences");
    assert_eq!(top.len(), 1, "only the one field differs: {s:#}");
    assert_eq!(top[0]["path"], "/items/*/name", "{s:#}");
    assert_eq!(top[0]["count"], 2, "{s:#}");

    let kept = s["last_mismatches"].as_array().expect("last_mismatches");
    assert_eq!(kept.len(), 2, "{s:#}");
    for p in ["GET /items/1", "GET /items/2"] {
        assert_eq!(mismatch_paths(&s, p), vec!["/items/1/name"], "{s:#}");
    }
    let d = &kept[0]["differences"][0];
    assert_eq!(d["left"], "\"pear\"", "fallback on the left: {d}");
    assert_eq!(d["right"], "\"PEAR\"", "candidate on the right: {d}");
    let kept_ids: BTreeSet<String> = kept
        .iter()
        .map(|m| m["request_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        kept_ids, ids,
        "mismatches carry the request ids the client saw"
    );

    let m = proxy.metrics().await;
    assert_eq!(shadow_metric(&m, "items", "mismatched"), 2.0, "{}", m.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_rules_remove_what_they_name_and_nothing_more() {
    let legacy = Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        v["updated_at"] = json!("2024-01-01T00:00:00Z");
        v
    })
    .await;
    // Differs from the fallback only in /items/N/updated_at.
    let stamps_only = Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        v["updated_at"] = json!("2024-01-01T00:00:00Z");
        v["items"][0]["updated_at"] = json!("2025-06-01T12:00:00Z");
        v["items"][1]["updated_at"] = json!("2025-06-01T12:00:01Z");
        v
    })
    .await;
    // The same, plus a price on /mixed/2 and the top-level updated_at on /mixed/3.
    let mixed = Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        v["updated_at"] = json!("2024-01-01T00:00:00Z");
        v["items"][0]["updated_at"] = json!("2025-06-01T12:00:00Z");
        v["items"][1]["updated_at"] = json!("2025-06-01T12:00:01Z");
        if r.path == "/mixed/2" {
            v["items"][0]["price"] = json!(1.75);
        }
        if r.path == "/mixed/3" {
            v["updated_at"] = json!("2025-06-01T12:00:00Z");
        }
        v
    })
    .await;
    let ignore = "ignore: [/items/*/updated_at]";
    let proxy = Proxy::start(&config(
        &[
            ("legacy", &legacy.url),
            ("stamps", &stamps_only.url),
            ("mixed", &mixed.url),
        ],
        &[
            route("ignored", "/ignored", "stamps", ignore),
            route("raw", "/raw", "stamps", ""),
            route("mixed", "/mixed", "mixed", ignore),
        ],
        "",
    ))
    .await;

    for p in [
        "/ignored/1",
        "/ignored/2",
        "/raw/1",
        "/mixed/1",
        "/mixed/2",
        "/mixed/3",
    ] {
        assert_eq!(get(&proxy, p).await.0, 200, "GET {p}");
    }

    let ignored = wait_compared(&proxy, "ignored", 2).await;
    assert_eq!(num(&ignored, "matched"), 2, "{ignored:#}");
    assert_eq!(num(&ignored, "mismatched"), 0, "{ignored:#}");
    assert_eq!(ignored["match_rate"].as_f64(), Some(1.0), "{ignored:#}");

    // The same candidate without the rule: the rule is what made it match.
    let raw = wait_compared(&proxy, "raw", 1).await;
    assert_eq!(num(&raw, "mismatched"), 1, "{raw:#}");
    assert_eq!(
        paths_of(&raw, "top_differences"),
        BTreeSet::from(["/items/*/updated_at".to_string()]),
        "{raw:#}"
    );

    let mixed_stats = wait_compared(&proxy, "mixed", 3).await;
    assert_eq!(num(&mixed_stats, "matched"), 1, "{mixed_stats:#}");
    assert_eq!(num(&mixed_stats, "mismatched"), 2, "{mixed_stats:#}");
    assert_eq!(
        mismatch_paths(&mixed_stats, "GET /mixed/2"),
        vec!["/items/0/price"],
        "{mixed_stats:#}"
    );
    assert_eq!(
        mismatch_paths(&mixed_stats, "GET /mixed/3"),
        vec!["/updated_at"],
        "/items/*/updated_at must not hide the top-level /updated_at: {mixed_stats:#}"
    );
    assert_eq!(
        paths_of(&mixed_stats, "top_differences"),
        BTreeSet::from(["/items/*/price".to_string(), "/updated_at".to_string()]),
        "{mixed_stats:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_is_learned_from_two_fallback_answers_and_not_counted() {
    // `served_at` changes on every call to the fallback.
    let legacy = stamped_catalog(0).await;
    let with_real_diff = Scripted::json(|r: &Received, n| {
        let mut v = catalog(&r.path);
        v["served_at"] = json!(100_000 + n);
        v["items"][1]["name"] = json!("PEAR");
        v
    })
    .await;
    let noise_only = stamped_catalog(200_000).await;
    let proxy = Proxy::start(&config(
        &[
            ("legacy", &legacy.url),
            ("real", &with_real_diff.url),
            ("clean", &noise_only.url),
        ],
        &[
            route("items", "/items", "real", "noise: true"),
            route("clean", "/clean", "clean", "noise: true"),
        ],
        "",
    ))
    .await;

    for p in ["/items/1", "/items/2", "/clean/1", "/clean/2"] {
        assert_eq!(get(&proxy, p).await.0, 200, "GET {p}");
    }
    let s = wait_compared(&proxy, "items", 2).await;
    assert_eq!(
        num(&s, "mismatched"),
        2,
        "the real difference is a mismatch: {s:#}"
    );
    assert_eq!(
        paths_of(&s, "top_differences"),
        BTreeSet::from(["/items/*/name".to_string()]),
        "served_at is not a mismatch: {s:#}"
    );
    for p in ["GET /items/1", "GET /items/2"] {
        assert_eq!(mismatch_paths(&s, p), vec!["/items/1/name"], "{s:#}");
    }
    assert!(
        paths_of(&s, "noise").contains("/served_at"),
        "served_at is reported as noise: {s:#}"
    );
    let suggested: Vec<&str> = s["suggested_ignore"]
        .as_array()
        .expect("suggested_ignore")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(suggested.contains(&"/served_at"), "{s:#}");
    assert!(!suggested.iter().any(|p| p.contains("name")), "{s:#}");
    let snippet = s["suggested_config"].as_str().expect("suggested_config");
    assert!(
        snippet.contains("ignore") && snippet.contains("/served_at"),
        "{snippet}"
    );

    let clean = wait_compared(&proxy, "clean", 2).await;
    assert_eq!(
        num(&clean, "matched"),
        2,
        "noise alone is a match: {clean:#}"
    );
    assert_eq!(num(&clean, "mismatched"), 0, "{clean:#}");
    assert_eq!(clean["match_rate"].as_f64(), Some(1.0), "{clean:#}");
    assert!(
        paths_of(&clean, "noise").contains("/served_at"),
        "{clean:#}"
    );

    // Each client request reached the fallback twice: once served, once as the noise copy.
    let seen = legacy.received();
    assert_eq!(seen.len(), 8, "{seen:?}");
    let marked = seen
        .iter()
        .filter(|r| r.header("x-strangler-shadow") == Some("1"))
        .count();
    assert_eq!(marked, 4, "the noise copies are marked: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_copied_only_when_the_route_allows_it() {
    let legacy = legacy_side().await;
    let candidate = legacy_side().await;
    let proxy = Proxy::start(&config(
        &[("legacy", &legacy.url), ("candidate", &candidate.url)],
        &[
            route("items", "/items", "candidate", ""),
            route("orders", "/orders", "candidate", "methods: [GET, POST]"),
        ],
        "",
    ))
    .await;

    let json_body = r#"{"sku":"apple","qty":2}"#;
    let ct = [("content-type", "application/json")];
    let (status, _, _) = send(&proxy, "POST", "/items", &ct, json_body).await;
    assert_eq!(status, 200);
    let s = wait_stats(&proxy, "items", "a skipped POST", |s| {
        s["skipped_by_reason"]["method"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(num(&s, "skipped"), 1, "{s:#}");
    assert_eq!(num(&s, "copied"), 0, "{s:#}");
    // A GET after it is copied; once it has been compared, the POST was certainly not.
    assert_eq!(get(&proxy, "/items/after").await.0, 200);
    let s = wait_compared(&proxy, "items", 1).await;
    assert_eq!(num(&s, "copied"), 1, "{s:#}");
    let copies = candidate.received();
    assert_eq!(copies.len(), 1, "only the GET is copied: {copies:?}");
    assert_eq!(copies[0].method, "GET");
    assert_eq!(copies[0].path, "/items/after");

    let (status, _, _) = send(&proxy, "POST", "/orders", &ct, json_body).await;
    assert_eq!(status, 200);
    let s = wait_compared(&proxy, "orders", 1).await;
    assert_eq!(num(&s, "matched"), 1, "{s:#}");
    let posts: Vec<Received> = candidate
        .received()
        .into_iter()
        .filter(|r| r.path == "/orders")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].method, "POST");
    assert_eq!(&posts[0].body[..], json_body.as_bytes(), "same body");
    assert_eq!(posts[0].header("content-type"), Some("application/json"));
    assert_eq!(posts[0].header("x-strangler-shadow"), Some("1"));
    let served: Vec<Received> = legacy
        .received()
        .into_iter()
        .filter(|r| r.path == "/orders")
        .collect();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(
        &served[0].body[..],
        json_body.as_bytes(),
        "the fallback got the body too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_options_are_copied_by_default() {
    let legacy = catalog_backend().await;
    let candidate = catalog_backend().await;
    let proxy = Proxy::start(&items_config(&legacy, &candidate, "", "")).await;
    for method in ["HEAD", "OPTIONS"] {
        let (status, _, _) = send(&proxy, method, "/items/1", &[], "").await;
        assert_eq!(status, 200, "{method}");
    }
    let s = wait_stats(&proxy, "items", "two copies settled", |s| {
        num(s, "compared") + num(s, "errors") + num(s, "skipped") >= 2
    })
    .await;
    assert_eq!(num(&s, "skipped"), 0, "{s:#}");
    assert_eq!(num(&s, "compared"), 2, "{s:#}");
    assert_eq!(num(&s, "matched"), 2, "{s:#}");
    let methods: BTreeSet<String> = candidate.received().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        BTreeSet::from(["HEAD".to_string(), "OPTIONS".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_never_waits_for_a_slow_or_down_candidate() {
    let legacy = legacy_side().await;
    let slow = Scripted::json_after(
        Duration::from_secs(2),
        |r: &Received, _| json!({"side": "legacy", "path": r.path}),
    )
    .await;
    let down = refusing_url();
    let timing_out = format!("{{url: {}, timeout: 300ms}}", slow.url);
    let proxy = Proxy::start(&config(
        &[
            ("legacy", &legacy.url),
            ("slow", &slow.url),
            ("down", &down),
            ("impatient", &timing_out),
        ],
        &[
            route("slow", "/slow", "slow", ""),
            route("down", "/down", "down", ""),
            route("timeout", "/timeout", "impatient", ""),
        ],
        "",
    ))
    .await;

    let (status, body) = get(&proxy, "/slow/1").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"side": "legacy", "path": "/slow/1"}));
    let s = stats(&proxy, "slow").await;
    assert_eq!(
        num(&s, "compared"),
        0,
        "the client's answer came while the copy was still in flight: {s:#}"
    );
    let s = wait_compared(&proxy, "slow", 1).await;
    assert_eq!(num(&s, "matched"), 1, "{s:#}");
    assert_eq!(slow.hits(), 1);

    let (status, body) = get(&proxy, "/down/1").await;
    assert_eq!(status, 200, "a down candidate never shows");
    assert_eq!(body, json!({"side": "legacy", "path": "/down/1"}));
    let s = wait_stats(&proxy, "down", "one error", |s| num(s, "errors") >= 1).await;
    assert_eq!(num(&s, "errors"), 1, "{s:#}");
    assert_eq!(num(&s, "compared"), 0, "{s:#}");
    let m = proxy.metrics().await;
    assert_eq!(shadow_metric(&m, "down", "error"), 1.0, "{}", m.text);

    // A copy slower than its upstream's timeout counts as an error too.
    let (status, body) = get(&proxy, "/timeout/1").await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"side": "legacy", "path": "/timeout/1"}));
    let s = wait_stats(&proxy, "timeout", "one error", |s| num(s, "errors") >= 1).await;
    assert_eq!(num(&s, "errors"), 1, "{s:#}");
    assert_eq!(num(&s, "compared"), 0, "{s:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_over_the_cap_are_dropped_and_counted() {
    let (_legacy, candidate, proxy) = capped_proxy(2).await;

    let client = http_client();
    let requests = (0..20).map(|i| {
        let client = client.clone();
        let url = proxy.url(&format!("/items/{i}"));
        async move {
            let resp = client.get(url).send().await.expect("GET through the proxy");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("JSON body");
            (status, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}");
        assert_eq!(body["path"], format!("/items/{i}"), "request {i}");
    }
    let s = wait_stats(&proxy, "items", "all 20 accounted for", |s| {
        num(s, "copied") + num(s, "dropped") >= 20
            && num(s, "compared") + num(s, "errors") >= num(s, "copied")
    })
    .await;
    let dropped = num(&s, "dropped");
    assert!(dropped >= 1, "over the cap copies are dropped: {s:#}");
    assert!(num(&s, "copied") <= 20 - dropped, "{s:#}");
    assert_eq!(num(&s, "copied") + dropped, 20, "{s:#}");
    assert_eq!(candidate.hits() as u64, num(&s, "copied"), "{s:#}");
    let m = proxy.metrics().await;
    assert_eq!(
        shadow_metric(&m, "items", "dropped"),
        dropped as f64,
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_headers_reach_the_fallback_but_not_the_copy() {
    let legacy = catalog_backend().await;
    let candidate = catalog_backend().await;
    let proxy = Proxy::start(&items_config(
        &legacy,
        &candidate,
        "strip_headers: [Authorization, x-api-key]",
        "",
    ))
    .await;
    let headers = [
        ("authorization", "Bearer secret-token"),
        ("x-api-key", "k-123"),
        ("x-keep", "yes"),
    ];
    let (status, _, _) = send(&proxy, "GET", "/items/1", &headers, "").await;
    assert_eq!(status, 200);
    wait_compared(&proxy, "items", 1).await;

    let copies = candidate.received();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert_eq!(copy.header("authorization"), None, "{copy:?}");
    assert_eq!(copy.header("x-api-key"), None, "{copy:?}");
    assert_eq!(copy.header("x-keep"), Some("yes"), "{copy:?}");
    assert_eq!(copy.header("x-strangler-shadow"), Some("1"), "{copy:?}");
    let served = legacy.received();
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(
        served[0].header("authorization"),
        Some("Bearer secret-token")
    );
    assert_eq!(served[0].header("x-api-key"), Some("k-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_requests_replay_with_strangler_compare() {
    let files = tempfile::tempdir().expect("temp dir");
    let record = files.path().join("items.jsonl");
    let legacy = catalog_backend().await;
    let candidate = catalog_backend().await;
    let proxy = Proxy::start(&items_config(
        &legacy,
        &candidate,
        &format!("record: {}", record.display()),
        "",
    ))
    .await;
    let paths = ["/items/1", "/items/2", "/items/3?color=red", "/items/4"];
    for p in paths {
        assert_eq!(get(&proxy, p).await.0, 200, "GET {p}");
    }
    // Not copied, so not recorded.
    let (status, _, _) = send(&proxy, "POST", "/items/5", &[], "x").await;
    assert_eq!(status, 200);
    wait_compared(&proxy, "items", 4).await;

    let text = std::fs::read_to_string(&record).expect("the record file exists");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each recorded line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4, "one line per copied request:\n{text}");
    let recorded: BTreeSet<&str> = lines.iter().filter_map(|l| l["path"].as_str()).collect();
    assert_eq!(recorded, paths.into_iter().collect(), "{text}");
    for l in &lines {
        assert_eq!(l["method"], "GET", "{l}");
    }
    drop(proxy);

    let rec = record.to_str().expect("utf-8 path");
    let ok = compare(files.path(), rec, &legacy.url, &candidate.url, &[]);
    assert_eq!(ok.code, Some(0), "identical backends pass: {ok:?}");

    let ok_json = compare(files.path(), rec, &legacy.url, &candidate.url, &["--json"]);
    assert_eq!(ok_json.code, Some(0), "{ok_json:?}");
    let doc = stdout_json(&ok_json);
    assert_eq!(doc["passed"], true, "{doc:#}");

    // Differs on one of the four requests: 75%.
    let differing = pear_renamed_on_items_2().await;
    let against = |extra: &[&str]| compare(files.path(), rec, &legacy.url, &differing.url, extra);
    let fail = against(&["--json"]);
    assert_eq!(
        fail.code,
        Some(1),
        "75% is under the default 100%: {fail:?}"
    );
    let doc = stdout_json(&fail);
    assert_eq!(doc["passed"], false, "{doc:#}");
    let report = only_report(&doc);
    assert_eq!(num(report, "compared"), 4, "{doc:#}");
    assert_eq!(num(report, "mismatched"), 1, "{doc:#}");
    assert_eq!(
        report["top_differences"][0]["path"], "/items/*/name",
        "{doc:#}"
    );

    let low = against(&["--min-match", "70"]);
    assert_eq!(low.code, Some(0), "75% passes a 70% gate: {low:?}");
    let high = against(&["--min-match", "80"]);
    assert_eq!(high.code, Some(1), "75% fails an 80% gate: {high:?}");
    let ignored = against(&["--ignore", "/items/*/name"]);
    assert_eq!(
        ignored.code,
        Some(0),
        "--ignore removes the field: {ignored:?}"
    );

    // Candidate errors count against the match rate: a down candidate fails the gate (1),
    // it does not make the run impossible (2).
    let down = refusing_url();
    let to_down = compare(files.path(), rec, &legacy.url, &down, &["--json"]);
    assert_eq!(to_down.code, Some(1), "{to_down:?}");
    let doc = stdout_json(&to_down);
    assert_eq!(doc["passed"], false, "{doc:#}");

    // --noise: a field that changes on every legacy answer is set aside.
    let noisy_legacy = stamped_catalog(0).await;
    let noisy_candidate = stamped_catalog(100_000).await;
    let noisy = |extra: &[&str]| {
        let args = [&["--json"][..], extra].concat();
        compare(
            files.path(),
            rec,
            &noisy_legacy.url,
            &noisy_candidate.url,
            &args,
        )
    };
    let without = noisy(&[]);
    assert_eq!(without.code, Some(1), "served_at differs: {without:?}");
    let with = noisy(&["--noise"]);
    assert_eq!(with.code, Some(0), "--noise sets served_at aside: {with:?}");
    let doc = stdout_json(&with);
    let report = only_report(&doc);
    assert!(paths_of(report, "noise").contains("/served_at"), "{doc:#}");

    let bad = files.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"method\": \"GET\", \"path\": \"/items/1\"}\nnot json\n",
    )
    .expect("write bad file");
    let malformed = compare(
        files.path(),
        bad.to_str().expect("utf-8 path"),
        &legacy.url,
        &candidate.url,
        &[],
    );
    assert_eq!(
        malformed.code,
        Some(2),
        "a malformed file cannot run: {malformed:?}"
    );
    let missing = compare(
        files.path(),
        files.path().join("missing.jsonl").to_str().expect("utf-8"),
        &legacy.url,
        &candidate.url,
        &[],
    );
    assert_eq!(
        missing.code,
        Some(2),
        "a missing file cannot run: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_file_gets_one_line_per_comparison() {
    let files = tempfile::tempdir().expect("temp dir");
    let report = files.path().join("shadow-report.jsonl");
    let legacy = catalog_backend().await;
    let candidate = pear_renamed_on_items_2().await;
    let proxy = Proxy::start(&items_config(
        &legacy,
        &candidate,
        "",
        &format!("shadow:\n  report_file: {}\n", report.display()),
    ))
    .await;
    for p in ["/items/1", "/items/2", "/items/3"] {
        assert_eq!(get(&proxy, p).await.0, 200, "GET {p}");
    }
    wait_compared(&proxy, "items", 3).await;
    let read_lines = || {
        std::fs::read_to_string(&report)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    strangler_e2e::eventually(WAIT, "three report lines", async || read_lines().len() >= 3).await;
    let lines: Vec<Value> = read_lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("each report line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3, "one line per comparison: {lines:#?}");
    for l in &lines {
        assert_eq!(l["route"], "items", "{l}");
        let expected = if l["request"] == "GET /items/2" {
            "mismatched"
        } else {
            "matched"
        };
        assert_eq!(l["result"], expected, "{l}");
    }
    let requests: BTreeSet<&str> = lines.iter().filter_map(|l| l["request"].as_str()).collect();
    assert_eq!(
        requests,
        BTreeSet::from(["GET /items/1", "GET /items/2", "GET /items/3"])
    );
    let bad = lines
        .iter()
        .find(|l| l["request"] == "GET /items/2")
        .expect("line for /items/2");
    assert_eq!(bad["differences"][0]["path"], "/items/1/name", "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_report_prints_a_table_naming_the_route() {
    let legacy = catalog_backend().await;
    let candidate = Scripted::json(|r: &Received, _| {
        let mut v = catalog(&r.path);
        v["items"][0]["price"] = json!(9);
        v
    })
    .await;
    let proxy = Proxy::start(&config(
        &[("legacy", &legacy.url), ("candidate", &candidate.url)],
        &[route("catalog-v2", "/items", "candidate", "")],
        "",
    ))
    .await;
    for p in ["/items/1", "/items/2"] {
        assert_eq!(get(&proxy, p).await.0, 200, "GET {p}");
    }
    wait_compared(&proxy, "catalog-v2", 2).await;

    let admin = proxy.admin_addr().to_string();
    let table = cli(&["shadow-report", "--admin", &admin], proxy.dir());
    assert_eq!(table.code, Some(0), "{table:?}");
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("catalog-v2"))
        .unwrap_or_else(|| panic!("no row for the route:\n{}", table.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..5],
        &["2", "2", "0", "2"],
        "copied, compared, matched, mismatched:\n{}",
        table.stdout
    );
    assert!(table.stdout.contains("ROUTE"), "{}", table.stdout);
    assert!(table.stdout.contains("/items/*/price"), "{}", table.stdout);

    let json_out = cli(&["shadow-report", "--admin", &admin, "--json"], proxy.dir());
    assert_eq!(json_out.code, Some(0), "{json_out:?}");
    let doc = stdout_json(&json_out);
    assert_eq!(doc["routes"]["catalog-v2"]["compared"], 2, "{doc:#}");
    assert_eq!(doc["routes"]["catalog-v2"]["mismatched"], 2, "{doc:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_bounded_in_size_and_the_client_still_gets_everything() {
    let big = "x".repeat(4096);
    let answer = big.clone();
    let legacy = Scripted::json(
        move |r: &Received, _| json!({"path": r.path, "blob": answer, "got": r.body.len()}),
    )
    .await;
    let answer = big.clone();
    let candidate = Scripted::json(
        move |r: &Received, _| json!({"path": r.path, "blob": answer, "got": r.body.len()}),
    )
    .await;
    let proxy = Proxy::start(&items_config(
        &legacy,
        &candidate,
        "max_body_bytes: 1KiB\nmethods: [GET, POST]",
        "",
    ))
    .await;

    let (status, body) = get(&proxy, "/items/1").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["blob"].as_str().map(str::len),
        Some(4096),
        "whole body"
    );
    let s = wait_stats(&proxy, "items", "a response too large to compare", |s| {
        s["skipped_by_reason"]["response_too_large"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(num(&s, "compared"), 0, "{s:#}");

    let (status, _, body) = send(&proxy, "POST", "/items/2", &[], &big).await;
    assert_eq!(status, 200);
    assert_eq!(body["got"], 4096, "the fallback got the whole request body");
    let s = wait_stats(&proxy, "items", "a request too large to copy", |s| {
        s["skipped_by_reason"]["request_body_too_large"].as_u64() == Some(1)
    })
    .await;
    assert_eq!(num(&s, "compared"), 0, "{s:#}");
    assert!(
        candidate.received().iter().all(|r| r.method != "POST"),
        "a request body over the bound is not copied: {:?}",
        candidate.received()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_applies_a_new_copy_cap() {
    let (legacy, candidate, proxy) = capped_proxy(1).await;
    let raised = capped_config(&legacy, &candidate, 50);
    proxy.rewrite_config(&raised);
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 200, "{body}");
    strangler_e2e::eventually(WAIT, "the raised cap's config is live", async || {
        proxy.has_version_of(raised.as_bytes()).await
    })
    .await;

    let client = http_client();
    let requests = (0..10).map(|i| {
        let client = client.clone();
        let url = proxy.url(&format!("/items/{i}"));
        async move { client.get(url).send().await.expect("GET").status().as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let s = wait_stats(&proxy, "items", "all 10 accounted for", |s| {
        num(s, "copied") + num(s, "dropped") >= 10
    })
    .await;
    assert_eq!(
        num(&s, "dropped"),
        0,
        "10 copies fit under the reloaded cap of 50: {s:#}"
    );
}
