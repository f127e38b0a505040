//! Path normalization cannot bypass a route, and the spec's bad requests get 400 without ever
//! reaching an upstream. Raw TCP throughout: client libraries normalize or refuse these targets.

use std::time::Duration;

use strangler_e2e::client::raw::{self, ReadState};
use strangler_e2e::{routes_yaml, Backend, Proxy};

struct Setup {
    legacy: Backend,
    admin: Backend,
    public: Backend,
    proxy: Proxy,
}

impl Setup {
    fn hits(&self) -> usize {
        self.legacy.hits() + self.admin.hits() + self.public.hits()
    }
}

async fn setup() -> Setup {
    let legacy = Backend::echo("legacy").await;
    let admin = Backend::echo("admin").await;
    let public = Backend::echo("public").await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("admin", &admin.url),
            ("public", &public.url),
        ],
        r#"routes:
  - name: admin
    match: {prefix: /admin}
    upstream: admin
    mode: extracted
  - name: public
    match: {prefix: /public}
    upstream: public
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    Setup {
        legacy,
        admin,
        public,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalized_paths_reach_the_route_they_name() {
    let s = setup().await;
    for (target, backend, path) in [
        ("/public/../admin", "admin", "/admin"),
        ("/public/%2e%2e/admin", "admin", "/admin"),
        ("/public/%2E%2E/admin", "admin", "/admin"),
        ("/public/.%2e/admin/x", "admin", "/admin/x"),
        ("//admin", "admin", "/admin"),
        ("//admin//users///7", "admin", "/admin/users/7"),
        ("/%61dmin", "admin", "/admin"),
        ("/%61%64%6D%69%6E/panel", "admin", "/admin/panel"),
        ("/./admin/./x", "admin", "/admin/x"),
        ("/public/../admin?x=1&y=%2F", "admin", "/admin?x=1&y=%2F"),
        ("/admin/../public/page", "public", "/public/page"),
        ("/public/a/b/../../c", "public", "/public/c"),
        ("/%70ublic", "public", "/public"),
    ] {
        let resp = raw::get(s.proxy.addr(), target)
            .await
            .unwrap_or_else(|e| panic!("GET {target}: {e}"));
        assert_eq!(resp.status, 200, "GET {target}");
        let json = resp.json();
        assert_eq!(
            json["backend"], backend,
            "GET {target} reached the wrong route"
        );
        assert_eq!(
            json["path"], path,
            "GET {target}: the upstream saw another path"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_paths_get_400_and_are_not_forwarded() {
    let s = setup().await;
    let targets: &[&[u8]] = &[
        b"/public\\..\\admin",
        b"/a\\b",
        b"/admin%zz",
        b"/admin%2",
        b"/admin%",
        b"/caf\xc3\xa9",
        b"/admin\xff",
        b"/..",
        b"/../admin",
        b"/public/../../admin",
        b"/%2e%2e/admin",
        b"/public%2f..%2fadmin",
        b"/admin%2Fx",
        b"/public%5c..%5cadmin",
        b"/admin%00",
        b"*",
    ];
    for target in targets {
        let shown = String::from_utf8_lossy(target);
        let before = s.hits();
        let resp = raw::get_bytes(s.proxy.addr(), target)
            .await
            .unwrap_or_else(|e| panic!("GET {shown}: no response: {e}"));
        assert_eq!(resp.status, 400, "GET {shown}");
        assert_eq!(s.hits(), before, "GET {shown} was forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_duplicate_host_get_400() {
    let s = setup().await;
    let requests: &[&str] = &[
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n",
        "GET /public/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    ];
    for request in requests {
        let before = s.hits();
        let resp = raw::exchange(s.proxy.addr(), request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{request:?}: no response: {e}"));
        assert_eq!(resp.status, 400, "{request:?}");
        assert_eq!(s.hits(), before, "{request:?} was forwarded");
    }
}

/// Sends `request` (which carries a smuggled second request in its body), expects a 400, then
/// that the connection is closed and nothing else was answered or forwarded.
async fn assert_rejected_and_closed(s: &Setup, request: &str) {
    let before = s.hits();
    let mut conn = raw::Conn::connect(s.proxy.addr()).await.expect("connect");
    conn.send(request.as_bytes()).await.expect("send");
    let resp = conn
        .read_response()
        .await
        .unwrap_or_else(|e| panic!("{request:?}: no response: {e}"));
    assert_eq!(resp.status, 400, "{request:?}");
    let state = conn.read_state(Duration::from_secs(5)).await;
    assert_eq!(
        state,
        ReadState::Closed,
        "the connection must be closed after {request:?}"
    );
    assert_eq!(s.hits(), before, "{request:?} was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_rejected_and_closed() {
    let s = setup().await;
    let smuggled = "GET /admin/smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let request = format!(
        "POST /public/x HTTP/1.1\r\nHost: example.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
    );
    assert_rejected_and_closed(&s, &request).await;
    assert_eq!(s.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differing_content_lengths_are_rejected_and_closed() {
    let s = setup().await;
    let smuggled = "GET /admin/smuggled HTTP/1.1\r\nHost: example.test\r\n\r\n";
    let request = format!(
        "POST /public/x HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{smuggled}",
        5 + smuggled.len()
    );
    assert_rejected_and_closed(&s, &request).await;
    assert_eq!(s.admin.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_asterisk_is_not_a_bad_request() {
    let s = setup().await;
    let resp = raw::exchange(
        s.proxy.addr(),
        b"OPTIONS * HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("response to OPTIONS *");
    assert_ne!(resp.status, 400, "OPTIONS * is valid");
    assert!(resp.status < 500, "OPTIONS * answered {}", resp.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_routed_by_its_path_only() {
    let s = setup().await;
    // A local server that routes.yaml does not name: the proxy must never reach it.
    let stranger = Backend::echo("stranger").await;
    let resp = raw::exchange(
        s.proxy.addr(),
        b"GET http://example.com/admin HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("response");
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["backend"], "admin");
    assert_eq!(json["path"], "/admin");
    assert_eq!(json["headers"]["host"], "example.com");

    let request = format!(
        "GET http://{}/public/../admin/x HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        stranger.addr, stranger.addr
    );
    let resp = raw::exchange(s.proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200);
    let json = resp.json();
    assert_eq!(json["backend"], "admin");
    assert_eq!(json["path"], "/admin/x");

    let request = format!(
        "GET http://{}/elsewhere HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        stranger.addr, stranger.addr
    );
    let resp = raw::exchange(s.proxy.addr(), request.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.json()["backend"], "legacy");
    assert_eq!(
        stranger.hits(),
        0,
        "the proxy reached a host routes.yaml does not name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_input_never_crashes_the_proxy() {
    let s = setup().await;
    let inputs: Vec<Vec<u8>> = vec![
        b"\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked, identity\r\n\r\n"
            .to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Name: v\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\n: empty-name\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: x\r\nX: \x00\x01\x02\r\n\r\n".to_vec(),
        b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET http:// HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET http://a.example HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET ?q HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /%%%% HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec(),
        (0u8..=255).collect(),
        vec![b'A'; 100_000],
    ];
    for input in &inputs {
        if let Ok(mut conn) = raw::Conn::connect(s.proxy.addr()).await {
            let _ = conn.send(input).await;
            let _ = conn.read_state(Duration::from_millis(300)).await;
        }
    }
    // Still alive and serving.
    assert_eq!(s.proxy.served_by("/admin/after", &[]).await, "admin");
    assert_eq!(s.proxy.served_by("/after", &[]).await, "legacy");
}
