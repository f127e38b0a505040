//! Forwarding: hop-by-hop headers, X-Forwarded-*, Host, request ids, upstream base paths, query
//! strings, HTTP/2 prior knowledge, and the 502/504 error answers.

use std::time::Duration;

use strangler_e2e::{http_client, raw, refusing_url, routes_yaml, Backend, Proxy};

/// Legacy fallback plus route `svc` (prefix /svc, extracted) to an echo backend named "svc".
async fn echo_setup() -> (Backend, Backend, Proxy) {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        "routes:\n  - name: svc\n    match: {prefix: /svc}\n    upstream: svc\n    mode: extracted\n",
    );
    let proxy = Proxy::start(&yaml).await;
    (legacy, svc, proxy)
}

/// The echo backend's view of the request: its `headers` object.
fn seen_headers(resp: &strangler_e2e::RawResponse) -> serde_json::Map<String, serde_json::Value> {
    let json = resp.json();
    assert_eq!(
        json["backend"], "svc",
        "served by the svc echo backend: {json}"
    );
    json["headers"].as_object().expect("headers object").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_legacy, svc, proxy) = echo_setup().await;
    let request = "GET /svc/hop HTTP/1.1\r\n\
        Host: shop.example\r\n\
        Connection: keep-alive, X-Custom-Hop\r\n\
        X-Custom-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Proxy-Connection: keep-alive\r\n\
        Proxy-Foo: 1\r\n\
        TE: gzip\r\n\
        Trailer: X-Checksum\r\n\
        Upgrade: h2c\r\n\
        X-End-To-End: kept\r\n\
        \r\n";
    // Control: sent straight to the echo backend, every one of these headers shows up.
    let direct = raw::exchange(svc.addr, request.as_bytes())
        .await
        .expect("direct response");
    let direct = seen_headers(&direct);
    for name in [
        "x-custom-hop",
        "keep-alive",
        "proxy-foo",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(direct.contains_key(name), "control: backend shows {name}");
    }

    let resp = raw::exchange(proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    let headers = seen_headers(&resp);
    for name in [
        "x-custom-hop",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "proxy-foo",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            !headers.contains_key(name),
            "hop-by-hop request header {name} reached the upstream: {headers:?}"
        );
    }
    if let Some(conn) = headers.get("connection") {
        assert!(
            !conn
                .to_string()
                .to_ascii_lowercase()
                .contains("x-custom-hop"),
            "the client's Connection header reached the upstream: {conn}"
        );
    }
    assert_eq!(headers["x-end-to-end"], "kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_trailers_passes_even_when_connection_names_te() {
    let (_legacy, _svc, proxy) = echo_setup().await;
    let request =
        "GET /svc/grpc HTTP/1.1\r\nHost: shop.example\r\nConnection: TE\r\nTE: trailers\r\n\r\n";
    let resp = raw::exchange(proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    let headers = seen_headers(&resp);
    assert_eq!(
        headers.get("te").and_then(|v| v.as_str()),
        Some("trailers"),
        "TE: trailers must reach the upstream: {headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_returned() {
    let (_legacy, svc, proxy) = echo_setup().await;
    // The echo backend adds each `x-echo-set: Name=value` to its response.
    let request = "GET /svc/hop HTTP/1.1\r\n\
        Host: shop.example\r\n\
        x-echo-set: Connection=x-resp-hop\r\n\
        x-echo-set: X-Resp-Hop=1\r\n\
        x-echo-set: Keep-Alive=timeout=5\r\n\
        x-echo-set: Proxy-Foo=1\r\n\
        x-echo-set: Proxy-Authenticate=Basic\r\n\
        x-echo-set: Trailer=X-Checksum\r\n\
        x-echo-set: Upgrade=foo\r\n\
        x-echo-set: X-Resp-E2E=kept\r\n\
        \r\n";
    // Control: straight from the echo backend, the response carries every one of them.
    let direct = raw::exchange(svc.addr, request.as_bytes())
        .await
        .expect("direct response");
    for name in [
        "x-resp-hop",
        "keep-alive",
        "proxy-foo",
        "trailer",
        "upgrade",
    ] {
        assert!(
            direct.header(name).is_some(),
            "control: backend sends {name}: {:?}",
            direct.headers
        );
    }

    let resp = raw::exchange(proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    for name in [
        "x-resp-hop",
        "keep-alive",
        "proxy-foo",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(
            resp.header(name).is_none(),
            "hop-by-hop response header {name} reached the client: {:?}",
            resp.headers
        );
    }
    if let Some(conn) = resp.header("connection") {
        assert!(
            !conn.to_ascii_lowercase().contains("x-resp-hop"),
            "the upstream's Connection header reached the client: {conn}"
        );
    }
    assert_eq!(resp.header("x-resp-e2e"), Some("kept"));
}

const SPOOFING_REQUEST: &str = "GET /svc/fwd HTTP/1.1\r\n\
    Host: shop.example:8443\r\n\
    X-Forwarded-For: 203.0.113.7\r\n\
    X-Forwarded-Proto: https\r\n\
    X-Forwarded-Host: evil.example\r\n\
    \r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_a_trusted_peer_are_kept_and_appended_to() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        "routes:\n  - name: svc\n    match: {prefix: /svc}\n    upstream: svc\n    mode: extracted\ntrusted_proxies: [127.0.0.1/32]\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let resp = raw::exchange(proxy.addr(), SPOOFING_REQUEST.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    let headers = seen_headers(&resp);
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], "evil.example");
    assert_eq!(headers["host"], "shop.example:8443");

    // Without X-Forwarded-* of its own, the trusted peer gets them set.
    let request = "GET /svc/fwd HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    let resp = raw::exchange(proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    let headers = seen_headers(&resp);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.example");
    assert_eq!(headers["host"], "shop.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_are_replaced_and_host_passes_through() {
    let (_legacy, _svc, proxy) = echo_setup().await;
    let resp = raw::exchange(proxy.addr(), SPOOFING_REQUEST.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    let headers = seen_headers(&resp);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.example:8443");
    assert_eq!(headers["host"], "shop.example:8443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_created_when_absent_and_kept_when_present() {
    let (_legacy, _svc, proxy) = echo_setup().await;
    let client = http_client();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = client.get(proxy.url("/svc/id")).send().await.expect("GET");
        assert_eq!(resp.status(), 200);
        let returned = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-request-id returned to the client")
            .to_string();
        let json: serde_json::Value = resp.json().await.expect("echo JSON");
        let seen = json["headers"]["x-request-id"]
            .as_str()
            .expect("x-request-id sent upstream")
            .to_string();
        assert!(!seen.is_empty());
        assert_eq!(returned, seen, "the client gets the id the upstream saw");
        ids.push(seen);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");

    let resp = client
        .get(proxy.url("/svc/id"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"abc-123"[..])
    );
    let json: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(json["headers"]["x-request-id"], "abc-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_base_path_is_prepended_and_query_passes_through() {
    let legacy = Backend::echo("legacy").await;
    let with_slash = Backend::echo("with-slash").await;
    let without_slash = Backend::echo("without-slash").await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("one", &format!("{}/base/", with_slash.url)),
            ("two", &format!("{}/v2", without_slash.url)),
        ],
        r#"routes:
  - name: one
    match: {prefix: /api}
    upstream: one
    mode: extracted
  - name: two
    match: {prefix: /v}
    upstream: two
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    let client = http_client();
    for (path, backend, want) in [
        (
            "/api/items/7?q=a%20b&z=1",
            "with-slash",
            "/base/api/items/7?q=a%20b&z=1",
        ),
        ("/api", "with-slash", "/base/api"),
        ("/v/x/y", "without-slash", "/v2/v/x/y"),
        ("/v?only=query", "without-slash", "/v2/v?only=query"),
        ("/plain?k=v&k=w", "legacy", "/plain?k=v&k=w"),
    ] {
        let json: serde_json::Value = client
            .get(proxy.url(path))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("echo JSON");
        assert_eq!(json["backend"], backend, "GET {path}");
        assert_eq!(json["path"], want, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_requests_are_proxied() {
    let (_legacy, _svc, proxy) = echo_setup().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("h2c client");
    for i in 0..3 {
        let resp = client
            .get(proxy.url(&format!("/svc/h2?n={i}")))
            .send()
            .await
            .expect("h2c GET");
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let json: serde_json::Value = resp.json().await.expect("echo JSON");
        assert_eq!(json["backend"], "svc");
        assert_eq!(json["path"], format!("/svc/h2?n={i}"));
        // The :authority stands for Host.
        assert_eq!(json["headers"]["host"], proxy.addr().to_string());
    }
    let resp = client
        .post(proxy.url("/elsewhere"))
        .body("hello")
        .send()
        .await
        .expect("h2c POST");
    let json: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(json["backend"], "legacy");
    assert_eq!(json["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_slow_upstreams_give_502_and_504_json() {
    let slow = Backend::slow("slow", Duration::from_secs(3)).await;
    let yaml = format!(
        r#"upstreams:
  legacy: {dead_fallback}
  dead: {dead}
  slow: {{url: {slow}, timeout: 300ms}}
fallback: legacy
routes:
  - name: gone
    match: {{prefix: /gone}}
    upstream: dead
    mode: extracted
  - name: sluggish
    match: {{prefix: /sluggish}}
    upstream: slow
    mode: extracted
"#,
        dead_fallback = refusing_url(),
        dead = refusing_url(),
        slow = slow.url,
    );
    let proxy = Proxy::start(&yaml).await;
    let client = http_client();

    let resp = client.get(proxy.url("/gone/1")).send().await.expect("GET");
    assert_eq!(resp.status(), 502);
    let json: serde_json::Value = resp.json().await.expect("502 body is JSON");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    assert_eq!(json["route"], "gone", "{json}");
    assert_eq!(json["upstream"], "dead", "{json}");

    let resp = client
        .get(proxy.url("/sluggish/1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 504);
    let json: serde_json::Value = resp.json().await.expect("504 body is JSON");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    assert_eq!(json["route"], "sluggish", "{json}");
    assert_eq!(json["upstream"], "slow", "{json}");

    let resp = client
        .get(proxy.url("/unrouted"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 502);
    let json: serde_json::Value = resp.json().await.expect("502 body is JSON");
    assert!(
        json["route"].is_null(),
        "unrouted 502 has route null: {json}"
    );
    assert_eq!(json["upstream"], "legacy", "{json}");

    strangler_e2e::eventually(Duration::from_secs(10), "5xx counters", async || {
        let m = proxy.metrics().await;
        m.sum("strangler_requests_total", &[("status", "5xx")]) >= 3.0
    })
    .await;
    let m = proxy.metrics().await;
    let connect = m.sum(
        "strangler_upstream_errors_total",
        &[("upstream", "dead"), ("kind", "connect")],
    );
    assert!(connect >= 1.0, "connect errors: {}", m.text);
    let timeout = m.sum(
        "strangler_upstream_errors_total",
        &[("upstream", "slow"), ("kind", "timeout")],
    );
    assert!(timeout >= 1.0, "timeout errors: {}", m.text);
    for (route, upstream) in [
        ("gone", "dead"),
        ("sluggish", "slow"),
        ("_fallback", "legacy"),
    ] {
        let n = m.sum(
            "strangler_requests_total",
            &[("route", route), ("upstream", upstream), ("status", "5xx")],
        );
        assert!(
            n >= 1.0,
            "requests_total for {route}/{upstream} 5xx: {}",
            m.text
        );
    }
    // The proxy is still up.
    let health = client
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        "routes:\n  - name: svc\n    match: {prefix: /svc}\n    upstream: svc\n    mode: extracted\n",
    );
    let proxy = Proxy::builder(&yaml).json_logs().start().await;
    let client = http_client();
    for (path, id) in [("/svc/logged", "log-svc-1"), ("/nowhere", "log-fallback-1")] {
        let resp = client
            .get(proxy.url(path))
            .header("x-request-id", id)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 200);
    }
    let find = |id: &str| -> Option<serde_json::Value> {
        proxy.logs().lines().find_map(|line| {
            let json: serde_json::Value = serde_json::from_str(line).ok()?;
            (json["target"] == "strangler::access" && json["fields"]["request_id"] == id)
                .then_some(json)
        })
    };
    strangler_e2e::eventually(Duration::from_secs(10), "access log lines", async || {
        find("log-svc-1").is_some() && find("log-fallback-1").is_some()
    })
    .await;
    let line = find("log-svc-1").expect("line");
    let fields = &line["fields"];
    assert_eq!(fields["route"], "svc", "{line}");
    assert_eq!(fields["upstream"], "svc", "{line}");
    assert_eq!(fields["method"], "GET", "{line}");
    assert_eq!(fields["path"], "/svc/logged", "{line}");
    assert!(fields["status"].to_string().contains("200"), "{line}");
    assert!(!fields["duration_ms"].is_null(), "{line}");
    let line = find("log-fallback-1").expect("line");
    assert_eq!(line["fields"]["route"], "_fallback", "{line}");
    assert_eq!(line["fields"]["upstream"], "legacy", "{line}");
    let lines = proxy
        .logs()
        .lines()
        .filter(|l| l.contains("strangler::access") && l.contains("log-svc-1"))
        .count();
    assert_eq!(lines, 1, "one access line per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_timeout_gives_504_json() {
    let legacy = Backend::echo("legacy").await;
    let hole = strangler_e2e::Blackhole::new().await;
    let yaml = format!(
        r#"upstreams:
  legacy: {legacy}
  hole: {{url: {hole}, connect_timeout: 300ms}}
fallback: legacy
routes:
  - name: hole
    match: {{prefix: /hole}}
    upstream: hole
    mode: extracted
"#,
        legacy = legacy.url,
        hole = hole.url,
    );
    let proxy = Proxy::start(&yaml).await;
    let resp = http_client()
        .get(proxy.url("/hole/1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 504, "a connect timeout is a 504");
    let json: serde_json::Value = resp.json().await.expect("504 body is JSON");
    assert!(
        json["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{json}"
    );
    assert_eq!(json["route"], "hole", "{json}");
    assert_eq!(json["upstream"], "hole", "{json}");
    assert_eq!(proxy.served_by("/other", &[]).await, "legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_admin_can_come_from_the_file() {
    let legacy = Backend::echo("legacy").await;
    let proxy = Proxy::builder(&routes_yaml(&[("legacy", &legacy.url)], ""))
        .addresses_in_file()
        .start()
        .await;
    assert_eq!(proxy.served_by("/x", &[]).await, "legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_hangs_up_gives_502_json() {
    let legacy = Backend::echo("legacy").await;
    let (hang_up, _task) = strangler_e2e::hang_up_url().await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("flaky", &hang_up)],
        "routes:\n  - name: flaky\n    match: {prefix: /flaky}\n    upstream: flaky\n    mode: extracted\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let resp = http_client()
        .get(proxy.url("/flaky/1"))
        .send()
        .await
        .expect("GET");
    assert_eq!(
        resp.status(),
        502,
        "a connection closed without an answer is a 502"
    );
    let json: serde_json::Value = resp.json().await.expect("502 body is JSON");
    assert_eq!(json["route"], "flaky", "{json}");
    assert_eq!(json["upstream"], "flaky", "{json}");
    strangler_e2e::eventually(
        Duration::from_secs(10),
        "an upstream error is counted",
        async || {
            proxy
                .metrics()
                .await
                .sum("strangler_upstream_errors_total", &[("upstream", "flaky")])
                >= 1.0
        },
    )
    .await;
    assert_eq!(proxy.served_by("/other", &[]).await, "legacy");
}
