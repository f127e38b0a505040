//! Fake upstreams, each built in one line on `127.0.0.1:0`, serving in-process on the test's
//! tokio runtime until dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The body type every fake backend answers with.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A fake upstream. Its accept loop stops when this is dropped.
#[derive(Debug)]
pub struct Backend {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// The listening address.
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Requests received so far (counted when the request head arrives).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Base URL with `path` appended.
    pub fn url_with(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// Answers every request with 200 JSON
    /// `{"backend": NAME, "method", "path" (path and query as received), "headers": {name: value}}`,
    /// repeated header values joined with `", "`.
    ///
    /// Request header `x-echo-set: Name=value` (repeatable) adds that header to the response,
    /// and `x-echo-status: N` sets the status.
    pub async fn echo(name: &str) -> Backend {
        Backend::echo_after(name, Duration::ZERO).await
    }

    /// Like [`Backend::echo`], but sleeps `delay` before answering.
    pub async fn slow(name: &str, delay: Duration) -> Backend {
        Backend::echo_after(name, delay).await
    }

    async fn echo_after(name: &str, delay: Duration) -> Backend {
        let name = name.to_string();
        serve(move |req| {
            let name = name.clone();
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                echo_response(&name, &req)
            }
        })
        .await
    }

    /// Answers every request with a 200 body of `size` bytes (`x` repeated), generated in 64 KiB
    /// chunks as it is sent, with a `Content-Length`.
    pub async fn download(size: u64) -> Backend {
        serve(move |_req| async move {
            static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
            let stream = futures_util::stream::unfold(size, |left| async move {
                if left == 0 {
                    return None;
                }
                let n = left.min(CHUNK.len() as u64);
                let frame = Frame::data(Bytes::from_static(&CHUNK[..n as usize]));
                Some((Ok::<_, std::io::Error>(frame), left - n))
            });
            let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(size));
            resp
        })
        .await
    }

    /// Reads the whole request body without keeping it and answers 200 JSON `{"bytes": N}`.
    pub async fn upload_counter() -> Backend {
        serve(|req: Request<Incoming>| async move {
            let mut body = req.into_body();
            let mut count: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            count += data.len() as u64;
                        }
                    }
                    Err(e) => {
                        return json_response(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"error": e.to_string(), "bytes": count}),
                        )
                    }
                }
            }
            json_response(StatusCode::OK, &serde_json::json!({ "bytes": count }))
        })
        .await
    }

    /// A WebSocket server (any path) that echoes every text and binary message back.
    pub async fn websocket_echo() -> Backend {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let (addr, task) = accept_each(move |stream| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            }
        })
        .await;
        Backend {
            url: format!("http://{addr}"),
            addr,
            hits,
            task,
        }
    }
}

/// An address whose connects hang (never accepted, never refused): a listener with a backlog of
/// zero whose accept queue is already full, so the kernel drops new SYNs. Kept while alive.
#[derive(Debug)]
pub struct Blackhole {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    _listener: TcpListener,
    _fillers: Vec<tokio::net::TcpStream>,
}

impl Blackhole {
    /// Builds one and checks that a connect to it really hangs (panics if this kernel accepts).
    pub async fn new() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local addr");
        let listener = socket.listen(0).expect("listen with backlog 0");
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match tokio::time::timeout(
                Duration::from_millis(300),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(stream)) => fillers.push(stream),
                Ok(Err(e)) => panic!("blackhole connect failed instead of hanging: {e}"),
                // The queue is full: connects now hang, which is what we want.
                Err(_) => {
                    return Blackhole {
                        url: format!("http://{addr}"),
                        _listener: listener,
                        _fillers: fillers,
                    }
                }
            }
        }
        panic!("could not fill a listen queue: this kernel keeps accepting connections");
    }
}

/// A server that accepts connections, reads the request head, and closes without answering.
/// Returns its base URL and the accept loop (abort it, or let the runtime end it).
pub async fn hang_up_url() -> (String, JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let (addr, task) = accept_each(|mut stream| async move {
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf).await;
        drop(stream);
    })
    .await;
    (format!("http://{addr}"), task)
}

/// Binds `127.0.0.1:0` and spawns an accept loop that runs `per_connection(stream)` as a task of
/// its own for every connection; returns the address and the loop's task.
async fn accept_each<F, Fut>(mut per_connection: F) -> (SocketAddr, JoinHandle<()>)
where
    F: FnMut(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(per_connection(stream));
        }
    });
    (addr, task)
}

/// A base URL where nothing listens (a port bound and released), so connecting is refused.
pub fn refusing_url() -> String {
    format!("http://127.0.0.1:{}", crate::proxy::free_port())
}

/// Serves `handler` on `127.0.0.1:0` (HTTP/1.1 and h2c) until the returned backend is dropped.
async fn serve<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    serve_maybe_tls(handler, None).await
}

impl Backend {
    /// Like [`Backend::echo`], over HTTPS with the given server config; `url` is
    /// `https://127.0.0.1:PORT` (so the certificate needs the IP address `127.0.0.1`).
    pub async fn tls_echo(name: &str, config: Arc<rustls::ServerConfig>) -> Backend {
        let name = name.to_string();
        serve_maybe_tls(
            move |req| {
                let name = name.clone();
                async move { echo_response(&name, &req) }
            },
            Some(tokio_rustls::TlsAcceptor::from(config)),
        )
        .await
    }
}

