//! Limits: header-read timeout against a slow client, header count, head size, URI length.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strangler_e2e::client::raw::{self, ReadState};
use strangler_e2e::{http_client, routes_yaml, Backend, Proxy};

async fn start(limits: &str) -> (Backend, Proxy) {
    let legacy = Backend::echo("legacy").await;
    let yaml = routes_yaml(&[("legacy", &legacy.url)], limits);
    let proxy = Proxy::start(&yaml).await;
    (legacy, proxy)
}

/// `GET /x` with `Host` plus `extra` more headers: `1 + extra` header lines in all.
fn request_with_headers(extra: usize) -> Vec<u8> {
    let mut req = String::from("GET /x HTTP/1.1\r\nHost: example.test\r\n");
    // Connection: close counts as one of the extra headers.
    if extra > 0 {
        req.push_str("Connection: close\r\n");
    }
    for i in 1..extra {
        req.push_str(&format!("X-H-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_does_not_block_others() {
    let (legacy, proxy) = start("limits:\n  header_read_timeout: 1s\n").await;
    let mut slow = raw::Conn::connect(proxy.addr()).await.expect("connect");
    slow.send(b"GET /slow HTTP/1.1\r\nHost: example.test\r\nX-Slow: ")
        .await
        .expect("send partial head");

    // Meanwhile another client is served normally.
    let others_done = Arc::new(AtomicBool::new(false));
    let url = proxy.url("/normal");
    let done = others_done.clone();
    let others = tokio::spawn(async move {
        let client = http_client();
        let mut statuses = Vec::new();
        for _ in 0..10 {
            let resp = client.get(&url).send().await.map(|r| r.status().as_u16());
            statuses.push(resp.map_err(|e| e.to_string()));
        }
        done.store(true, Ordering::SeqCst);
        statuses
    });

    // One byte every 200 ms; stop when the proxy closes the connection (bounded: 40 bytes, 8 s).
    let started = Instant::now();
    let mut cut_off = false;
    let mut answer = Vec::new();
    for _ in 0..40 {
        if slow.send(b"a").await.is_err() {
            cut_off = true;
            break;
        }
        match slow.read_state(Duration::from_millis(200)).await {
            ReadState::Open => {}
            ReadState::Closed => {
                cut_off = true;
                break;
            }
            ReadState::Data(bytes) => {
                // A 408 (or similar) before closing is fine; keep waiting for the close.
                answer.extend(bytes);
            }
        }
    }
    assert!(
        cut_off,
        "a client still sending its head after {:?} was not cut off (header_read_timeout 1s); got {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&answer)
    );
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.starts_with("HTTP/1.1 2"),
            "an incomplete head was answered with success: {text}"
        );
    }
    let statuses = others.await.expect("other client");
    assert!(others_done.load(Ordering::SeqCst));
    assert!(
        statuses.iter().all(|s| s.as_ref().is_ok_and(|c| *c == 200)),
        "normal requests during the slow client: {statuses:?}"
    );
    assert_eq!(legacy.hits(), 10, "the slow request was never forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_100_headers_pass_and_101_get_431() {
    let (legacy, proxy) = start("").await;
    let resp = raw::exchange(proxy.addr(), &request_with_headers(99))
        .await
        .expect("response to 100 headers");
    assert_eq!(resp.status, 200, "100 header lines are allowed");
    assert_eq!(legacy.hits(), 1);
    let resp = raw::exchange(proxy.addr(), &request_with_headers(100))
        .await
        .expect("response to 101 headers");
    assert_eq!(resp.status, 431, "101 header lines");
    assert_eq!(legacy.hits(), 1, "the 431 request was not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_header_and_head_limits_give_431() {
    let (legacy, proxy) = start("limits:\n  max_headers: 10\n  max_head_bytes: 16384\n").await;
    let resp = raw::exchange(proxy.addr(), &request_with_headers(9))
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "10 header lines with max_headers 10");
    let resp = raw::exchange(proxy.addr(), &request_with_headers(10))
        .await
        .expect("response");
    assert_eq!(resp.status, 431, "11 header lines with max_headers 10");

    let small = format!(
        "GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(12_000)
    );
    let resp = raw::exchange(proxy.addr(), small.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "a 12 KB head with max_head_bytes 16384");
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(20_000)
    );
    let before = legacy.hits();
    let resp = raw::exchange(proxy.addr(), big.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 431, "a 20 KB head with max_head_bytes 16384");
    assert_eq!(legacy.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_head_limit_is_64_kib() {
    let (legacy, proxy) = start("").await;
    let ok = format!(
        "GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(60 * 1024)
    );
    let resp = raw::exchange(proxy.addr(), ok.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "a 60 KiB head is under the default limit");
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(70 * 1024)
    );
    let resp = raw::exchange(proxy.addr(), big.as_bytes())
        .await
        .expect("response");
    assert_eq!(resp.status, 431, "a 70 KiB head is over the default 64 KiB");
    assert_eq!(legacy.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_uris_get_414_checked_before_header_limits() {
    let (legacy, proxy) = start("limits:\n  max_uri_bytes: 1024\n").await;
    let ok_path = format!("/{}", "u".repeat(900));
    let resp = raw::get(proxy.addr(), &ok_path).await.expect("response");
    assert_eq!(resp.status, 200, "a 901-byte URI with max_uri_bytes 1024");
    let long_path = format!("/{}", "u".repeat(1500));
    let resp = raw::get(proxy.addr(), &long_path).await.expect("response");
    assert_eq!(resp.status, 414, "a 1501-byte URI with max_uri_bytes 1024");
    // The URI is checked first: too long a URI with too many headers is still a 414.
    let mut req = format!("GET {long_path} HTTP/1.1\r\n").into_bytes();
    req.extend_from_slice(&request_with_headers(120)["GET /x HTTP/1.1\r\n".len()..]);
    let resp = raw::exchange(proxy.addr(), &req).await.expect("response");
    assert_eq!(resp.status, 414, "URI checked before the header count");
    assert_eq!(legacy.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_uri_limit_is_8_kib() {
    let (legacy, proxy) = start("").await;
    let resp = raw::get(proxy.addr(), &format!("/{}", "u".repeat(7 * 1024)))
        .await
        .expect("response");
    assert_eq!(resp.status, 200, "a 7 KiB URI is under the default");
    let resp = raw::get(proxy.addr(), &format!("/{}", "u".repeat(9 * 1024)))
        .await
        .expect("response");
    assert_eq!(resp.status, 414, "a 9 KiB URI is over the default 8 KiB");
    assert_eq!(legacy.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_after_idle_timeout() {
    let (_legacy, proxy) = start("limits:\n  idle_timeout: 1s\n").await;
    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    conn.send(b"GET /x HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .expect("send");
    let resp = conn.read_response().await.expect("response");
    assert_eq!(resp.status, 200);
    // Keep-alive: a second request on the same connection works.
    conn.send(b"GET /y HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(conn.read_response().await.expect("response").status, 200);
    assert_eq!(
        conn.read_state(Duration::from_secs(8)).await,
        ReadState::Closed,
        "an idle keep-alive connection must be closed after idle_timeout (1s)"
    );
}
