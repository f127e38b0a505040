//! Upstream framing: how the proxy reads a plain-`http://` upstream's HTTP/1.1 answers
//! (chunked, close-delimited, bodiless, interim, dribbled, cut short, garbage) and keeps its
//! upstream connections in step, against scripted raw-TCP upstreams that write exact bytes.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strangler_e2e::client::raw::{self, ReadState};
use strangler_e2e::{routes_yaml, Backend, Proxy, RawResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How long a scripted connection waits for the proxy's next request before hanging up.
const IDLE: Duration = Duration::from_secs(20);
/// Most bytes of a request head or body a scripted upstream reads.
const MAX_REQUEST: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Scripted raw-TCP upstreams
// ---------------------------------------------------------------------------------------------

/// One request a scripted upstream read.
#[derive(Debug, Clone)]
struct Seen {
    /// Which accepted connection it came on (0, 1, 2... in accept order).
    conn: usize,
    /// Its place on that connection (0 for the first request).
    nth: usize,
    method: String,
    target: String,
    /// (lower-case name, value) in order.
    headers: Vec<(String, String)>,
    /// The body as framed by `Content-Length` (raw bytes up to the last chunk when chunked).
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The upstream's end of one connection, handed to the script.
struct Side {
    stream: TcpStream,
    buf: Vec<u8>,
    conn: usize,
    served: usize,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Side {
    /// Reads more bytes; false at end of stream, on an error, or after [`IDLE`] without any.
    async fn fill(&mut self) -> bool {
        if self.buf.len() > MAX_REQUEST {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(IDLE, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// Reads the next request (head and body) and logs it; `None` when the proxy closed the
    /// connection or sent nothing more.
    async fn next_request(&mut self) -> Option<Seen> {
        let head_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_string();
        let target = request_line.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut seen = Seen {
            conn: self.conn,
            nth: self.served,
            method,
            target,
            headers,
            body: Vec::new(),
        };
        let chunked = seen
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let end = loop {
                if let Some(pos) = find(&self.buf, b"0\r\n\r\n") {
                    break pos + 5;
                }
                if !self.fill().await {
                    return None;
                }
            };
            seen.body = self.buf.drain(..end).collect();
        } else if let Some(len) = seen.header("content-length") {
            let len: usize = len.parse().ok()?;
            while self.buf.len() < len {
                if !self.fill().await {
                    return None;
                }
            }
            seen.body = self.buf.drain(..len).collect();
        }
        self.served += 1;
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(seen.clone());
        Some(seen)
    }

    /// Writes `bytes` (a failed write is the proxy's business: the script just goes on).
    async fn write(&mut self, bytes: &[u8]) {
        let _ = tokio::time::timeout(IDLE, self.stream.write_all(bytes)).await;
    }

    /// Writes `bytes` one byte per write, with a short pause between writes.
    async fn dribble(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write(&[*byte]).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Closes the connection (FIN).
    async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A raw-TCP upstream on `127.0.0.1:0` running a script per accepted connection. Dropping it
/// stops the accept loop and every connection's script.
struct Upstream {
    url: String,
    accepted: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Runs `script` on each accepted connection.
    async fn scripted<F, Fut>(script: F) -> Upstream
    where
        F: Fn(Side) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (count, requests) = (accepted.clone(), log.clone());
        let task = tokio::spawn(async move {
            // Owned here, so aborting the accept loop aborts every connection's script too.
            let mut scripts = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let side = Side {
                            stream,
                            buf: Vec::new(),
                            conn: count.fetch_add(1, Ordering::SeqCst),
                            served: 0,
                            log: requests.clone(),
                        };
                        scripts.spawn(script(side));
                    }
                    Some(_) = scripts.join_next(), if !scripts.is_empty() => {}
                }
            }
        });
        Upstream {
            url: format!("http://{addr}"),
            accepted,
            log,
            task,
        }
    }

    /// Answers every request on a connection with `answer(request)`, for as long as the proxy
    /// keeps sending requests on it.
    async fn answering<F>(answer: F) -> Upstream
    where
        F: Fn(&Seen) -> Vec<u8> + Send + Sync + 'static,
    {
        let answer = Arc::new(answer);
        Upstream::scripted(move |mut side| {
            let answer = answer.clone();
            async move {
                while let Some(req) = side.next_request().await {
                    let bytes = answer(&req);
                    side.write(&bytes).await;
                }
            }
        })
        .await
    }

    /// Every request read so far, in arrival order.
    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// `HTTP/1.1 200 OK` with a `Content-Length` and `body`.
fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The proxy and its clients
// ---------------------------------------------------------------------------------------------

/// A proxy with no routes: everything goes to the fallback, `legacy` at `url`.
/// Sends `n` GETs to `PREFIX/i` one after another on `conn`; each must be answered 200 with
/// its own path (the scripted upstreams echo it).
async fn each_get_answers_its_path(conn: &mut raw::Conn, prefix: &str, n: usize) {
    for i in 0..n {
        let path = format!("{prefix}/{i}");
        let resp = get_on(conn, &path).await;
        assert_eq!(
            (resp.status, body_text(&resp)),
            (200, path.clone()),
            "request {i}"
        );
    }
}

async fn fallback_to(url: &str) -> Proxy {
    Proxy::start(&routes_yaml(&[("legacy", url)], "")).await
}

/// A kept-alive `GET {path}` (no `Connection: close`).
fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: example.test\r\n\r\n").into_bytes()
}

/// Sends a kept-alive `GET {path}` on `conn` and reads the answer.
async fn get_on(conn: &mut raw::Conn, path: &str) -> RawResponse {
    conn.send(&get_request(path)).await.expect("send a GET");
    conn.read_response()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: no complete response: {e}"))
}

/// Reads an answer's head only (to a HEAD request) from `conn`, and checks that no byte follows
/// it in what arrived with it. Returns the head's text.
async fn read_head_only(conn: &mut raw::Conn) -> String {
    let mut got = Vec::new();
    for _ in 0..1000 {
        if find(&got, b"\r\n\r\n").is_some() {
            break;
        }
        match conn.read_state(raw::STEP).await {
            ReadState::Data(bytes) => got.extend_from_slice(&bytes),
            other => panic!(
                "no complete response head ({other:?}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let end = find(&got, b"\r\n\r\n").expect("a complete response head") + 4;
    assert_eq!(
        end,
        got.len(),
        "bytes after the head of an answer to HEAD: {:?}",
        String::from_utf8_lossy(&got)
    );
    String::from_utf8_lossy(&got).into_owned()
}

fn body_text(resp: &RawResponse) -> String {
    String::from_utf8_lossy(&resp.body).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_answer_with_extensions_and_trailers_reaches_the_client_decoded() {
    const CHUNKED: &str = "HTTP/1.1 200 OK\r\n\
        Content-Type: text/plain\r\n\
        Transfer-Encoding: chunked\r\n\
        Trailer: X-Checksum\r\n\
        \r\n\
        5;name=value\r\nhello\r\n\
        7 ; quoted=\"a;b\"\r\n, world\r\n\
        1A\r\nabcdefghijklmnopqrstuvwxyz\r\n\
        1\r\n!\r\n\
        0\r\n\
        X-Checksum: 12345\r\n\
        X-Other: trailing\r\n\
        \r\n";
    let upstream = Upstream::answering(|req| {
        if req.target == "/chunked" {
            CHUNKED.as_bytes().to_vec()
        } else {
            ok("after")
        }
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    let resp = get_on(&mut conn, "/chunked").await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        body_text(&resp),
        "hello, worldabcdefghijklmnopqrstuvwxyz!",
        "decoded body"
    );

    // The last chunk and the trailers were read whole: the next request on the same upstream
    // connection is answered in step.
    let resp = get_on(&mut conn, "/after").await;
    assert_eq!((resp.status, body_text(&resp).as_str()), (200, "after"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].conn, seen[1].nth),
        (seen[0].conn, 1),
        "the second request reused the upstream connection: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_delimited_answer_reaches_the_client_whole() {
    // Bigger than one read, so that the body comes in several pieces.
    let body: String = (0..100_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let expected = body.clone();
    let upstream = Upstream::scripted(move |mut side| {
        let body = body.clone();
        async move {
            if side.next_request().await.is_some() {
                side.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                    .await;
                side.write(body.as_bytes()).await;
            }
            side.close().await;
        }
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    for i in 0..2 {
        let resp = get_on(&mut conn, &format!("/until-close/{i}")).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.body.len(), expected.len(), "request {i}: body length");
        assert!(resp.body == expected.as_bytes(), "request {i}: body bytes");
    }
    assert_eq!(
        upstream.accepted(),
        2,
        "a close-delimited answer's connection is never reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_after_every_answer_serves_every_request() {
    // Keep-alive answers (HTTP/1.1, no `Connection: close`), but the connection is closed
    // right after each one: the proxy must notice, or resend the request on a new connection.
    let upstream = Upstream::scripted(|mut side| async move {
        if let Some(req) = side.next_request().await {
            side.write(&ok(&req.target)).await;
        }
        side.close().await;
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    const N: usize = 30;
    each_get_answers_its_path(&mut conn, "/closing", N).await;
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.nth == 0),
        "one request per connection: {seen:?}"
    );
    assert!(upstream.accepted() >= N, "a new connection per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_request_on_a_kept_connection_dropped_unanswered_is_resent_once() {
    // Each connection answers its first request, then reads the next one and hangs up without
    // a byte of answer: the kept connection "closed in the meantime".
    let upstream = Upstream::scripted(|mut side| async move {
        if let Some(req) = side.next_request().await {
            side.write(&ok(&req.target)).await;
            let _ = side.next_request().await;
        }
        side.close().await;
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    const N: usize = 10;
    each_get_answers_its_path(&mut conn, "/resend", N).await;
    let seen = upstream.seen();
    let dropped = seen.iter().filter(|s| s.nth == 1).count();
    assert!(
        dropped >= 1,
        "some requests went out on a kept connection and were dropped: {seen:?}"
    );
    for i in 0..N {
        let path = format!("/resend/{i}");
        let answered = seen
            .iter()
            .filter(|s| s.target == path && s.nth == 0)
            .count();
        let sent = seen.iter().filter(|s| s.target == path).count();
        assert_eq!(answered, 1, "{path} answered once: {seen:?}");
        assert!(sent <= 2, "{path} sent at most twice: {seen:?}");
    }

    // A POST without an Idempotency-Key is never sent twice: dropped on the kept connection,
    // it fails (502) and the upstream saw it once.
    conn.send(b"POST /no-key HTTP/1.1\r\nHost: example.test\r\nContent-Length: 0\r\n\r\n")
        .await
        .expect("send a POST");
    let resp = conn.read_response().await.expect("a response to the POST");
    let posts = upstream
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect::<Vec<_>>();
    assert_eq!(
        posts.len(),
        1,
        "the POST reached the upstream once: {posts:?}"
    );
    assert_eq!(posts[0].nth, 1, "on a kept connection: {posts:?}");
    assert_eq!(resp.status, 502, "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_answer_has_no_body_and_the_upstream_connection_stays_in_step() {
    let upstream = Upstream::answering(|req| match req.method.as_str() {
        // The length of the body a GET would get, and no body.
        "HEAD" => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\nX-Head: yes\r\n\r\n"
            .to_vec(),
        _ => ok("hello world"),
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    conn.send(b"HEAD /thing HTTP/1.1\r\nHost: example.test\r\n\r\n")
        .await
        .expect("send HEAD");
    let head = read_head_only(&mut conn).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\nx-head: yes\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-length: 11\r\n"), "{head}");

    let resp = get_on(&mut conn, "/thing").await;
    assert_eq!(
        (resp.status, body_text(&resp).as_str()),
        (200, "hello world")
    );

    let seen = upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[1].method.as_str()),
        ("HEAD", "GET")
    );
    assert_eq!(
        (seen[1].conn, seen[1].nth),
        (seen[0].conn, 1),
        "the GET went out on the HEAD's upstream connection: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_100_continue_is_skipped_for_the_final_answer() {
    let upstream = Upstream::answering(|_| {
        let mut bytes = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
            .to_vec();
        bytes.extend_from_slice(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nfinal");
        bytes
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    for i in 0..2 {
        let resp = get_on(&mut conn, &format!("/interim/{i}")).await;
        assert_eq!(
            (resp.status, body_text(&resp).as_str()),
            (201, "final"),
            "request {i}: {resp:?}"
        );
    }
}

/// An upstream that answers `/short` with `cut_answer` and then closes: the client's
/// response must end abnormally (an error or a non-200), not hang and not look complete, and
/// the proxy must go on serving.
async fn a_cut_short_answer_ends_abnormally(cut_answer: &'static [u8]) {
    let upstream = Upstream::scripted(move |mut side| async move {
        while let Some(req) = side.next_request().await {
            if req.target == "/short" {
                side.write(cut_answer).await;
                break;
            }
            side.write(&ok("whole")).await;
        }
        side.close().await;
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    conn.send(&get_request("/short")).await.expect("send");
    match conn.read_response().await {
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "the client's response hung instead of ending: {e}"
        ),
        Ok(resp) => assert_ne!(
            resp.status, 200,
            "a body cut short reached the client as a complete answer: {resp:?}"
        ),
    }

    // The proxy goes on serving.
    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    let resp = get_on(&mut conn, "/next").await;
    assert_eq!((resp.status, body_text(&resp).as_str()), (200, "whole"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_ends_the_clients_response_abnormally() {
    a_cut_short_answer_ends_abnormally(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_without_its_last_chunk_ends_the_clients_response_abnormally() {
    a_cut_short_answer_ends_abnormally(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_dribbled_one_byte_per_write_reaches_the_client_whole() {
    let upstream = Upstream::scripted(|mut side| async move {
        while side.next_request().await.is_some() {
            let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Dribble: yes\r\nContent-Length: 12\r\n\r\nhello, world";
            side.dribble(answer).await;
        }
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    for i in 0..2 {
        let resp = get_on(&mut conn, &format!("/dribble/{i}")).await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert_eq!(resp.header("x-dribble"), Some("yes"), "{resp:?}");
        assert_eq!(body_text(&resp), "hello, world");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_response_head_gives_502_with_the_json_error_body() {
    let upstream = Upstream::scripted(|mut side| async move {
        if side.next_request().await.is_some() {
            side.write(b"NOT HTTP\r\n\r\n").await;
        }
        side.close().await;
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let resp = raw::get(proxy.addr(), "/garbage")
        .await
        .expect("a response");
    assert_eq!(resp.status, 502, "{resp:?}");
    let json = resp.json();
    assert!(json["error"].is_string(), "{json}");
    assert!(
        json["route"].is_null(),
        "no route covers the request: {json}"
    );
    assert_eq!(json["upstream"], "legacy", "{json}");
    let m = proxy.metrics().await;
    assert!(
        m.sum("strangler_upstream_errors_total", &[("kind", "protocol")]) >= 1.0,
        "counted as a protocol error:\n{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_204_and_304_have_no_body_and_the_connection_stays_in_step() {
    let upstream = Upstream::answering(|req| match req.target.as_str() {
        "/no-content" => b"HTTP/1.1 204 No Content\r\nX-Kind: 204\r\n\r\n".to_vec(),
        // A 304 may carry the length of the representation it stands for: still no body.
        "/not-modified" => {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 50\r\n\r\n".to_vec()
        }
        _ => ok("done"),
    })
    .await;
    let proxy = fallback_to(&upstream.url).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    let resp = get_on(&mut conn, "/no-content").await;
    assert_eq!(resp.status, 204, "{resp:?}");
    assert_eq!(resp.header("x-kind"), Some("204"), "{resp:?}");
    let resp = get_on(&mut conn, "/not-modified").await;
    assert_eq!(resp.status, 304, "{resp:?}");
    assert_eq!(resp.header("etag"), Some("\"v1\""), "{resp:?}");
    let resp = get_on(&mut conn, "/after").await;
    assert_eq!((resp.status, body_text(&resp).as_str()), (200, "done"));
    // Nothing stray follows on the client connection either.
    assert_eq!(
        conn.read_state(Duration::from_millis(200)).await,
        ReadState::Open
    );

    let seen = upstream.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter()
            .enumerate()
            .all(|(i, s)| s.conn == seen[0].conn && s.nth == i),
        "all three on one upstream connection: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_post_on_a_resilient_route_reaches_the_upstream_with_its_exact_body() {
    let legacy = Backend::echo("legacy").await;
    let upstream = Upstream::answering(|req| {
        format!(
            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{}",
            req.body.len(),
            String::from_utf8_lossy(&req.body)
        )
        .into_bytes()
    })
    .await;
    let routes = "routes:\n\
        \x20 - name: retried\n    match: {prefix: /retried}\n    upstream: new\n    mode: extracted\n\
        \x20   retries: {attempts: 2, budget: 100, on: [connect, 5xx], backoff: 1ms}\n\
        \x20 - name: failing-over\n    match: {prefix: /failing-over}\n    upstream: new\n    mode: extracted\n\
        \x20   failover: true\n";
    let yaml = routes_yaml(&[("legacy", &legacy.url), ("new", &upstream.url)], routes);
    let proxy = Proxy::start(&yaml).await;

    let mut conn = raw::Conn::connect(proxy.addr()).await.expect("connect");
    for (i, path) in ["/retried/orders", "/failing-over/orders", "/retried/again"]
        .into_iter()
        .enumerate()
    {
        let body = format!("hell{i}");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: example.test\r\nIdempotency-Key: key-{i}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.send(request.as_bytes()).await.expect("send a POST");
        let resp = conn.read_response().await.expect("a response to the POST");
        assert_eq!((resp.status, body_text(&resp)), (201, body), "{path}");
    }

    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        3,
        "each POST reached the upstream once: {seen:?}"
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.method, "POST", "{s:?}");
        assert_eq!(s.body, format!("hell{i}").as_bytes(), "{s:?}");
        assert_eq!(s.header("content-length"), Some("5"), "{s:?}");
        assert_eq!(s.header("transfer-encoding"), None, "{s:?}");
        assert_eq!(
            s.header("idempotency-key"),
            Some(format!("key-{i}").as_str())
        );
    }
    assert_eq!(legacy.hits(), 0, "nothing failed over");
}
