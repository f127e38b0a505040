//! Listeners: the accept loop, per-connection limits and timeouts, graceful shutdown.
//!
//! Each connection is watched by a small timer of its own: a client has
//! `header_read_timeout` to send a whole request head (counted from the first byte after an
//! idle period, or from accept), and an idle keep-alive connection is closed after
//! `idle_timeout`. hyper's own header timer would also cut idle keep-alive connections at
//! the header timeout, so it is off and this one does both jobs.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::Limits;
use crate::upstream::Body;

/// Signals shutdown to servers: `true` means stop accepting and drain.
pub type ShutdownRx = watch::Receiver<bool>;

/// Held by every connection and tunnel; draining waits until all are dropped.
#[derive(Clone)]
pub struct DrainGuard(#[allow(dead_code)] mpsc::Sender<()>);

/// Tracks open connections so shutdown can wait for them.
pub struct Drain {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Drain { tx: Some(tx), rx }
    }
}

impl Drain {
    /// A guard for one more connection.
    pub fn guard(&self) -> Option<DrainGuard> {
        self.tx.clone().map(DrainGuard)
    }

    /// Waits until every guard is dropped, or `deadline` passes. Returns whether all
    /// connections finished.
    pub async fn wait(mut self, deadline: Duration) -> bool {
        self.tx = None;
        tokio::time::timeout(deadline, self.rx.recv()).await.is_ok()
    }
}

/// What a connection's handler is given about the connection.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers one request.
    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// The limits for a new connection (the live config's, so a reload applies to new
    /// connections).
    fn limits(&self) -> Limits;

    /// For a TLS listener, the server config a new connection handshakes with (the live
    /// config's, so reloaded certificates apply to new connections); `None` for plain TCP.
    fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        None
    }
}

/// Accepts connections on `listener` until shutdown, serving each with `handler`; then
/// waits for the connections it accepted to finish (they are told to close once idle).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    limits: Limits,
    handler: H,
    mut shutdown: ShutdownRx,
    drain: DrainGuard,
) {
    // The connection cap is fixed at start; the other limits follow reloads.
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        // At the connection cap, stop accepting (the kernel backlog holds new clients)
        // rather than accept and drop.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let limits = handler.limits();
        let tls = handler.tls();
        let shutdown = shutdown.clone();
        let drain = drain.clone();
        connections.spawn(async move {
            match tls {
                None => serve_connection(stream, peer, &limits, handler, shutdown, false).await,
                Some(config) => {
                    // The handshake counts against the header-read timeout: a client that
                    // opens a connection and says nothing is cut off either way.
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(limits.header_read_timeout, accept).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, &limits, handler, shutdown, true).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
            drop(drain);
        });
    }
    // Stop accepting: close the socket now, then let the open connections finish.
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_connection<H, S>(
    stream: S,
    peer: SocketAddr,
    limits: &Limits,
    handler: H,
    mut shutdown: ShutdownRx,
    tls: bool,
) where
    H: Handler,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        activity: activity.clone(),
        scan: HeadScan::default(),
    });
    let service_activity = activity.clone();
    let draining = shutdown.clone();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let handler = handler.clone();
        let activity = service_activity.clone();
        let draining = draining.clone();
        let http1 = req.version() < http::Version::HTTP_2;
        activity.request_started();
        if activity.framing_conflict.swap(false, Ordering::Relaxed) {
            req.extensions_mut().insert(FramingConflict);
        }
        if tls {
            req.extensions_mut().insert(crate::proxy::TlsConnection);
        }
        async move {
            let mut resp = handler.call(req, peer).await;
            if http1 && *draining.borrow() {
                // Shutting down (or handing over to a new process): this connection's last
                // answer. hyper closes an HTTP/1 connection after a `Connection: close`.
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            let guard = RequestGuard(activity);
            Ok::<_, Infallible>(resp.map(|b| {
                crate::upstream::Body::new(GuardedBody {
                    inner: b,
                    _guard: guard,
                })
            }))
        }
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // Looser than the limits: the handler enforces them exactly, after the URI check.
        .max_buf_size((limits.max_head_bytes + limits.max_uri_bytes).max(8192))
        .max_headers(limits.max_headers.saturating_mul(2).max(100));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX));
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);

    let tick = (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    let mut closing = false;
    // Shutdown came before the connection's first request: a client that just connected has
    // its request on the way, and closing now would fail it. It gets that request answered
    // (with `Connection: close`), or the header-read timeout closes it.
    let mut deferred = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = ticker.tick() => {
                if deferred && !closing && activity.started_any.load(Ordering::Relaxed) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                match activity.check(limits.header_read_timeout, limits.idle_timeout) {
                    Verdict::Fine => {}
                    Verdict::HeaderTimeout => {
                        tracing::info!(%peer, timeout = ?limits.header_read_timeout, "client too slow sending the request head; closing");
                        return;
                    }
                    Verdict::Idle if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Verdict::Idle => {}
                }
            }
            _ = shutdown.changed(), if !closing && !deferred => {
                if activity.started_any.load(Ordering::Relaxed) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                } else {
                    deferred = true;
                }
            }
        }
    }
}