async fn serve_maybe_tls<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let scheme = if tls.is_some() { "https" } else { "http" };
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let (addr, task) = accept_each(move |stream| {
        let handler = handler.clone();
        let counter = counter.clone();
        let tls = tls.clone();
        async move {
            let service = hyper::service::service_fn(move |req| {
                counter.fetch_add(1, Ordering::SeqCst);
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // Generous limits: the tests probe the proxy's limits, not the backend's, and the
            // proxy adds headers (X-Forwarded-*, x-request-id) of its own.
            builder.http1().max_headers(1000).max_buf_size(1024 * 1024);
            builder.http2().max_header_list_size(1024 * 1024);
            match tls {
                None => {
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        }
    })
    .await;
    Backend {
        url: format!("{scheme}://{addr}"),
        addr,
        hits,
        task,
    }
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = Full::new(Bytes::from(value.to_string()))
        .map_err(|never: Infallible| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn echo_response(name: &str, req: &Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for key in req.headers().keys() {
        let values: Vec<String> = req
            .headers()
            .get_all(key)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(key.as_str().to_string(), values.join(", ").into());
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| req.uri().to_string());
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": path,
        "headers": headers,
    });
    let status = req
        .headers()
        .get("x-echo-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = json_response(status, &body);
    for spec in req.headers().get_all("x-echo-set") {
        let Ok(spec) = spec.to_str() else { continue };
        let Some((k, v)) = spec.split_once('=') else {
            continue;
        };
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

/// One request a [`Scripted`] backend received, body included.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Header (lower-case name, value) pairs in order.
    pub headers: Vec<(String, String)>,
    /// The whole request body.
    pub body: Bytes,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::client::first_header(&self.headers, name)
    }
}

/// A fake upstream whose 200 JSON answers are chosen by a function of the request and of the
/// call's number (0, 1, 2... across all requests it got), optionally after a delay. It keeps
/// every request it received, body included, so a test can see what the proxy sent.
#[derive(Debug)]
pub struct Scripted {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    backend: Backend,
    received: Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Scripted {
    /// Answers `answer(request, call_number)` as `application/json` with status 200, right away.
    pub async fn json<F>(answer: F) -> Scripted
    where
        F: Fn(&Received, usize) -> serde_json::Value + Send + Sync + 'static,
    {
        Scripted::json_after(Duration::ZERO, answer).await
    }

    /// Like [`Scripted::json`], but sleeps `delay` (after reading the request) before answering.
    pub async fn json_after<F>(delay: Duration, answer: F) -> Scripted
    where
        F: Fn(&Received, usize) -> serde_json::Value + Send + Sync + 'static,
    {
        let received: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let answer = Arc::new(answer);
        let calls = Arc::new(AtomicUsize::new(0));
        let backend = serve(move |req: Request<Incoming>| {
            let log = log.clone();
            let answer = answer.clone();
            let calls = calls.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
                let got = Received {
                    method: parts.method.as_str().to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|pq| pq.as_str().to_string())
                        .unwrap_or_else(|| parts.uri.to_string()),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_string(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect(),
                    body,
                };
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let value = answer(&got, n);
                log.lock().unwrap_or_else(|e| e.into_inner()).push(got);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                json_response(StatusCode::OK, &value)
            }
        })
        .await;
        Scripted {
            url: backend.url.clone(),
            backend,
            received,
        }
    }

    /// Requests whose head arrived so far (counted before the body is read or any delay).
    pub fn hits(&self) -> usize {
        self.backend.hits()
    }

    /// Every request received so far (each logged once its body was read), in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A shared on/off flag a test flips at runtime to change what a [`Backend::programmed`]
/// backend answers (healthy -> failing, right -> wrong...). Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Switch(Arc<std::sync::atomic::AtomicBool>);

impl Switch {
    /// A new flag, off.
    pub fn new() -> Switch {
        Switch::default()
    }

    /// Turns the flag on or off.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    /// Whether the flag is on.
    pub fn is_on(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a [`Backend::programmed`] backend is told about each request.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method.
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Whether the request is a shadow copy (`x-strangler-shadow` present).
    pub shadow: bool,
    /// The call's number across all requests this backend got (0, 1, 2...).
    pub n: usize,
}

impl Backend {
    /// Answers `answer(call)`: a status and a JSON body (`application/json`), right away.
    /// The function may read shared state (a [`Switch`], counters) to change behaviour at
    /// runtime: answer 503 for the first N calls, every other call, or while a flag is set.
    pub async fn programmed<F>(answer: F) -> Backend
    where
        F: Fn(&Call) -> (u16, serde_json::Value) + Send + Sync + 'static,
    {
        let answer = Arc::new(answer);
        let calls = Arc::new(AtomicUsize::new(0));
        serve(move |req: Request<Incoming>| {
            let answer = answer.clone();
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let call = Call {
                method: req.method().as_str().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map(|pq| pq.as_str().to_string())
                    .unwrap_or_else(|| req.uri().to_string()),
                shadow: req.headers().contains_key("x-strangler-shadow"),
                n,
            };
            async move {
                // Read the body so that the connection stays reusable.
                let _ = req.into_body().collect().await;
                let (status, value) = answer(&call);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                json_response(status, &value)
            }
        })
        .await
    }

    /// Answers every request with `status` and JSON `{"backend": NAME, "status": STATUS}`.
    pub async fn status(name: &str, status: u16) -> Backend {
        let name = name.to_string();
        Backend::programmed(move |_| {
            (
                status,
                serde_json::json!({"backend": name, "status": status}),
            )
        })
        .await
    }
}
