//! Edge deployment: TLS termination (ALPN, SNI, certificate reload), the HTTP -> HTTPS
//! redirect, https upstreams with a configured CA, trusted proxies, the admin token off
//! loopback, body limits, per-route timeouts, and a binary upgrade under load.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strangler_e2e::tls::{https_get, server_config, TestCa};
use strangler_e2e::{eventually, free_port, http_client, raw, routes_yaml, Backend, Proxy};

/// A proxy terminating TLS: default certificate for `default.test`, `b.test` by SNI.
struct TlsSetup {
    ca: TestCa,
    default_der: Vec<u8>,
    b_der: Vec<u8>,
    _legacy: Backend,
    proxy: Proxy,
}

const TLS_SECTION: &str = "tls:\n  cert: default.crt\n  key: default.key\n  sni:\n    b.test: {cert: b.crt, key: b.key}\n";

async fn tls_setup(extra: &str) -> TlsSetup {
    let ca = TestCa::new();
    let default = ca.issue(&["default.test"]);
    let b = ca.issue(&["b.test"]);
    let legacy = Backend::echo("legacy").await;
    let yaml = routes_yaml(&[("legacy", &legacy.url)], "") + TLS_SECTION + extra;
    let proxy = Proxy::builder(&yaml)
        .file("default.crt", default.cert_pem.clone())
        .file("default.key", default.key_pem.clone())
        .file("b.crt", b.cert_pem.clone())
        .file("b.key", b.key_pem.clone())
        .start()
        .await;
    TlsSetup {
        ca,
        default_der: default.cert_der,
        b_der: b.cert_der,
        _legacy: legacy,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_picks_h2_and_http11_and_sets_forwarded_proto_https() {
    let s = tls_setup("").await;
    let both: &[&[u8]] = &[b"h2", b"http/1.1"];
    let h2 = https_get(s.proxy.addr(), "default.test", &s.ca, both, "/a")
        .await
        .expect("HTTPS over h2");
    assert_eq!(h2.alpn.as_deref(), Some("h2"));
    assert_eq!(h2.status, 200);
    let json = h2.json();
    assert_eq!(json["backend"], "legacy");
    assert_eq!(json["headers"]["x-forwarded-proto"], "https");

    let h1 = https_get(s.proxy.addr(), "default.test", &s.ca, &[b"http/1.1"], "/b")
        .await
        .expect("HTTPS over http/1.1");
    assert_eq!(h1.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(h1.status, 200);
    assert_eq!(h1.json()["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sni_picks_the_certificate() {
    let s = tls_setup("").await;
    let alpn: &[&[u8]] = &[b"http/1.1"];
    let b = https_get(s.proxy.addr(), "b.test", &s.ca, alpn, "/")
        .await
        .expect("HTTPS to b.test");
    assert_eq!(b.cert_der, s.b_der, "b.test gets its own certificate");
    let d = https_get(s.proxy.addr(), "default.test", &s.ca, alpn, "/")
        .await
        .expect("HTTPS to default.test");
    assert_eq!(d.cert_der, s.default_der, "other names get the default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_a_bad_certificate_reload_is_rejected_and_the_old_one_still_served() {
    let s = tls_setup("").await;
    let alpn: &[&[u8]] = &[b"http/1.1"];
    std::fs::write(
        s.proxy.dir().join("b.crt"),
        "-----BEGIN CERTIFICATE-----\nnope\n",
    )
    .expect("break b.crt");
    let (status, body) = s.proxy.post_reload().await;
    assert_eq!(status, 422, "{body}");
    let errors = body["errors"].to_string();
    // The `cert:` value of b.test is on line 8, column 20 of the file.
    assert!(errors.contains("routes.yaml:8:20:"), "{errors}");
    let routes = s.proxy.routes().await;
    assert!(
        routes["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("b.crt")),
        "{routes}"
    );
    let b = https_get(s.proxy.addr(), "b.test", &s.ca, alpn, "/")
        .await
        .expect("HTTPS to b.test after the rejected reload");
    assert_eq!(b.cert_der, s.b_der, "the old certificate is still served");

    // A good certificate replaces it on the next reload.
    let renewed = s.ca.issue(&["b.test"]);
    renewed.write(s.proxy.dir(), "b");
    let (status, body) = s.proxy.post_reload().await;
    assert_eq!(status, 200, "{body}");
    let b = https_get(s.proxy.addr(), "b.test", &s.ca, alpn, "/")
        .await
        .expect("HTTPS to b.test after the renewal");
    assert_eq!(
        b.cert_der, renewed.cert_der,
        "new connections get the new certificate"
    );
    assert!(s.proxy.routes().await["last_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_to_https() {
    let port = free_port();
    let s = tls_setup(&format!("  redirect_http: 127.0.0.1:{port}\n")).await;
    let addr = format!("127.0.0.1:{port}").parse().expect("address");
    let resp = raw::exchange(
        addr,
        b"POST /cart/add?item=7 HTTP/1.1\r\nHost: shop.test:8080\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .expect("redirect response");
    assert_eq!(resp.status, 308);
    assert_eq!(
        resp.header("location"),
        Some("https://shop.test/cart/add?item=7")
    );
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_is_verified_with_the_configured_ca() {
    let ca = TestCa::new();
    let backend = Backend::tls_echo("secure", server_config(&ca.issue(&["127.0.0.1"]))).await;
    let stranger = TestCa::new();
    let impostor =
        Backend::tls_echo("impostor", server_config(&stranger.issue(&["127.0.0.1"]))).await;
    let yaml = format!(
        "upstreams:\n  secure: {{url: '{}', ca: ca.crt}}\n  impostor: {{url: '{}', ca: ca.crt}}\nfallback: secure\nroutes:\n  - name: impostor\n    match: {{prefix: /impostor}}\n    upstream: impostor\n    mode: extracted\n",
        backend.url, impostor.url
    );
    assert!(backend.url.starts_with("https://"));
    let proxy = Proxy::builder(&yaml)
        .file("ca.crt", ca.cert_pem())
        .start()
        .await;
    assert_eq!(proxy.served_by("/x", &[]).await, "secure");
    // A certificate from another CA fails verification: the upstream is unreachable.
    let resp = http_client()
        .get(proxy.url("/impostor"))
        .send()
        .await
        .expect("GET /impostor");
    assert_eq!(resp.status(), 502);
    assert_eq!(
        impostor.hits(),
        0,
        "no request reached the unverified upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_is_replaced_unless_the_peer_is_trusted() {
    let legacy = Backend::echo("legacy").await;
    let base = routes_yaml(&[("legacy", &legacy.url)], "");
    let proxy = Proxy::start(&(base.clone() + "trusted_proxies: [192.0.2.0/24]\n")).await;
    let spoof = b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n\r\n";
    let seen = raw::exchange(proxy.addr(), spoof)
        .await
        .expect("response")
        .json();
    assert_eq!(seen["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "http");
    assert_eq!(seen["headers"]["x-forwarded-host"], "shop.test");

    // Trust loopback (a reload): the peer's headers are kept and the peer appended.
    let trusted = base + "trusted_proxies: [127.0.0.1/32, '::1/128']\n";
    proxy.rewrite_config(&trusted);
    eventually(
        Duration::from_secs(10),
        "reload trusting loopback",
        async || proxy.has_version_of(trusted.as_bytes()).await,
    )
    .await;
    let seen = raw::exchange(proxy.addr(), spoof)
        .await
        .expect("response")
        .json();
    assert_eq!(seen["headers"]["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
    assert_eq!(seen["headers"]["x-forwarded-host"], "evil.test");
}

/// A local address other than loopback, if this machine has one (`hostname -I`).
fn non_loopback_ip() -> Option<IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse::<IpAddr>().ok())
        .filter(|ip| ip.is_ipv4() && !ip.is_loopback())
        .find(|ip| std::net::TcpListener::bind((*ip, 0)).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_enforced_off_loopback() {
    let Some(ip) = non_loopback_ip() else {
        // The handler-level tests in proxy/src/admin.rs cover the rule; say so loudly.
        eprintln!("SKIPPED: no non-loopback local address to bind the admin API to");
        return;
    };
    let legacy = Backend::echo("legacy").await;
    let yaml = routes_yaml(&[("legacy", &legacy.url)], "") + "admin_token_file: admin.token\n";
    let proxy = Proxy::builder(&yaml)
        .file("admin.token", "t0ps3cret\n")
        .admin_ip(ip)
        .start()
        .await;
    let client = http_client();
    let get = |auth: Option<&str>, path: &str| {
        let mut req = client.get(proxy.admin_url(path));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(get(None, "/healthz").await.expect("healthz").status(), 200);
    let resp = get(None, "/routes").await.expect("routes");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    assert_eq!(
        get(Some("Bearer wrong"), "/routes")
            .await
            .expect("routes")
            .status(),
        401
    );
    assert_eq!(
        get(Some("Bearer t0ps3cret"), "/routes")
            .await
            .expect("routes")
            .status(),
        200
    );
    let reload = client
        .post(proxy.admin_url("/reload"))
        .header("authorization", "Bearer t0ps3cret")
        .send()
        .await
        .expect("reload");
    assert_eq!(reload.status(), 200);

    // From the environment instead of a file.
    let env_proxy = Proxy::builder(&routes_yaml(&[("legacy", &legacy.url)], ""))
        .admin_ip(ip)
        .env("STRANGLER_ADMIN_TOKEN", "from-env")
        .start()
        .await;
    let resp = http_client()
        .get(env_proxy.admin_url("/metrics"))
        .header("authorization", "Bearer from-env")
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);

    // No token at all: everything but /healthz is refused, and the log says why.
    let open = Proxy::builder(&routes_yaml(&[("legacy", &legacy.url)], ""))
        .admin_ip(ip)
        .env("STRANGLER_ADMIN_TOKEN", "")
        .start()
        .await;
    let resp = http_client()
        .get(open.admin_url("/routes"))
        .header("authorization", "Bearer anything")
        .send()
        .await
        .expect("routes");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        http_client()
            .get(open.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert!(open.logs().contains("without a token"), "{}", open.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_route_limit_gets_413() {
    let legacy = Backend::echo("legacy").await;
    let uploads = Backend::upload_counter().await;
    let yaml = routes_yaml(
        &[("legacy", &legacy.url), ("uploads", &uploads.url)],
        "routes:\n  - name: uploads\n    match: {prefix: /upload}\n    upstream: uploads\n    mode: extracted\n    max_body_bytes: 1KiB\n",
    );
    let proxy = Proxy::start(&yaml).await;

    // Content-Length over the limit: refused before anything is forwarded.
    let resp = http_client()
        .post(proxy.url("/upload"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("POST 2 KiB");
    assert_eq!(resp.status(), 413);
    assert_eq!(uploads.hits(), 0, "nothing forwarded");

    // At the limit: forwarded whole.
    let resp = http_client()
        .post(proxy.url("/upload"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .expect("POST 1 KiB");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<serde_json::Value>().await.expect("json")["bytes"],
        1024
    );

    // Chunked, under and then over the limit.
    let chunked = |chunks: usize| {
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..chunks {
            req.extend_from_slice(b"200\r\n");
            req.extend_from_slice(&[b'y'; 512]);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
        req
    };
    let resp = raw::exchange(proxy.addr(), &chunked(2))
        .await
        .expect("chunked 1 KiB");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["bytes"], 1024);
    let resp = raw::exchange(proxy.addr(), &chunked(4))
        .await
        .expect("chunked 2 KiB");
    assert_eq!(resp.status, 413);
    assert_eq!(resp.json()["route"], "uploads");
    // Other routes have no limit.
    let resp = http_client()
        .post(proxy.url("/elsewhere"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .expect("POST elsewhere");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_timeout_overrides_the_upstream_timeout_with_504() {
    let slow = Backend::slow("slow", Duration::from_secs(2)).await;
    let yaml = routes_yaml(
        &[("slow", &slow.url)],
        "routes:\n  - name: impatient\n    match: {prefix: /impatient}\n    upstream: slow\n    mode: extracted\n    timeout: 100ms\n",
    );
    let proxy = Proxy::start(&yaml).await;
    let resp = http_client()
        .get(proxy.url("/impatient"))
        .send()
        .await
        .expect("GET /impatient");
    assert_eq!(resp.status(), 504);
    let json: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(json["route"], "impatient");
    // The upstream's own timeout (30 s default) still applies elsewhere.
    assert_eq!(proxy.served_by("/patient", &[]).await, "slow");
}

/// Requests sent, answered 200, and failed, by a bounded load.
#[derive(Default)]
struct Load {
    ok: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
    errors: std::sync::Mutex<Vec<String>>,
}

/// Waits for a child process to exit, up to `limit`.
fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_binary_upgrade_hands_over_the_sockets_with_no_failed_request() {
    let legacy = Backend::echo("legacy").await;
    let yaml = routes_yaml(&[("legacy", &legacy.url)], "");
    let mut proxy = Proxy::builder(&yaml)
        .arg("--upgrade-socket")
        .arg("{dir}/upgrade.sock")
        .arg("--workers")
        .arg("2")
        .start()
        .await;
    let socket = proxy.dir().join("upgrade.sock");
    eventually(Duration::from_secs(10), "the upgrade socket", async || {
        socket.exists()
    })
    .await;

    // A fresh connection per request: every request goes through accept, so a refused or
    // reset connection would show up as a failure.
    let load = Arc::new(Load::default());
    let url = proxy.url("/load");
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (load, url) = (load.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            // Bounded: at most 20 000 requests per client.
            for _ in 0..20_000 {
                if load.stop.load(Ordering::SeqCst) {
                    break;
                }
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        load.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        load.failed.fetch_add(1, Ordering::SeqCst);
                        load.errors
                            .lock()
                            .expect("lock")
                            .push(format!("status {}", r.status()));
                    }
                    Err(e) => {
                        load.failed.fetch_add(1, Ordering::SeqCst);
                        load.errors.lock().expect("lock").push(format!("{e:?}"));
                    }
                }
            }
        }));
    }
    let wait_ok = |n: usize, what: &'static str| {
        let load = load.clone();
        async move {
            let target = load.ok.load(Ordering::SeqCst) + n;
            eventually(Duration::from_secs(30), what, async || {
                load.ok.load(Ordering::SeqCst) >= target
            })
            .await;
        }
    };
    wait_ok(200, "load before the upgrade").await;

    // Two upgrades in a row: the second one goes through the socket the first new process
    // made.
    for round in 1..=2 {
        let mut old = proxy.upgrade();
        let old_pid = old.id();
        let exit = tokio::task::block_in_place(|| wait_child(&mut old, Duration::from_secs(30)))
            .unwrap_or_else(|| {
                panic!(
                    "round {round}: the old process {old_pid} did not exit\n{}",
                    proxy.logs()
                )
            });
        assert_eq!(
            exit.code(),
            Some(0),
            "round {round}: old process exit\n{}",
            proxy.logs()
        );
        eventually(
            Duration::from_secs(10),
            "the new process's upgrade socket",
            async || socket.exists(),
        )
        .await;
        // Served by the new process alone now.
        wait_ok(200, "load after the upgrade").await;
    }
    load.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("load task");
    }
    let failed = load.failed.load(Ordering::SeqCst);
    assert_eq!(
        failed,
        0,
        "failed requests across the upgrades: {:?}\n{}",
        load.errors
            .lock()
            .expect("lock")
            .iter()
            .take(5)
            .collect::<Vec<_>>(),
        proxy.logs()
    );
    assert!(proxy.logs().contains("took over the listening sockets"));
    assert_eq!(
        http_client()
            .get(proxy.admin_url("/healthz"))
            .send()
            .await
            .expect("healthz on the inherited admin socket")
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangler_health_probes_healthz() {
    let legacy = Backend::echo("legacy").await;
    let proxy = Proxy::start(&routes_yaml(&[("legacy", &legacy.url)], "")).await;
    let dir = proxy.dir().to_path_buf();
    let admin = proxy.admin_addr().to_string();
    let out = tokio::task::block_in_place(|| {
        strangler_e2e::CliOutput::run(
            &["health", "--admin", &admin],
            &dir,
            Duration::from_secs(20),
        )
    });
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let dead = format!("127.0.0.1:{}", free_port());
    let out = tokio::task::block_in_place(|| {
        strangler_e2e::CliOutput::run(&["health", "--admin", &dead], &dir, Duration::from_secs(20))
    });
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}
