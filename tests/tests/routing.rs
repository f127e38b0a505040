//! Routing: every mode, and the precedence rules between routes.

use std::time::Duration;

use strangler_e2e::{eventually, get_json, http_client, routes_yaml, Backend, Proxy};

/// One route `svc` on prefix `/svc` in `mode` (plus `extra` lines for the route), legacy fallback.
async fn one_route(mode: &str, extra: &str) -> (Backend, Backend, Proxy) {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        &format!(
            "routes:\n  - name: svc\n    match: {{prefix: /svc}}\n    upstream: svc\n    mode: {mode}\n{extra}"
        ),
    );
    let proxy = Proxy::start(&yaml).await;
    (legacy, svc, proxy)
}

/// Counter `field` of `route` in `GET /shadow`, 0 while the admin API gives no answer.
async fn shadow_count(client: &reqwest::Client, proxy: &Proxy, route: &str, field: &str) -> u64 {
    let Ok(resp) = client.get(proxy.admin_url("/shadow")).send().await else {
        return 0;
    };
    let json: serde_json::Value = resp.json().await.unwrap_or_default();
    json["routes"][route][field].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mode_is_served_by_the_fallback() {
    let (_legacy, svc, proxy) = one_route("legacy", "").await;
    for i in 0..5 {
        assert_eq!(proxy.served_by(&format!("/svc/{i}"), &[]).await, "legacy");
    }
    assert_eq!(svc.hits(), 0, "a legacy route never reaches its upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extracted_mode_is_served_by_the_upstream() {
    let (legacy, _svc, proxy) = one_route("extracted", "").await;
    for i in 0..5 {
        assert_eq!(proxy.served_by(&format!("/svc/{i}"), &[]).await, "svc");
    }
    assert_eq!(legacy.hits(), 0);
    assert_eq!(proxy.served_by("/elsewhere", &[]).await, "legacy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_answers_from_the_fallback_and_copies_to_the_upstream() {
    let (_legacy, svc, proxy) = one_route("shadow", "").await;
    for i in 0..5 {
        assert_eq!(
            proxy.served_by(&format!("/svc/{i}"), &[]).await,
            "legacy",
            "the client always gets the fallback's answer in shadow mode"
        );
    }
    eventually(
        Duration::from_secs(10),
        "shadow copies reach the upstream",
        async || svc.hits() >= 5,
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "GET /shadow counts the compared copies",
        async || shadow_count(&http_client(), &proxy, "svc", "compared").await >= 5,
    )
    .await;
    let json = get_json(&proxy.admin_url("/shadow")).await;
    let stats = &json["routes"]["svc"];
    for field in [
        "compared",
        "matched",
        "mismatched",
        "errors",
        "skipped",
        "dropped",
    ] {
        assert!(stats[field].is_u64(), "GET /shadow lacks {field}: {json}");
    }
    let compared = stats["compared"].as_u64().unwrap_or(0);
    let matched = stats["matched"].as_u64().unwrap_or(0);
    let mismatched = stats["mismatched"].as_u64().unwrap_or(0);
    assert_eq!(matched + mismatched, compared, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_and_sticky_are_ignored_outside_canary_mode() {
    let extra = "    percent: 30\n    sticky: header:x-user-id\n";
    let (legacy, _svc, proxy) = one_route("extracted", extra).await;
    for i in 0..40 {
        let key = format!("user-{i}");
        assert_eq!(proxy.served_by("/svc", &[("x-user-id", &key)]).await, "svc");
    }
    assert_eq!(legacy.hits(), 0);
    drop(proxy);
    let (_legacy, svc, proxy) = one_route("legacy", extra).await;
    for i in 0..40 {
        let key = format!("user-{i}");
        assert_eq!(
            proxy.served_by("/svc", &[("x-user-id", &key)]).await,
            "legacy"
        );
    }
    assert_eq!(svc.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_copies_only_safe_methods_and_never_delay_the_client() {
    let (_legacy, svc, proxy) = one_route("shadow", "").await;
    let client = http_client();
    for i in 0..3 {
        let resp = client
            .post(proxy.url(&format!("/svc/post/{i}")))
            .body("payload")
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 200);
    }
    for i in 0..3 {
        assert_eq!(
            proxy.served_by(&format!("/svc/get/{i}"), &[]).await,
            "legacy"
        );
    }
    eventually(
        Duration::from_secs(10),
        "the GET copies are compared",
        async || shadow_count(&client, &proxy, "svc", "compared").await >= 3,
    )
    .await;
    assert_eq!(svc.hits(), 3, "only the GETs were copied, not the POSTs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_failures_count_as_errors_and_never_reach_the_client() {
    let legacy = Backend::echo("legacy").await;
    let slow = Backend::slow("slow", Duration::from_secs(20)).await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("dead", &strangler_e2e::refusing_url()),
            ("slow", &slow.url),
        ],
        r#"routes:
  - name: to-dead
    match: {prefix: /dead}
    upstream: dead
    mode: shadow
  - name: to-slow
    match: {prefix: /slow}
    upstream: slow
    mode: shadow
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    // The copy's upstream is refused, or takes 20 s: the client still gets the fallback's
    // answer, well within its own 10 s limit.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    for path in ["/dead/1", "/dead/2", "/slow/1"] {
        let resp = client
            .get(proxy.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} waited for the shadow copy: {e}"));
        assert_eq!(resp.status(), 200, "GET {path}");
        let json: serde_json::Value = resp.json().await.expect("echo JSON");
        assert_eq!(json["backend"], "legacy", "GET {path}");
    }
    eventually(
        Duration::from_secs(10),
        "failed copies counted in errors",
        async || shadow_count(&client, &proxy, "to-dead", "errors").await >= 2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_zero_percent_is_all_fallback() {
    let (_legacy, svc, proxy) =
        one_route("canary", "    percent: 0\n    sticky: header:x-user-id\n").await;
    for i in 0..100 {
        let key = format!("user-{i}");
        assert_eq!(
            proxy.served_by("/svc", &[("x-user-id", &key)]).await,
            "legacy"
        );
        assert_eq!(proxy.served_by("/svc", &[]).await, "legacy");
    }
    assert_eq!(svc.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_hundred_percent_is_all_upstream() {
    let (legacy, _svc, proxy) =
        one_route("canary", "    percent: 100\n    sticky: header:x-user-id\n").await;
    for i in 0..100 {
        let key = format!("user-{i}");
        assert_eq!(proxy.served_by("/svc", &[("x-user-id", &key)]).await, "svc");
        assert_eq!(proxy.served_by("/svc", &[]).await, "svc");
    }
    assert_eq!(legacy.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_fifty_percent_uses_both_sides() {
    let (legacy, svc, proxy) =
        one_route("canary", "    percent: 50\n    sticky: header:x-user-id\n").await;
    for i in 0..200 {
        let key = format!("user-{i}");
        let side = proxy.served_by("/svc", &[("x-user-id", &key)]).await;
        assert!(side == "svc" || side == "legacy", "got {side}");
    }
    assert!(legacy.hits() >= 50, "fallback served {}", legacy.hits());
    assert!(svc.hits() >= 50, "upstream served {}", svc.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_beats_prefix_and_longer_prefix_beats_shorter() {
    let legacy = Backend::echo("legacy").await;
    let short = Backend::echo("short").await;
    let long = Backend::echo("long").await;
    let exact = Backend::echo("exact").await;
    // Deliberately listed from least to most specific, so file order alone would pick wrongly.
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("short", &short.url),
            ("long", &long.url),
            ("exact", &exact.url),
        ],
        r#"routes:
  - name: short
    match: {prefix: /api}
    upstream: short
    mode: extracted
  - name: long
    match: {prefix: /api/products}
    upstream: long
    mode: extracted
  - name: exact
    match: {exact: /api/products/special}
    upstream: exact
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    for (path, want) in [
        ("/api/products/special", "exact"),
        ("/api/products/special/more", "long"),
        ("/api/products", "long"),
        ("/api/products/", "long"),
        ("/api/products/7", "long"),
        ("/api/products/7/reviews?x=1", "long"),
        ("/api/productsX", "short"),
        ("/api/products-old", "short"),
        ("/api", "short"),
        ("/api/orders", "short"),
        ("/apix", "legacy"),
        ("/", "legacy"),
        ("/other/api/products", "legacy"),
    ] {
        assert_eq!(proxy.served_by(path, &[]).await, want, "GET {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_in_file_order_wins_among_equals() {
    let legacy = Backend::echo("legacy").await;
    let first = Backend::echo("first").await;
    let second = Backend::echo("second").await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("first", &first.url),
            ("second", &second.url),
        ],
        r#"routes:
  - name: p-first
    match: {prefix: /dup}
    upstream: first
    mode: extracted
  - name: p-second
    match: {prefix: /dup}
    upstream: second
    mode: extracted
  - name: e-second
    match: {exact: /same}
    upstream: second
    mode: extracted
  - name: e-first
    match: {exact: /same}
    upstream: first
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    assert_eq!(proxy.served_by("/dup/1", &[]).await, "first");
    assert_eq!(proxy.served_by("/dup", &[]).await, "first");
    assert_eq!(proxy.served_by("/same", &[]).await, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_filter_falls_back_to_a_shorter_matching_prefix() {
    let legacy = Backend::echo("legacy").await;
    let shop = Backend::echo("shop").await;
    let cart = Backend::echo("cart").await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("shop", &shop.url),
            ("cart", &cart.url),
        ],
        r#"routes:
  - name: cart-reads
    match:
      prefix: /shop/cart
      methods: [GET, HEAD]
    upstream: cart
    mode: extracted
  - name: shop
    match: {prefix: /shop}
    upstream: shop
    mode: extracted
  - name: orders-post
    match:
      prefix: /orders
      methods: [POST]
    upstream: cart
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    let client = http_client();
    let backend_of = |resp: reqwest::Response| async move {
        let json: serde_json::Value = resp.json().await.expect("echo JSON");
        json["backend"].as_str().unwrap_or_default().to_string()
    };
    let get = client
        .get(proxy.url("/shop/cart/1"))
        .send()
        .await
        .expect("request");
    assert_eq!(backend_of(get).await, "cart");
    let post = client
        .post(proxy.url("/shop/cart/1"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        backend_of(post).await,
        "shop",
        "POST skips the GET-only route"
    );
    let delete = client
        .delete(proxy.url("/shop/cart"))
        .send()
        .await
        .expect("request");
    assert_eq!(backend_of(delete).await, "shop");
    let head = client
        .head(proxy.url("/shop/cart/1"))
        .send()
        .await
        .expect("request");
    assert_eq!(head.status(), 200);
    assert_eq!(cart.hits(), 2, "GET and HEAD went to the cart upstream");
    let post = client
        .post(proxy.url("/orders/9"))
        .send()
        .await
        .expect("request");
    assert_eq!(backend_of(post).await, "cart");
    let get = client
        .get(proxy.url("/orders/9"))
        .send()
        .await
        .expect("request");
    assert_eq!(backend_of(get).await, "legacy", "GET on a POST-only route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_filter_matches_names_case_insensitively() {
    let legacy = Backend::echo("legacy").await;
    let beta = Backend::echo("beta").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("beta", &beta.url)],
        r#"routes:
  - name: beta
    match:
      prefix: /app
      headers: {X-Beta: "1"}
    upstream: beta
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    assert_eq!(
        proxy.served_by("/app/home", &[("x-beta", "1")]).await,
        "beta"
    );
    assert_eq!(
        proxy.served_by("/app/home", &[("X-BETA", "1")]).await,
        "beta"
    );
    assert_eq!(
        proxy.served_by("/app/home", &[("x-beta", "2")]).await,
        "legacy"
    );
    assert_eq!(proxy.served_by("/app/home", &[]).await, "legacy");
    assert_eq!(
        proxy.served_by("/other", &[("x-beta", "1")]).await,
        "legacy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_go_to_the_fallback() {
    let legacy = Backend::echo("legacy").await;
    let svc = Backend::echo("svc").await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("svc", &svc.url)],
        "routes:\n  - name: svc\n    match: {exact: /svc}\n    upstream: svc\n    mode: extracted\n",
    );
    let proxy = Proxy::start(&yaml).await;
    for path in ["/", "/svc/child", "/svcx", "/anything/else?q=1"] {
        assert_eq!(proxy.served_by(path, &[]).await, "legacy", "GET {path}");
    }
    assert_eq!(proxy.served_by("/svc", &[]).await, "svc");
}
