//! Safety nets: failover to the legacy fallback (only for requests that can be replayed, and
//! at most once), retries within a budget, circuit breakers, outlier ejection, and gated
//! promotion with automatic rollback (`GET /promotions`), each against the real binary.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strangler_e2e::backend::{Backend, Scripted, Switch};
use strangler_e2e::{eventually, http_client, refusing_url, routes_yaml, CliOutput, Proxy};

/// How long asynchronous effects (metrics, logs, reloads) may take to show up.
const WAIT: Duration = Duration::from_secs(10);
/// How long a promotion walk or a rollback may take under the background load.
const WALK: Duration = Duration::from_secs(25);
/// Bound for one-shot CLI commands.
const CLI: Duration = Duration::from_secs(20);

/// One route on `prefix` to `upstream` in `mode`, then `extra` lines verbatim (indented by four
/// spaces, as route keys are).
fn route(name: &str, prefix: &str, upstream: &str, mode: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{prefix: {prefix}}}\n    upstream: {upstream}\n    mode: {mode}\n{extra}"
    )
}

/// A config with `legacy` as the fallback, `new` as the route's upstream (a URL or a long form
/// in flow style), and the routes.
fn config(legacy: &str, new: &str, routes: &[String]) -> String {
    let mut text = String::from("routes:\n");
    for r in routes {
        text.push_str(r);
    }
    routes_yaml(&[("legacy", legacy), ("new", new)], &text)
}

/// An answer a client got: status and body (JSON when it parses, else a string).
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
}

async fn send(req: reqwest::RequestBuilder) -> Answer {
    let resp = req.send().await.expect("request through the proxy");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, body }
}

async fn get(proxy: &Proxy, path: &str) -> Answer {
    send(http_client().get(proxy.url(path))).await
}

async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    proxy.metrics().await.sum(name, labels)
}

/// The access-log lines (`--log-format json`, target `strangler::access`) logged so far.
fn access_log(proxy: &Proxy) -> Vec<Value> {
    proxy
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "strangler::access")
        .collect()
}

/// A JSON answer that depends on the path only: legacy and candidate serve the same.
fn catalog(path: &str) -> Value {
    json!({"path": path, "items": [{"id": 1, "price_cents": 250}, {"id": 2, "price_cents": 990}]})
}

/// A legacy fallback that answers `{"backend": "legacy", "path": PATH}` and keeps what it got.
async fn scripted_legacy() -> Scripted {
    Scripted::json(|r, _| json!({"backend": "legacy", "path": r.path})).await
}

/// A config with `legacy` as the fallback and one route `items` on `/items` to `new` in `mode`,
/// then `extra` lines (as for [`route`]).
fn items_config(legacy: &str, new: &str, mode: &str, extra: &str) -> String {
    config(legacy, new, &[route("items", "/items", "new", mode, extra)])
}

/// `strangler_failovers_total` of `route` for `reason`.
async fn failovers(proxy: &Proxy, route: &str, reason: &str) -> f64 {
    metric(
        proxy,
        "strangler_failovers_total",
        &[("route", route), ("reason", reason)],
    )
    .await
}

/// GETs `/items/0` to `/items/{n - 1}` and checks that legacy answered each with a 200.
async fn assert_legacy_serves(proxy: &Proxy, n: usize) {
    for i in 0..n {
        let a = get(proxy, &format!("/items/{i}")).await;
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body["backend"], "legacy", "{a:?}");
    }
}