/// Marks a request whose head had both `Content-Length` and `Transfer-Encoding` (hyper
/// drops the length before the handler sees the headers).
#[derive(Debug, Clone, Copy)]
pub struct FramingConflict;

#[cfg(test)]
mod tests {
    use super::HeadScan;

    fn scan(chunks: &[&[u8]]) -> bool {
        let mut s = HeadScan::default();
        s.arm();
        chunks.iter().any(|c| s.feed(c))
    }

    #[test]
    fn spots_both_framing_headers_across_reads() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Len",
            b"gth: 5\r\nTRANSFER-ENCODING: chunked\r\n\r\n"
        ]));
        assert!(!scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nX-Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        // Headers in the body after the head do not count.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}

/// Timestamps of one connection, in milliseconds since it was accepted (on the coarse
/// clock: these are read on every read and write).
struct Activity {
    start: u64,
    last_io: AtomicU64,
    /// When the current request head started arriving, +1 (0: no head in progress).
    head_started: AtomicU64,
    in_flight: AtomicUsize,
    /// Whether any request has started on this connection.
    started_any: AtomicBool,
    /// Set by the reader when the head being read has both Content-Length and
    /// Transfer-Encoding; taken by the request it belongs to.
    framing_conflict: AtomicBool,
    /// Set when a response finishes, so the reader scans the next head.
    rearm_scan: AtomicBool,
}

enum Verdict {
    Fine,
    HeaderTimeout,
    Idle,
}

impl Activity {
    fn new() -> Self {
        // A new connection is expected to send a head: the header timer runs from accept.
        Activity {
            start: crate::coarse_clock::now_ms(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            started_any: AtomicBool::new(false),
            framing_conflict: AtomicBool::new(false),
            rearm_scan: AtomicBool::new(true),
        }
    }

    fn now(&self) -> u64 {
        crate::coarse_clock::now_ms().saturating_sub(self.start)
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started.store(now + 1, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.started_any.store(true, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.rearm_scan.store(true, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn check(&self, header_timeout: Duration, idle_timeout: Duration) -> Verdict {
        let now = self.now();
        let head = self.head_started.load(Ordering::Relaxed);
        if head > 0 && now.saturating_sub(head - 1) > header_timeout.as_millis() as u64 {
            return Verdict::HeaderTimeout;
        }
        let idle = self.in_flight.load(Ordering::Relaxed) == 0
            && now.saturating_sub(self.last_io.load(Ordering::Relaxed))
                > idle_timeout.as_millis() as u64;
        if idle {
            Verdict::Idle
        } else {
            Verdict::Fine
        }
    }
}

/// Marks a request finished when its response body is done (dropped).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that holds a [`RequestGuard`] until it is fully sent or dropped.
struct GuardedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client stream (TCP, or TLS over TCP) that records when bytes move, and scans request
/// heads for framing conflicts.
struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
    scan: HeadScan,
}

/// Spots a request head carrying both `Content-Length` and `Transfer-Encoding`. hyper
/// accepts such a request (dropping the length), but a proxy in front of other parsers must
/// refuse it: it is the shape of a request-smuggling attempt. Streaming, no allocation.
#[derive(Default)]
struct HeadScan {
    /// Scanning a head now (from accept, and again after each response).
    armed: bool,
    /// Bytes in the current line so far, `\r` excluded.
    col: usize,
    cl: bool,
    te: bool,
    seen_cl: bool,
    seen_te: bool,
}

impl HeadScan {
    const CL: &'static [u8] = b"content-length:";
    const TE: &'static [u8] = b"transfer-encoding:";

    fn arm(&mut self) {
        *self = HeadScan {
            armed: true,
            cl: true,
            te: true,
            ..HeadScan::default()
        };
    }

    /// Feeds bytes; returns true once when a head with both headers ends.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        if !self.armed {
            return false;
        }
        for &b in bytes {
            match b {
                b'\n' => {
                    if self.col == 0 {
                        self.armed = false;
                        return self.seen_cl && self.seen_te;
                    }
                    self.col = 0;
                    self.cl = true;
                    self.te = true;
                }
                b'\r' => {}
                _ => {
                    let lower = b.to_ascii_lowercase();
                    self.cl = self.cl && Self::CL.get(self.col) == Some(&lower);
                    self.te = self.te && Self::TE.get(self.col) == Some(&lower);
                    self.col += 1;
                    self.seen_cl |= self.cl && self.col == Self::CL.len();
                    self.seen_te |= self.te && self.col == Self::TE.len();
                }
            }
        }
        false
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
            let this = &mut *self;
            if this.activity.rearm_scan.swap(false, Ordering::Relaxed) {
                this.scan.arm();
            }
            if this.scan.feed(&buf.filled()[before..]) {
                this.activity
                    .framing_conflict
                    .store(true, Ordering::Relaxed);
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
