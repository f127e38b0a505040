//! Reload: every trigger, rejected configs, and reloads under load never failing a request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use strangler_e2e::{eventually, http_client, routes_yaml, Backend, Proxy};

const RELOAD_WITHIN: Duration = Duration::from_secs(10);

/// Route `svc` (prefix /svc, extracted) pointing at upstream `target` ("a" or "b").
fn config(legacy: &Backend, a: &Backend, b: &Backend, target: &str) -> String {
    routes_yaml(
        &[("legacy", &legacy.url), ("a", &a.url), ("b", &b.url)],
        &format!(
            "routes:\n  - name: svc\n    match: {{prefix: /svc}}\n    upstream: {target}\n    mode: extracted\n"
        ),
    )
}

struct Setup {
    _legacy: Backend,
    _a: Backend,
    _b: Backend,
    proxy: Proxy,
    to_b: String,
}

async fn setup(configmap: bool) -> Setup {
    let legacy = Backend::echo("legacy").await;
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let to_a = config(&legacy, &a, &b, "a");
    let to_b = config(&legacy, &a, &b, "b");
    let builder = Proxy::builder(&to_a);
    let proxy = if configmap {
        builder.configmap().start().await
    } else {
        builder.start().await
    };
    assert_eq!(proxy.served_by("/svc/1", &[]).await, "a");
    assert!(
        proxy.has_version_of(to_a.as_bytes()).await,
        "GET /routes version is not the SHA-256 of the file: {}",
        proxy.routes().await
    );
    Setup {
        _legacy: legacy,
        _a: a,
        _b: b,
        proxy,
        to_b,
    }
}