/// POSTs the JSON `body` to `path` with an `Idempotency-Key` of `key`.
async fn post_with_key(proxy: &Proxy, path: &str, key: &str, body: &str) -> Answer {
    send(
        http_client()
            .post(proxy.url(path))
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_serves_safe_requests_from_legacy_when_the_upstream_refuses() {
    let legacy = scripted_legacy().await;
    let down = refusing_url();
    let yaml = items_config(&legacy.url, &down, "extracted", "    failover: true\n");
    let proxy = Proxy::builder(&yaml).json_logs().start().await;

    for i in 0..5 {
        let a = get(&proxy, &format!("/items/{i}")).await;
        assert_eq!(a.status, 200, "GET failed over to legacy: {a:?}");
        assert_eq!(a.body["backend"], "legacy", "{a:?}");
        assert_eq!(a.body["path"], format!("/items/{i}"), "{a:?}");
    }
    let m = proxy.metrics().await;
    assert_eq!(
        m.sum(
            "strangler_failovers_total",
            &[("route", "items"), ("reason", "connect")]
        ),
        5.0,
        "failovers by reason connect:\n{}",
        m.text
    );
    assert!(
        m.sum(
            "strangler_upstream_errors_total",
            &[("upstream", "new"), ("kind", "connect")]
        ) >= 5.0
    );

    // A POST without an idempotency key is never replayed: the client gets the 502.
    let a = send(
        http_client()
            .post(proxy.url("/items"))
            .header("content-type", "application/json")
            .body(r#"{"order": 1}"#),
    )
    .await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.body["route"], "items", "{a:?}");
    assert_eq!(a.body["upstream"], "new", "{a:?}");
    assert!(
        legacy.received().iter().all(|r| r.method != "POST"),
        "legacy must never see the POST: {:?}",
        legacy.received()
    );
    assert_eq!(
        metric(&proxy, "strangler_failovers_total", &[("route", "items")]).await,
        5.0
    );

    // The access log says how each request went.
    eventually(
        WAIT,
        "access log lines with attempts and failover",
        async || {
            let lines = access_log(&proxy);
            let failed_over = lines
                .iter()
                .filter(|l| l["fields"]["failover"] == "connect" && l["fields"]["attempts"] == 1)
                .count();
            let post = lines
                .iter()
                .any(|l| l["fields"]["method"] == "POST" && l["fields"]["status"] == 502);
            failed_over == 5 && post
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_timeout_serves_gets_and_never_replays_posts() {
    let legacy = scripted_legacy().await;
    // Answers only after a minute: every request to it times out.
    let hanging = Backend::slow("hanging", Duration::from_secs(60)).await;
    let yaml = items_config(
        &legacy.url,
        &format!("{{url: {}, timeout: 300ms}}", hanging.url),
        "extracted",
        "    failover: true\n",
    );
    let proxy = Proxy::start(&yaml).await;

    assert_legacy_serves(&proxy, 3).await;
    assert_eq!(hanging.hits(), 3, "each GET tried the upstream once");
    assert_eq!(failovers(&proxy, "items", "timeout").await, 3.0);

    // A POST without a key: 504, and not replayed on legacy.
    let a = send(http_client().post(proxy.url("/items")).body("plain post")).await;
    assert_eq!(a.status, 504, "{a:?}");
    assert_eq!(hanging.hits(), 4, "the POST went to the upstream once");
    assert!(
        legacy.received().iter().all(|r| r.method != "POST"),
        "legacy must never see a POST without a key: {:?}",
        legacy.received()
    );

    // With an Idempotency-Key the POST may be replayed: legacy gets the same body.
    let body = r#"{"order": 7, "qty": 2}"#;
    let a = post_with_key(&proxy, "/items/orders", "k-timeout-1", body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["backend"], "legacy", "{a:?}");
    let posts: Vec<_> = legacy
        .received()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].body, body.as_bytes(), "the same body failed over");
    assert_eq!(posts[0].header("idempotency-key"), Some("k-timeout-1"));
    assert_eq!(failovers(&proxy, "items", "timeout").await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_post_fails_over_with_the_same_body() {
    let legacy = scripted_legacy().await;
    let yaml = config(
        &legacy.url,
        &refusing_url(),
        &[route(
            "orders",
            "/orders",
            "new",
            "extracted",
            "    failover: true\n",
        )],
    );
    let proxy = Proxy::start(&yaml).await;

    let body = r#"{"customer_id": 1, "items": [{"product_id": 7, "qty": 2}]}"#;
    let a = post_with_key(&proxy, "/orders", "order-42", body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.body["backend"], "legacy", "{a:?}");
    let got = legacy.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/orders");
    assert_eq!(got[0].body, body.as_bytes());
    assert_eq!(got[0].header("idempotency-key"), Some("order-42"));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    assert_eq!(failovers(&proxy, "orders", "connect").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_happens_at_most_once() {
    // The upstream refuses and legacy answers 503: the client gets legacy's 503, legacy got
    // exactly one request (no second failover, and retries stay on the upstream).
    let legacy = Backend::status("legacy", 503).await;
    let yaml = items_config(
        &legacy.url,
        &refusing_url(),
        "extracted",
        "    failover: {on: [connect, timeout, 5xx]}\n    retries: {attempts: 2, budget: 100, on: [connect, 5xx], backoff: 1ms}\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let a = get(&proxy, "/items/1").await;
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.body["backend"], "legacy", "legacy's own answer: {a:?}");
    assert_eq!(legacy.hits(), 1, "legacy got exactly one request");
    assert_eq!(
        metric(&proxy, "strangler_failovers_total", &[("route", "items")]).await,
        1.0
    );
    drop(proxy);

    // Both down: the client gets the error.
    let yaml = items_config(
        &refusing_url(),
        &refusing_url(),
        "extracted",
        "    failover: true\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let a = get(&proxy, "/items/1").await;
    assert_eq!(a.status, 502, "{a:?}");
    assert_eq!(a.body["route"], "items", "{a:?}");
    assert_eq!(
        metric(&proxy, "strangler_failovers_total", &[("route", "items")]).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_5xx_serves_gets_from_legacy() {
    let legacy = scripted_legacy().await;
    let broken = Backend::status("new", 503).await;
    let yaml = items_config(
        &legacy.url,
        &broken.url,
        "extracted",
        "    failover: {on: [connect, timeout, 5xx]}\n",
    );
    let proxy = Proxy::start(&yaml).await;
    assert_legacy_serves(&proxy, 10).await;
    assert_eq!(broken.hits(), 10, "each GET tried the upstream once");
    assert_eq!(legacy.hits(), 10);
    assert_eq!(failovers(&proxy, "items", "5xx").await, 10.0);
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_the_load_on_a_failing_upstream() {
    let legacy = Backend::echo("legacy").await;
    let down = Backend::status("new", 503).await;
    let yaml = items_config(
        &legacy.url,
        &down.url,
        "extracted",
        "    retries: {attempts: 3, budget: 20, on: [5xx], backoff: 1ms}\n",
    );
    let proxy = Proxy::start(&yaml).await;
    const N: usize = 200;
    for i in 0..N {
        let a = get(&proxy, &format!("/items/{i}")).await;
        assert_eq!(a.status, 503, "the outage shows: {a:?}");
    }
    let hits = down.hits();
    // Without a budget it would be 4 x 200 = 800. With one: 20% of the requests plus a
    // reserve of 10, and a small margin.
    let cap = N + N / 5 + 10 + 5;
    assert!(
        hits <= cap,
        "the upstream saw {hits} requests for {N} client requests (cap {cap})"
    );
    assert!(hits > N, "some retries were sent ({hits})");
    let retries = metric(&proxy, "strangler_retries_total", &[("upstream", "new")]).await;
    assert!(retries > 0.0, "strangler_retries_total counts them");
    assert_eq!(
        retries as usize,
        hits - N,
        "one retry metric per extra request"
    );
    assert_eq!(legacy.hits(), 0, "no failover configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_upstream() {
    let legacy = Backend::echo("legacy").await;
    // 503 on every other call.
    let flaky = Backend::programmed(|c| {
        if c.n % 2 == 1 {
            (503, json!({"error": "flaky"}))
        } else {
            (200, json!({"backend": "new", "path": c.path}))
        }
    })
    .await;
    let yaml = items_config(
        &legacy.url,
        &flaky.url,
        "extracted",
        "    retries: {attempts: 2, budget: 100, on: [5xx], backoff: 1ms}\n",
    );
    let proxy = Proxy::start(&yaml).await;
    for i in 0..30 {
        let a = get(&proxy, &format!("/items/{i}")).await;
        assert_eq!(a.status, 200, "request {i}: {a:?}");
        assert_eq!(a.body["backend"], "new", "{a:?}");
    }
    assert!(flaky.hits() > 30, "some requests were retried");
    assert!(metric(&proxy, "strangler_retries_total", &[("upstream", "new")]).await > 0.0);
    assert_eq!(legacy.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Circuit breaker
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_fails_fast_and_closes_after_a_probe() {
    let legacy = Backend::echo("legacy").await;
    let healthy = Switch::new();
    let flag = healthy.clone();
    let new = Backend::programmed(move |c| {
        if flag.is_on() {
            (200, json!({"backend": "new", "path": c.path}))
        } else {
            (503, json!({"backend": "new", "error": "down"}))
        }
    })
    .await;
    let open_for = Duration::from_secs(1);
    let yaml = items_config(
        &legacy.url,
        &format!(
            "{{url: {}, circuit_breaker: {{consecutive_failures: 3, open_for: 1s}}}}",
            new.url
        ),
        "extracted",
        "",
    );
    let proxy = Proxy::start(&yaml).await;

    for _ in 0..3 {
        let a = get(&proxy, "/items/1").await;
        assert_eq!(a.status, 503, "{a:?}");
        assert_eq!(a.body["backend"], "new", "the upstream's own 503: {a:?}");
    }
    assert_eq!(new.hits(), 3);

    // Open: fail fast without contacting the upstream.
    let started = Instant::now();
    const FAST: usize = 5;
    for _ in 0..FAST {
        let a = get(&proxy, "/items/1").await;
        assert_eq!(a.status, 503, "{a:?}");
        assert!(
            a.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("circuit")),
            "made by the proxy: {a:?}"
        );
        assert_eq!(a.body["upstream"], "new", "{a:?}");
    }
    // A probe may only have gone through if the requests above took longer than open_for.
    let probes = (started.elapsed().as_millis() / open_for.as_millis()) as usize;
    assert!(
        new.hits() <= 3 + probes,
        "the upstream was contacted while the circuit was open: {} hits",
        new.hits()
    );
    let m = proxy.metrics().await;
    let fast = m.sum(
        "strangler_upstream_errors_total",
        &[("upstream", "new"), ("kind", "circuit_open")],
    );
    assert!(
        fast >= (FAST - probes) as f64,
        "circuit_open counted {fast}:\n{}",
        m.text
    );
    assert!(
        m.sum(
            "strangler_circuit_transitions_total",
            &[("upstream", "new"), ("state", "open")]
        ) >= 1.0,
        "{}",
        m.text
    );

    // The upstream recovers; after open_for a probe goes through and closes the circuit.
    healthy.set(true);
    let before = new.hits();
    eventually(
        Duration::from_secs(10),
        "a probe closes the circuit",
        async || get(&proxy, "/items/2").await.status == 200,
    )
    .await;
    assert!(new.hits() > before, "the probe reached the upstream");
    for i in 0..5 {
        let a = get(&proxy, &format!("/items/{i}")).await;
        assert_eq!(a.status, 200, "closed again: {a:?}");
        assert_eq!(a.body["backend"], "new");
    }
    let m = proxy.metrics().await;
    assert!(
        m.sum(
            "strangler_circuit_transitions_total",
            &[("upstream", "new"), ("state", "closed")]
        ) >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(legacy.hits(), 0, "no failover configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_circuit_fails_over_to_legacy() {
    let legacy = scripted_legacy().await;
    let yaml = items_config(
        &legacy.url,
        &format!(
            "{{url: {}, circuit_breaker: {{consecutive_failures: 3, open_for: 30s}}}}",
            refusing_url()
        ),
        "extracted",
        "    failover: true\n",
    );
    let proxy = Proxy::start(&yaml).await;
    assert_legacy_serves(&proxy, 10).await;
    assert_eq!(legacy.hits(), 10);
    let m = proxy.metrics().await;
    let f = |reason| {
        m.sum(
            "strangler_failovers_total",
            &[("route", "items"), ("reason", reason)],
        )
    };
    assert_eq!(f("connect"), 3.0, "{}", m.text);
    assert_eq!(f("circuit_open"), 7.0, "{}", m.text);
    assert_eq!(
        m.sum(
            "strangler_upstream_errors_total",
            &[("upstream", "new"), ("kind", "circuit_open")]
        ),
        7.0
    );
}

// ---------------------------------------------------------------------------------------------
// Outlier ejection
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_takes_a_failing_instance_out_of_rotation() {
    let legacy = Backend::echo("legacy").await;
    let good = Backend::programmed(|c| (200, json!({"instance": "good", "path": c.path}))).await;
    let bad = Backend::status("bad", 503).await;
    let yaml = items_config(
        &legacy.url,
        &format!(
            "{{urls: [{}, {}], outlier: {{consecutive_failures: 2, eject_for: 30s}}}}",
            good.url, bad.url
        ),
        "extracted",
        "    retries: {attempts: 2, budget: 100, on: [5xx], backoff: 1ms}\n",
    );
    let proxy = Proxy::start(&yaml).await;

    let mut sent = 0;
    loop {
        for _ in 0..10 {
            let _ = get(&proxy, &format!("/items/{sent}")).await;
            sent += 1;
        }
        let ejected = metric(
            &proxy,
            "strangler_outlier_ejections_total",
            &[("upstream", "new")],
        )
        .await;
        if ejected >= 1.0 {
            break;
        }
        assert!(
            sent < 300,
            "no ejection after {sent} requests (bad hits {})",
            bad.hits()
        );
    }
    assert!(bad.hits() >= 2, "the bad instance got traffic first");

    let bad_hits = bad.hits();
    let good_hits = good.hits();
    for i in 0..50 {
        let a = get(&proxy, &format!("/items/after/{i}")).await;
        assert_eq!(a.status, 200, "no client error after the ejection: {a:?}");
        assert_eq!(a.body["instance"], "good", "{a:?}");
    }
    assert_eq!(bad.hits(), bad_hits, "the ejected instance got no traffic");
    assert_eq!(good.hits(), good_hits + 50);
    assert_eq!(
        metric(
            &proxy,
            "strangler_outlier_ejections_total",
            &[("upstream", "new")]
        )
        .await,
        1.0
    );
    assert_eq!(legacy.hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Gated promotion and rollback
// ---------------------------------------------------------------------------------------------

/// The promotion plan the walks use: fast steps, generous latency limit.
const PLAN: &str = "    promote: {min_compared: 20, min_match: 99, steps: [25, 50, 100], dwell: 300ms, min_requests: 5, interval: 200ms, max_error_rate: 1, max_p99_ratio: 1000}\n";

/// A bounded background load of GETs with varied sticky keys; records every failure.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` loops of GETs on `/items/N` (at most `max` requests in all).
    fn start(proxy: &Proxy, workers: usize, max: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let base = proxy.url("");
        let tasks = (0..workers)
            .map(|_| {
                let (stop, sent, failures, base) =
                    (stop.clone(), sent.clone(), failures.clone(), base.clone());
                tokio::spawn(async move {
                    let client = http_client();
                    while !stop.load(Ordering::SeqCst) {
                        let i = sent.fetch_add(1, Ordering::SeqCst);
                        if i >= max {
                            break;
                        }
                        let result = client
                            .get(format!("{base}/items/{}", i % 40))
                            .header("x-user-id", format!("user-{i}"))
                            .send()
                            .await;
                        match result {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                            }
                            Ok(r) => {
                                let status = r.status();
                                let body = r.text().await.unwrap_or_default();
                                failures
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .push(format!("{status} {body}"));
                            }
                            Err(e) => failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            sent,
            failures,
            tasks,
        }
    }

    /// Stops it; returns (requests sent, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

/// `GET /promotions`, the entry of route `name`.
async fn promotion(proxy: &Proxy, name: &str) -> Value {
    let resp = http_client()
        .get(proxy.admin_url("/promotions"))
        .send()
        .await
        .expect("GET /promotions");
    assert_eq!(resp.status(), 200, "GET /promotions");
    let doc: Value = resp.json().await.expect("GET /promotions JSON");
    doc["routes"][name].clone()
}

/// Waits until route `name`'s phase is `phase`; panics with the last state otherwise.
async fn wait_phase(proxy: &Proxy, name: &str, phase: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let p = promotion(proxy, name).await;
        if p["phase"] == phase {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "route {name} not in phase {phase} within {within:?}; last state:\n{p:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The (from, to) pairs of a plan's history entries with this decision.
fn decisions(p: &Value, decision: &str) -> Vec<(String, String)> {
    p["history"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|h| h["decision"] == decision)
        .map(|h| {
            (
                h["from"].as_str().unwrap_or_default().to_string(),
                h["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pairs(steps: &[(&str, &str)]) -> Vec<(String, String)> {
    steps
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// A config whose route `items` starts in shadow, sticky on `x-user-id`, with `extra` lines and
/// the [`PLAN`].
fn walk_config(legacy: &str, new: &str, extra: &str) -> String {
    items_config(
        legacy,
        new,
        "shadow",
        &format!("    sticky: header:x-user-id\n{extra}{PLAN}"),
    )
}

/// Stops `load` and checks that none of its client requests failed.
async fn assert_load_served(load: Load) {
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} client requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// Checks that the plan's last promotion took the route from canary 100% to extracted.
fn assert_last_promotion_to_extracted(p: &Value) {
    assert_eq!(
        decisions(p, "promote").last(),
        Some(&("canary 100%".to_string(), "extracted".to_string())),
        "{p:#}"
    );
}

/// `strangler_promotion_rollbacks_total` of route `items`.
async fn promotion_rollbacks(proxy: &Proxy) -> f64 {
    metric(
        proxy,
        "strangler_promotion_rollbacks_total",
        &[("route", "items")],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_walks_every_step_to_extracted() {
    let legacy = Scripted::json(|r, _| catalog(&r.path)).await;
    let candidate = Scripted::json(|r, _| catalog(&r.path)).await;
    let yaml = walk_config(&legacy.url, &candidate.url, "");
    let proxy = Proxy::start(&yaml).await;
    let file_before = proxy.config_bytes();
    let p = promotion(&proxy, "items").await;
    assert_eq!(p["phase"], "shadow", "{p:#}");
    assert_eq!(p["file_mode"], "shadow", "{p:#}");

    let load = Load::start(&proxy, 4, 30_000);
    let p = wait_phase(&proxy, "items", "extracted", WALK).await;
    assert_load_served(load).await;

    assert_eq!(
        decisions(&p, "promote"),
        pairs(&[
            ("shadow", "canary 25%"),
            ("canary 25%", "canary 50%"),
            ("canary 50%", "canary 100%"),
            ("canary 100%", "extracted"),
        ]),
        "every step in order:\n{p:#}"
    );
    assert!(decisions(&p, "rollback").is_empty(), "{p:#}");
    assert!(p["rolled_back"].is_null(), "{p:#}");
    assert_eq!(p["mode"], "extracted", "{p:#}");
    assert_eq!(
        p["file_mode"], "shadow",
        "the file still says shadow: {p:#}"
    );
    for h in p["history"].as_array().expect("history") {
        assert!(h["evidence"].is_object(), "each decision has evidence: {h}");
    }
    assert_eq!(
        metric(&proxy, "strangler_promotion_percent", &[("route", "items")]).await,
        100.0
    );

    // The candidate serves now; legacy gets nothing (no shadow copy once extracted).
    let (c0, l0) = (candidate.hits(), legacy.hits());
    for i in 0..10 {
        let a = send(
            http_client()
                .get(proxy.url(&format!("/items/{i}")))
                .header("x-user-id", format!("after-{i}")),
        )
        .await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(candidate.hits(), c0 + 10, "the candidate serves");
    assert_eq!(legacy.hits(), l0, "legacy is out of the path");

    // The proxy never rewrites the file.
    assert_eq!(proxy.config_bytes(), file_before, "routes.yaml unchanged");

    // `strangler status` shows the live state.
    let admin = proxy.admin_addr().to_string();
    let out = CliOutput::run(&["status", "--admin", &admin], proxy.dir(), CLI);
    assert_eq!(out.code, Some(0), "status: {out:?}");
    assert!(out.stdout.contains("items"), "{}", out.stdout);
    assert!(
        out.stdout.contains("extracted"),
        "status shows the promotion: {}",
        out.stdout
    );
}

/// A promotion walk in shadow whose candidate starts answering differently (or erroring) at its
/// first canary step (`armed`, `wrong` drive it), behind the proxy.
struct TurningWalk {
    /// The fallback, kept alive for the walk.
    _legacy: Scripted,
    armed: Switch,
    wrong: Switch,
    /// The candidate, kept alive for the walk.
    _candidate: Backend,
    yaml: String,
    proxy: Proxy,
}

impl TurningWalk {
    /// Fixes the candidate: from now on it answers like legacy at every step.
    fn fix_candidate(&self) {
        self.armed.set(false);
        self.wrong.set(false);
    }
}

/// Starts a [`TurningWalk`] whose candidate turns to 503s (`erroring`) or a changed field, with
/// `extra` route lines before the plan.
async fn turning_walk(erroring: bool, extra: &str) -> TurningWalk {
    let legacy = Scripted::json(|r, _| catalog(&r.path)).await;
    let (armed, wrong) = (Switch::new(), Switch::new());
    armed.set(true);
    let candidate = turning_candidate(&armed, &wrong, erroring).await;
    let yaml = walk_config(&legacy.url, &candidate.url, extra);
    let proxy = Proxy::start(&yaml).await;
    TurningWalk {
        _legacy: legacy,
        armed,
        wrong,
        _candidate: candidate,
        yaml,
        proxy,
    }
}

/// Starts a [`TurningWalk`] whose candidate changes a field at its first canary step.
async fn mismatch_walk() -> TurningWalk {
    turning_walk(false, "").await
}

/// A candidate that answers like legacy until it serves a client request itself (it is at a
/// canary step), then answers 503 (`erroring`) or a changed field, as `wrong` says, while
/// `armed` is on.
async fn turning_candidate(armed: &Switch, wrong: &Switch, erroring: bool) -> Backend {
    let (armed, wrong) = (armed.clone(), wrong.clone());
    Backend::programmed(move |c| {
        if !c.shadow && armed.is_on() {
            wrong.set(true);
        }
        if !wrong.is_on() {
            (200, catalog(&c.path))
        } else if erroring {
            (503, json!({"error": "candidate broke"}))
        } else {
            let mut v = catalog(&c.path);
            v["items"][0]["price_cents"] = json!(251);
            (200, v)
        }
    })
    .await
}

/// Reloads the unchanged file and checks that the route stays rolled back (see
/// [`assert_rolled_back`]).
async fn assert_reload_keeps_rollback(proxy: &Proxy, reasons: &[&str]) {
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_rolled_back(proxy, reasons).await;
}

/// Checks a rolled-back route's state: reason, evidence, mode, metric; returns the entry.
async fn assert_rolled_back(proxy: &Proxy, reasons: &[&str]) -> Value {
    let p = promotion(proxy, "items").await;
    assert_eq!(p["phase"], "rolled_back", "{p:#}");
    assert_eq!(
        p["mode"], "shadow",
        "a rolled-back route is shadowed: {p:#}"
    );
    let rb = &p["rolled_back"];
    let reason = rb["reason"].as_str().unwrap_or_default();
    assert!(
        reasons.iter().any(|r| reason.contains(r)),
        "rollback reason {reason:?} should mention one of {reasons:?}: {p:#}"
    );
    assert!(
        rb["evidence"].is_object(),
        "rollback carries its evidence: {p:#}"
    );
    assert!(
        rb["from"].as_str().is_some_and(|f| f.starts_with("canary")),
        "rolled back from a canary step: {p:#}"
    );
    assert_eq!(rb["to"], "shadow", "{p:#}");
    assert_eq!(decisions(&p, "rollback").len(), 1, "{p:#}");
    assert_eq!(promotion_rollbacks(proxy).await, 1.0);
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_rolls_back_when_the_candidate_errors() {
    let walk = turning_walk(true, "    failover: {on: [connect, timeout, 5xx]}\n").await;
    let proxy = &walk.proxy;
    let file_before = proxy.config_bytes();

    let load = Load::start(proxy, 4, 30_000);
    wait_phase(proxy, "items", "rolled_back", WALK).await;
    assert!(walk.wrong.is_on(), "the candidate broke at a canary step");
    assert_rolled_back(proxy, &["error rate", "mismatch"]).await;

    // It stays rolled back under more load.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = assert_rolled_back(proxy, &["error rate", "mismatch"]).await;
    // Served by legacy again: the candidate only gets shadow copies.
    assert_eq!(p["percent"], 0.0, "{p:#}");

    // A reload of the unchanged file keeps the state.
    assert_reload_keeps_rollback(proxy, &["error rate", "mismatch"]).await;

    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "failover hides the candidate's errors, yet {} of {sent} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(proxy.config_bytes(), file_before, "routes.yaml unchanged");
    assert!(
        failovers(proxy, "items", "5xx").await >= 1.0,
        "the candidate's 503s failed over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_rolls_back_on_mismatch_and_restarts_when_edited() {
    let walk = mismatch_walk().await;
    let proxy = &walk.proxy;

    let load = Load::start(proxy, 4, 30_000);
    wait_phase(proxy, "items", "rolled_back", WALK).await;
    assert!(walk.wrong.is_on(), "the candidate changed at a canary step");
    assert_rolled_back(proxy, &["mismatch"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_rolled_back(proxy, &["mismatch"]).await;

    assert_reload_keeps_rollback(proxy, &["mismatch"]).await;

    // The team fixes the candidate and edits the route: the plan starts afresh from the
    // file's new mode and walks again.
    walk.fix_candidate();
    let path = proxy.config_path().to_string_lossy().into_owned();
    let out = CliOutput::run(
        &[
            "set-mode",
            "--config",
            &path,
            "items",
            "canary",
            "--percent",
            "25",
        ],
        proxy.dir(),
        CLI,
    );
    assert_eq!(out.code, Some(0), "set-mode: {out:?}");
    eventually(WAIT, "the edited route restarts its plan", async || {
        let p = promotion(proxy, "items").await;
        p["phase"] != "rolled_back" && p["rolled_back"].is_null() && p["file_mode"] == "canary"
    })
    .await;
    let p = wait_phase(proxy, "items", "extracted", WALK).await;
    assert_load_served(load).await;
    assert!(
        decisions(&p, "rollback").is_empty(),
        "a fresh history: {p:#}"
    );
    assert_last_promotion_to_extracted(&p);
    assert_eq!(promotion_rollbacks(proxy).await, 1.0, "no second rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rollback_survives_an_edit_elsewhere_in_the_file() {
    // A reload that leaves the route's definition unchanged keeps its plan state, even when
    // other lines of the file change (a comment, another route above it).
    let walk = mismatch_walk().await;
    let proxy = &walk.proxy;
    let load = Load::start(proxy, 4, 30_000);
    wait_phase(proxy, "items", "rolled_back", WALK).await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_rolled_back(proxy, &["mismatch"]).await;

    // A comment at the top: same routes, other line numbers.
    let edited = format!("# reviewed by the on-call\n{}", walk.yaml);
    proxy.rewrite_config(&edited);
    eventually(WAIT, "the edited file is loaded", async || {
        proxy.has_version_of(edited.as_bytes()).await
    })
    .await;
    let p = promotion(proxy, "items").await;
    assert_eq!(
        p["phase"], "rolled_back",
        "a comment elsewhere must not restart the route's plan:\n{p:#}"
    );
    assert_rolled_back(proxy, &["mismatch"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn erroring_extracted_route_rolls_back_even_behind_failover() {
    // Extracted (still watched), with failover on 5xx so that clients never see the
    // candidate's errors: the plan must still see them and roll back on the error rate.
    let legacy = Scripted::json(|r, _| catalog(&r.path)).await;
    let candidate = Backend::status("new", 503).await;
    let yaml = items_config(
        &legacy.url,
        &candidate.url,
        "extracted",
        &format!("    failover: {{on: [connect, timeout, 5xx]}}\n{PLAN}"),
    );
    let proxy = Proxy::start(&yaml).await;
    let p = promotion(&proxy, "items").await;
    assert_eq!(p["phase"], "extracted", "{p:#}");

    let load = Load::start(&proxy, 4, 30_000);
    let waited = tokio::time::timeout(
        Duration::from_secs(8),
        wait_phase(&proxy, "items", "rolled_back", WALK),
    )
    .await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "failover hides the errors from clients: {failures:?}"
    );
    let failovers = failovers(&proxy, "items", "5xx").await;
    let p = promotion(&proxy, "items").await;
    assert!(
        waited.is_ok(),
        "{sent} requests, {failovers} failed over on the candidate's 503s, yet no rollback:\n{p:#}"
    );
    let reason = p["rolled_back"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("error rate"), "{p:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_plan_judges_only_new_evidence() {
    // After a rollback on mismatch the candidate is fixed and the plan restarted by a person
    // (`POST /promotions/NAME/restart`): the old mismatches belong to the old run, so the
    // fresh plan walks to extracted on the candidate's new, matching answers.
    let walk = mismatch_walk().await;
    let proxy = &walk.proxy;
    let load = Load::start(proxy, 4, 30_000);
    wait_phase(proxy, "items", "rolled_back", WALK).await;
    assert_rolled_back(proxy, &["mismatch"]).await;

    walk.fix_candidate();
    let resp = http_client()
        .post(proxy.admin_url("/promotions/items/restart"))
        .send()
        .await
        .expect("POST /promotions/items/restart");
    assert_eq!(resp.status(), 200, "restart");
    let p = promotion(proxy, "items").await;
    assert_eq!(
        p["phase"], "shadow",
        "restarted from the file's mode: {p:#}"
    );
    let p = wait_phase(proxy, "items", "extracted", Duration::from_secs(15)).await;
    let (sent, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent}: {failures:?}",
        failures.len()
    );
    assert_last_promotion_to_extracted(&p);
}
