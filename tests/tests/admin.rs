//! Admin API metrics, and graceful shutdown.

use std::time::Duration;

use strangler_e2e::{http_client, routes_yaml, Backend, Proxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_route_upstream_method_and_status_class() {
    let legacy = Backend::echo("legacy").await;
    let catalog = Backend::echo("catalog").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("catalog", &catalog.url)],
        r#"routes:
  - name: catalog
    match: {prefix: /api/products}
    upstream: catalog
    mode: extracted
  - name: orders
    match: {prefix: /api/orders}
    upstream: catalog
    mode: legacy
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    let client = http_client();
    for _ in 0..3 {
        let r = client
            .get(proxy.url("/api/products/1"))
            .send()
            .await
            .expect("GET");
        assert_eq!(r.status(), 200);
    }
    let r = client
        .post(proxy.url("/api/orders/1"))
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 200);
    let r = client
        .get(proxy.url("/nowhere"))
        .header("x-echo-status", "404")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);

    // Counters may be updated just after the response ends: wait for them, then be exact.
    strangler_e2e::eventually(Duration::from_secs(10), "request counters", async || {
        let m = proxy.metrics().await;
        m.sum("strangler_requests_total", &[("route", "catalog")]) >= 3.0
            && m.sum("strangler_requests_total", &[("route", "orders")]) >= 1.0
            && m.sum("strangler_requests_total", &[("route", "_fallback")]) >= 1.0
            && m.sum(
                "strangler_request_duration_seconds_count",
                &[("route", "catalog")],
            ) >= 3.0
    })
    .await;
    let resp = client
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain"),
        "metrics content-type {content_type:?}"
    );
    let m = strangler_e2e::Metrics::parse(&resp.text().await.expect("metrics text"));
    let requests = "strangler_requests_total";
    assert_eq!(
        m.sum(
            requests,
            &[
                ("route", "catalog"),
                ("upstream", "catalog"),
                ("method", "GET"),
                ("status", "2xx")
            ]
        ),
        3.0,
        "{}",
        m.text
    );
    // A legacy-mode route counts under its own name with the fallback's upstream.
    assert_eq!(
        m.sum(
            requests,
            &[
                ("route", "orders"),
                ("upstream", "legacy"),
                ("method", "POST"),
                ("status", "2xx")
            ]
        ),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum(requests, &[("route", "orders"), ("upstream", "catalog")]),
        0.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.sum(
            requests,
            &[
                ("route", "_fallback"),
                ("upstream", "legacy"),
                ("method", "GET"),
                ("status", "4xx")
            ]
        ),
        1.0,
        "{}",
        m.text
    );

    let histogram = "strangler_request_duration_seconds";
    let buckets = m.series(&format!("{histogram}_bucket"), &[("route", "catalog")]);
    assert!(!buckets.is_empty(), "no {histogram} buckets: {}", m.text);
    for b in &buckets {
        assert!(b.label("le").is_some());
        assert_eq!(b.label("upstream"), Some("catalog"));
        assert_eq!(b.label("method"), Some("GET"));
        assert!(
            b.label("status").is_none(),
            "the histogram has no status label"
        );
    }
    assert_eq!(
        m.sum(&format!("{histogram}_count"), &[("route", "catalog")]),
        3.0,
        "{}",
        m.text
    );
    assert!(!m
        .series(&format!("{histogram}_sum"), &[("route", "_fallback")])
        .is_empty());
    assert!(
        m.text
            .contains("# TYPE strangler_request_duration_seconds histogram"),
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_200() {
    let legacy = Backend::echo("legacy").await;
    let proxy = Proxy::start(&routes_yaml(&[("legacy", &legacy.url)], "")).await;
    let resp = http_client()
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    let legacy = Backend::slow("legacy", Duration::from_secs(1)).await;
    let mut proxy = Proxy::start(&routes_yaml(&[("legacy", &legacy.url)], "")).await;
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move {
        let resp = http_client().get(&url).send().await?;
        let status = resp.status().as_u16();
        let json: serde_json::Value = resp.json().await?;
        Ok::<_, reqwest::Error>((status, json))
    });
    // Wait until the backend holds the request, then ask the proxy to stop.
    strangler_e2e::eventually(
        Duration::from_secs(10),
        "request reaches the backend",
        async || legacy.hits() >= 1,
    )
    .await;
    proxy.signal("TERM");
    let (status, json) = in_flight
        .await
        .expect("client task")
        .expect("the in-flight request completes during graceful shutdown");
    assert_eq!(status, 200);
    assert_eq!(json["backend"], "legacy");
    let exit = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(15)));
    let exit = exit.expect("the proxy exits after SIGTERM");
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM: {exit}");
}