/// Waits until /svc is served by `b` and /routes reports the version of `yaml`.
async fn wait_for_b(proxy: &Proxy, yaml: &str) {
    eventually(RELOAD_WITHIN, "/svc moves to upstream b", async || {
        proxy.served_by("/svc/1", &[]).await == "b"
    })
    .await;
    eventually(
        RELOAD_WITHIN,
        "GET /routes version becomes the SHA-256 of the new file",
        async || proxy.has_version_of(yaml.as_bytes()).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_written_in_place() {
    let s = setup(false).await;
    s.proxy.rewrite_config(&s.to_b);
    wait_for_b(&s.proxy, &s.to_b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_the_file_is_replaced_by_rename() {
    let s = setup(false).await;
    s.proxy.replace_config_by_rename(&s.to_b);
    wait_for_b(&s.proxy, &s.to_b).await;
    // And again: the watch must survive the first rename (the watched inode is gone).
    let back = s.proxy.config_bytes();
    let to_a = String::from_utf8(back)
        .expect("utf-8")
        .replace("upstream: b", "upstream: a");
    s.proxy.replace_config_by_rename(&to_a);
    eventually(RELOAD_WITHIN, "/svc moves back to a", async || {
        s.proxy.served_by("/svc/1", &[]).await == "a"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_a_configmap_symlink_is_swapped() {
    let mut s = setup(true).await;
    let to_b = s.to_b.clone();
    s.proxy.configmap_swap(&to_b);
    wait_for_b(&s.proxy, &to_b).await;
    // A second swap works too.
    let to_a = to_b.replace("upstream: b", "upstream: a");
    s.proxy.configmap_swap(&to_a);
    eventually(RELOAD_WITHIN, "/svc moves back to a", async || {
        s.proxy.served_by("/svc/1", &[]).await == "a"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_sighup() {
    let s = setup(false).await;
    s.proxy.replace_config_by_rename(&s.to_b);
    s.proxy.reload_signal();
    wait_for_b(&s.proxy, &s.to_b).await;
    // The process is still the same one, still serving.
    assert_eq!(s.proxy.served_by("/other", &[]).await, "legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_even_an_unchanged_file() {
    // With the file untouched no watcher fires, so only SIGHUP itself can cause this reload,
    // which `strangler_config_reloads_total{result="ok"}` counts.
    let s = setup(false).await;
    let ok = async || {
        s.proxy
            .metrics()
            .await
            .sum("strangler_config_reloads_total", &[("result", "ok")])
    };
    let before = ok().await;
    s.proxy.reload_signal();
    eventually(
        RELOAD_WITHIN,
        "SIGHUP counts as a successful reload",
        async || ok().await > before,
    )
    .await;
    assert_eq!(s.proxy.served_by("/svc/1", &[]).await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_on_post_reload_and_answers_the_version() {
    let s = setup(false).await;
    s.proxy.replace_config_by_rename(&s.to_b);
    let (status, body) = s.proxy.post_reload().await;
    assert_eq!(status, 200, "POST /reload: {body}");
    let version = body["version"].as_str().expect("version in POST /reload");
    assert!(
        strangler_e2e::proxy::version_matches(version, s.to_b.as_bytes()),
        "POST /reload version {version} is not the SHA-256 of the file"
    );
    // POST /reload is synchronous: the new routes serve as soon as it answers.
    assert_eq!(s.proxy.served_by("/svc/1", &[]).await, "b");
    assert!(s.proxy.has_version_of(s.to_b.as_bytes()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reports_source_loaded_at_and_routes() {
    let s = setup(false).await;
    let routes = s.proxy.routes().await;
    assert!(
        routes["loaded_at"].as_str().is_some_and(is_rfc3339),
        "{routes}"
    );
    let source = routes["source"].as_str().expect("source");
    assert!(source.ends_with("routes.yaml"), "source {source}");
    assert_eq!(routes["fallback"], "legacy");
    assert!(routes["last_error"].is_null());
    assert!(routes["upstreams"].is_object());
    let list = routes["routes"].as_array().expect("routes list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "svc");
    assert_eq!(list[0]["upstream"], "a");
    assert_eq!(list[0]["mode"], "extracted");
    for key in ["match", "percent", "sticky"] {
        assert!(
            list[0].get(key).is_some(),
            "routes[0] lacks {key}: {routes}"
        );
    }
    assert!(routes["upstreams"].get("a").is_some(), "{routes}");
}

/// Loose RFC 3339 check: `YYYY-MM-DDTHH:MM:SS` then fraction/offset.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with('Z') || s.ends_with('z') || s[19..].contains(['+', '-']))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reloads_keep_the_old_routes_and_report_the_error() {
    let s = setup(false).await;
    let proxy = &s.proxy;
    let errors_before = proxy
        .metrics()
        .await
        .sum("strangler_config_reloads_total", &[("result", "error")]);

    // A syntax error.
    let broken = "upstreams:\n  legacy: [unclosed\nfallback: legacy\nroutes: {\n";
    proxy.replace_config_by_rename(broken);
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 422, "POST /reload on a broken file: {body}");
    let errors = body["errors"].as_array().expect("errors array");
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.as_str().is_some_and(|t| !t.is_empty())),
        "errors must be non-empty texts: {body}"
    );
    let routes = proxy.routes().await;
    let last_error = &routes["last_error"];
    assert!(
        last_error["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "last_error.message: {routes}"
    );
    assert!(
        last_error["at"].as_str().is_some_and(is_rfc3339),
        "last_error.at: {routes}"
    );
    assert_eq!(
        proxy.served_by("/svc/1", &[]).await,
        "a",
        "old routes serve"
    );

    // Valid YAML that names an unknown upstream.
    let unknown = s.to_b.replace("upstream: b", "upstream: nowhere");
    proxy.replace_config_by_rename(&unknown);
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 422, "POST /reload with an unknown upstream: {body}");
    assert!(
        body["errors"].to_string().contains("nowhere"),
        "the error names the unknown upstream: {body}"
    );
    assert_eq!(
        proxy.served_by("/svc/1", &[]).await,
        "a",
        "old routes serve"
    );
    assert!(!proxy.has_version_of(unknown.as_bytes()).await);
    let errors_after = proxy
        .metrics()
        .await
        .sum("strangler_config_reloads_total", &[("result", "error")]);
    assert!(
        errors_after >= errors_before + 2.0,
        "reloads_total{{result=\"error\"}} went from {errors_before} to {errors_after}"
    );

    // A good file clears last_error.
    proxy.replace_config_by_rename(&s.to_b);
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 200, "{body}");
    wait_for_b(proxy, &s.to_b).await;
    let routes = proxy.routes().await;
    assert!(
        routes["last_error"].is_null(),
        "last_error not cleared: {routes}"
    );
    assert!(
        proxy
            .metrics()
            .await
            .sum("strangler_config_reloads_total", &[("result", "ok")])
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_change_is_rejected_by_the_watcher_too() {
    let s = setup(false).await;
    let unknown = s.to_b.replace("upstream: b", "upstream: nowhere");
    s.proxy.replace_config_by_rename(&unknown);
    eventually(RELOAD_WITHIN, "last_error is set", async || {
        !s.proxy.routes().await["last_error"].is_null()
    })
    .await;
    assert_eq!(s.proxy.served_by("/svc/1", &[]).await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_fail_no_request() {
    let legacy = Backend::echo("legacy").await;
    let a = Backend::echo("a").await;
    let b = Backend::echo("b").await;
    let to_a = config(&legacy, &a, &b, "a");
    let to_b = config(&legacy, &a, &b, "b");
    let proxy = Proxy::start(&to_a).await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let url = proxy.url("/svc/load");
        let stop = stop.clone();
        let ok = ok.clone();
        let done = done.clone();
        let progress = progress.clone();
        clients.push(tokio::spawn(async move {
            let client = http_client();
            let mut failures = Vec::new();
            // Bounded: at most 25,000 requests per client.
            for _ in 0..25_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match client.get(&url).send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let json: serde_json::Value = resp.json().await.unwrap_or_default();
                        let backend = json["backend"].as_str().unwrap_or_default();
                        if status == 200 && (backend == "a" || backend == "b") {
                            ok.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failures.push(format!("status {status} backend {backend:?}"));
                        }
                    }
                    Err(e) => failures.push(format!("error {e}")),
                }
                progress.fetch_add(1, Ordering::SeqCst);
            }
            done.fetch_add(1, Ordering::SeqCst);
            failures
        }));
    }

    for i in 0..50 {
        let next = if i % 2 == 0 { &to_b } else { &to_a };
        proxy.replace_config_by_rename(next);
        let (status, body) = proxy.post_reload().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        // Let some requests through on each config (bounded by count, not time).
        let seen = progress.load(Ordering::SeqCst);
        eventually(Duration::from_secs(10), "requests progress", async || {
            progress.load(Ordering::SeqCst) >= seen + 4 || done.load(Ordering::SeqCst) == 4
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client task"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads, e.g. {:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::SeqCst),
        &failures[..failures.len().min(5)]
    );
    assert!(a.hits() > 0 && b.hits() > 0, "both configs served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let legacy = Backend::echo("legacy").await;
    let a = Backend::slow("a", Duration::from_secs(1)).await;
    let b = Backend::echo("b").await;
    let to_a = config(&legacy, &a, &b, "a");
    let to_b = config(&legacy, &a, &b, "b");
    let proxy = Proxy::start(&to_a).await;
    let url = proxy.url("/svc/in-flight");
    let in_flight = tokio::spawn(async move {
        let resp = http_client().get(&url).send().await?;
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await?;
        Ok::<_, reqwest::Error>((status, json))
    });
    eventually(RELOAD_WITHIN, "the slow request reaches a", async || {
        a.hits() >= 1
    })
    .await;
    proxy.replace_config_by_rename(&to_b);
    let (status, body) = proxy.post_reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(proxy.served_by("/svc/new", &[]).await, "b");
    let (status, json) = in_flight
        .await
        .expect("client task")
        .expect("the in-flight request completes across the reload");
    assert_eq!(status, 200);
    assert_eq!(json["backend"], "a");
}
