//! A lean HTTP/1.1 client for plain `http://` upstreams, for requests whose body is already
//! in hand (none, or a small replayable one) and that do not upgrade: nearly every request a
//! proxy forwards.
//!
//! hyper's pooled client drives each upstream connection from a task of its own: a request
//! crosses a channel to that task, the answer comes back over another, and the answer's body
//! is fed through a third. Here the request's own task writes the head and reads the answer,
//! and the response body reads the upstream socket directly as the client side polls it. A
//! small answer costs one write and one read, and no task wake-ups. Connections are kept per
//! worker thread and per origin, like hyper's pools, and outlive config snapshots.
//!
//! Streamed request bodies, upgrades and `https://` go through hyper's client
//! (`upstream.rs`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::coarse_clock;
use crate::upstream::{
    Body, BoxError, FailureKind, SendError, POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_HOST,
};

/// How long an idle connection is kept, in milliseconds.
const IDLE_TIMEOUT_MS: u64 = POOL_IDLE_TIMEOUT.as_millis() as u64;

/// Most headers in an upstream's answer.
const MAX_HEADERS: usize = 100;
/// Largest upstream response head.
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Largest chunk-size line or trailer section in a chunked answer.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 64 * 1024;
/// Read buffer size for a connection, and the most it grows to for a long body.
const READ_CHUNK: usize = 16 * 1024;
const MAX_READ: usize = 256 * 1024;

/// A request for [`send`].
pub struct Request<'a> {
    /// Where it goes (`host:port`).
    pub authority: &'a Authority,
    /// How long a new connection may take to open.
    pub connect_timeout: Duration,
    /// Method.
    pub method: &'a Method,
    /// The request target: path and query, base path included.
    pub target: &'a str,
    /// Headers, already rewritten for the upstream (`Host` included). Framing headers are
    /// replaced by this client's own.
    pub headers: &'a HeaderMap,
    /// The whole body (empty for none).
    pub body: Bytes,
    /// Whether the request may be sent again if a kept-alive connection turns out to have
    /// been closed by the upstream before it answered.
    pub resendable: bool,
}

/// Sends `req` and reads the answer's head; the body streams from the upstream as it is
/// polled. The caller bounds the whole call with the response timeout.
pub async fn send(req: Request<'_>) -> Result<Response<Body>, SendError> {
    let head = encode_head(&req);
    let mut fresh_only = false;
    loop {
        let checked_out = (!fresh_only).then(|| checkout(req.authority)).flatten();
        let reused = checked_out.is_some();
        let mut conn = match checked_out {
            Some(conn) => conn,
            None => Conn {
                stream: connect(req.authority, req.connect_timeout).await?,
                buf: BytesMut::new(),
                owner: std::thread::current().id(),
            },
        };
        match exchange(&mut conn, &head, &req.body, req.method).await {
            Ok((resp, framing, keep_alive)) => {
                let body = UpstreamBody::new(conn, req.authority.clone(), framing, keep_alive);
                return Ok(resp.map(|()| Body::new(body)));
            }
            // A kept-alive connection the upstream had already closed: nothing was
            // answered, so a request that may be repeated goes once more, on a new one.
            Err(Exchange::Untouched(_)) if reused && req.resendable => fresh_only = true,
            Err(Exchange::Untouched(f) | Exchange::Failed(f)) => return Err(f),
        }
    }
}

enum Exchange {
    /// No byte of an answer arrived.
    Untouched(SendError),
    /// Failed after part of an answer arrived.
    Failed(SendError),
}

async fn exchange(
    conn: &mut Conn,
    head: &[u8],
    body: &Bytes,
    method: &Method,
) -> Result<(Response<()>, Framing, bool), Exchange> {
    let written = if body.is_empty() {
        conn.stream.write_all(head).await
    } else {
        write_two(&mut conn.stream, head, body).await
    };
    written.map_err(|e| {
        Exchange::Untouched(SendError::io(FailureKind::Reset, "sending the request", &e))
    })?;
    // Whether any byte of an answer arrived (an interim 1xx counts, though it is consumed).
    let mut received = false;
    loop {
        match parse_head(&mut conn.buf, method) {
            Ok(Some(parsed)) => return Ok(parsed),
            Ok(None) => {}
            Err(f) => return Err(Exchange::Failed(f)),
        }
        if conn.buf.len() >= MAX_HEAD_BYTES {
            return Err(Exchange::Failed(SendError::new(
                FailureKind::Protocol,
                "response head too large",
            )));
        }
        let read = std::future::poll_fn(|cx| conn.poll_fill(cx, 0)).await;
        let failure = match read {
            Ok(0) => SendError::new(
                FailureKind::Reset,
                "connection closed before the response head was complete",
            ),
            Ok(_) => {
                received = true;
                continue;
            }
            Err(e) => SendError::io(FailureKind::Reset, "reading the response", &e),
        };
        return Err(if !received {
            Exchange::Untouched(failure)
        } else {
            Exchange::Failed(failure)
        });
    }
}

/// Writes the head and the body with one system call when the socket takes both.
async fn write_two(stream: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut parts = (head, body);
    while !parts.0.is_empty() || !parts.1.is_empty() {
        let slices = [io::IoSlice::new(parts.0), io::IoSlice::new(parts.1)];
        let n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_head = n.min(parts.0.len());
        parts = (&parts.0[from_head..], &parts.1[n - from_head..]);
    }
    Ok(())
}

/// The request line and headers, with this client's framing.
fn encode_head(req: &Request<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + req.headers.len() * 32);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // HTTP/1.1 requires a Host: a client that sent none (HTTP/1.0) has the upstream's own
    // origin stand for it, the default port left out.
    if !req.headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        let authority = req.authority.as_str();
        out.extend_from_slice(
            authority
                .strip_suffix(":80")
                .unwrap_or(authority)
                .as_bytes(),
        );
        out.extend_from_slice(b"\r\n");
    }
    // A length is sent for a body, and for an empty one the client declared.
    if !req.body.is_empty() || req.headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(req.body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (an answer to HEAD, a 204 or a 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// Parses a complete response head off the front of `buf`, skipping interim (1xx) answers.
/// `Ok(None)`: more bytes are needed.
#[allow(clippy::type_complexity)]
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<(Response<()>, Framing, bool)>, SendError> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(SendError::new(
                    FailureKind::Protocol,
                    "too many headers in the response",
                ))
            }
            Err(e) => {
                return Err(SendError::new(
                    FailureKind::Protocol,
                    format!("invalid response head: {e}"),
                ))
            }
        };
        let code = parsed.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| SendError::new(FailureKind::Protocol, format!("invalid status {code}")))?;
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(SendError::new(
                    FailureKind::Protocol,
                    "101 Switching Protocols to a request that did not ask to upgrade",
                ));
            }
            // 100 Continue and the like: the final answer follows.
            buf.advance(len);
            continue;
        }
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Header values are kept as slices of the head, by their offsets in it.
        let base = buf.as_ptr() as usize;
        let mut fields = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                SendError::new(
                    FailureKind::Protocol,
                    format!("invalid header name {:?}", h.name),
                )
            })?;
            let start = h.value.as_ptr() as usize - base;
            fields.push((name, start, start + h.value.len()));
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(fields.len());
        for (name, start, end) in fields {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| {
                SendError::new(
                    FailureKind::Protocol,
                    format!("invalid value for header {name}"),
                )
            })?;
            headers.append(name, value);
        }
        let (framing, mut keep_alive) = framing(&mut headers, status, method, version)?;
        keep_alive &= connection_persists(&headers, version);
        let mut resp = Response::new(());
        *resp.status_mut() = status;
        *resp.version_mut() = version;
        *resp.headers_mut() = headers;
        return Ok(Some((resp, framing, keep_alive)));
    }
}

/// The body's framing (RFC 9112 section 6.3), and whether the connection can still be kept
/// after it as far as framing goes.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    method: &Method,
    version: Version,
) -> Result<(Framing, bool), SendError> {
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = version == Version::HTTP_11
            && headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        // Both framings at once: the transfer coding wins, and the connection is not
        // trusted for another exchange.
        let both = headers.remove(header::CONTENT_LENGTH).is_some();
        return Ok(if chunked_last {
            (Framing::Chunked, !both)
        } else {
            (Framing::UntilClose, false)
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii()).ok_or_else(|| {
                SendError::new(
                    FailureKind::Protocol,
                    "invalid Content-Length in the response",
                )
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(SendError::new(
                    FailureKind::Protocol,
                    "conflicting Content-Length values in the response",
                ));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::UntilClose, false),
    })
}

fn parse_decimal(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    b.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Whether the upstream means to keep the connection open after this answer.
fn connection_persists(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (version == Version::HTTP_11 || keep_alive)
}

/// An upstream connection in use.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The worker thread whose runtime the socket is registered with.
    owner: ThreadId,
}

impl Conn {
    /// Reads what the socket has into the buffer; `Ok(0)` at end of stream. `expected`:
    /// how many more bytes are known to be coming (0 if unknown), to read them in fewer calls.
    fn poll_fill(&mut self, cx: &mut Context<'_>, expected: u64) -> Poll<io::Result<usize>> {
        let want = usize::try_from(expected)
            .unwrap_or(usize::MAX)
            .clamp(READ_CHUNK, MAX_READ);
        if self.buf.capacity() - self.buf.len() < want / 2 {
            // Reclaims the buffer in place once the frames cut from it are gone.
            self.buf.reserve(want);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// The answer's body, read from the upstream connection as it is polled. The connection
/// goes back to its pool when the body ends cleanly and both sides meant to keep it.
struct UpstreamBody {
    conn: Option<Conn>,
    authority: Authority,
    state: State,
    keep_alive: bool,
    /// Trailer fields of a chunked body, as they arrive.
    trailers: Option<HeaderMap>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Length(u64),
    UntilClose,
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Inside a chunk, this many bytes left.
    ChunkData(u64),
    /// Expecting the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer fields until an empty line; bytes seen.
    Trailers(usize),
    Done,
}

/// What one step of decoding produced.
enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    NeedMore,
    End,
}

impl UpstreamBody {
    fn new(conn: Conn, authority: Authority, framing: Framing, keep_alive: bool) -> UpstreamBody {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = UpstreamBody {
            conn: Some(conn),
            authority,
            state,
            keep_alive,
            trailers: None,
        };
        if matches!(body.state, State::Done) {
            body.finish();
        }
        body
    }

    /// The body is complete: the connection goes back to the pool if it can.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && conn.buf.is_empty() && conn.owner == std::thread::current().id() {
                let mut conn = conn;
                // An idle connection keeps no more than a small buffer.
                if conn.buf.capacity() > READ_CHUNK {
                    conn.buf = BytesMut::new();
                }
                checkin(&self.authority, conn);
            }
        }
    }

    /// Decodes what is buffered.
    fn step(&mut self) -> Result<Step, BoxError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::End);
        };
        let buf = &mut conn.buf;
        loop {
            match self.state {
                State::Done => return Ok(Step::End),
                State::Length(left) | State::ChunkData(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Step::Data(data));
                }
                State::UntilClose => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("invalid chunked body: missing CRLF after a chunk".into());
                    }
                    buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = State::Done;
                        return Ok(match self.trailers.take() {
                            Some(fields) => Step::Trailers(fields),
                            None => Step::End,
                        });
                    }
                    let seen = seen + line.len();
                    if seen > MAX_TRAILER_BYTES {
                        return Err("chunked body trailers too large".into());
                    }
                    self.state = State::Trailers(seen);
                    // A field that does not parse is dropped, as a malformed trailer would
                    // be by any recipient; the body itself is complete.
                    if let Some((name, value)) = trailer_field(&line) {
                        self.trailers
                            .get_or_insert_with(HeaderMap::new)
                            .append(name, value);
                    }
                }
            }
        }
    }
}

/// A `name: value` trailer line.
fn trailer_field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Takes one CRLF-terminated line off the front of `buf`, without its CRLF.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, BoxError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            } else {
                return Err("invalid chunked body: line not ended by CRLF".into());
            }
            Ok(Some(line))
        }
        None if buf.len() > max => Err("invalid chunked body: line too long".into()),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits, then optional extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, BoxError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii();
    let rest_ok = rest.is_empty() || rest.first() == Some(&b';');
    // Leading zeros do not count towards the size limit.
    let significant = line[..digits].iter().skip_while(|&&b| b == b'0').count();
    if digits == 0 || significant > 15 || !rest_ok {
        return Err("invalid chunked body: bad chunk size".into());
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| "invalid chunk size")?;
    Ok(u64::from_str_radix(text, 16)?)
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match this.step() {
                Ok(Step::Data(data)) => {
                    if matches!(this.state, State::Done) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Trailers(fields)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let expected = match this.state {
                State::Length(n) | State::ChunkData(n) => n,
                _ => 0,
            };
            match std::task::ready!(conn.poll_fill(cx, expected)) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(
                        "upstream closed the connection before the body was complete".into(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

/// An idle kept-alive connection.
struct Idle {
    conn: Conn,
    /// When it went idle, in milliseconds on the coarse clock.
    since: u64,
}

thread_local! {
    /// This worker thread's idle connections, by origin. Most recently used last.
    static POOL: RefCell<Vec<(Authority, VecDeque<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// An idle connection to `authority` that still looks open, if there is one.
fn checkout(authority: &Authority) -> Option<Conn> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = idle_list(&mut pool, authority)?;
        let now = coarse_clock::now_ms();
        while let Some(idle) = list.pop_back() {
            if now.saturating_sub(idle.since) < IDLE_TIMEOUT_MS && still_open(&idle.conn.stream) {
                return Some(idle.conn);
            }
        }
        None
    })
}

/// Puts a connection back for the next request to `authority`.
fn checkin(authority: &Authority, conn: Conn) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let now = coarse_clock::now_ms();
        if idle_list(&mut pool, authority).is_none() {
            pool.push((authority.clone(), VecDeque::new()));
        }
        let Some(idle) = idle_list(&mut pool, authority) else {
            return;
        };
        // The oldest go first: past the idle timeout, or over the cap.
        while idle
            .front()
            .is_some_and(|c| now.saturating_sub(c.since) >= IDLE_TIMEOUT_MS)
            || idle.len() >= POOL_MAX_IDLE_PER_HOST
        {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    })
}

/// The idle connections to `authority`. A worker talks to a handful of origins: a scan of
/// their names beats hashing one (an `Authority` hashes byte by byte, lowercased).
fn idle_list<'p>(
    pool: &'p mut [(Authority, VecDeque<Idle>)],
    authority: &Authority,
) -> Option<&'p mut VecDeque<Idle>> {
    pool.iter_mut()
        .find(|(a, _)| a.as_str() == authority.as_str())
        .map(|(_, idle)| idle)
}

/// Closes, every `every`, this worker's idle connections that expired or that the upstream
/// closed, and forgets origins left with none: a pool whose traffic stopped (or whose
/// upstream moved in a reload) would otherwise hold its sockets for good. Runs for the life
/// of the worker's runtime.
pub async fn sweep_idle(every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = coarse_clock::now_ms();
        POOL.with(|pool| {
            let mut pool = pool.borrow_mut();
            for (_, idle) in pool.iter_mut() {
                idle.retain(|c| {
                    now.saturating_sub(c.since) < IDLE_TIMEOUT_MS && still_open(&c.conn.stream)
                });
            }
            pool.retain(|(_, idle)| !idle.is_empty());
        });
    }
}

/// Whether an idle connection can carry another request: the upstream has neither closed
/// it nor sent anything unasked. Costs no system call unless the socket became readable.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Opens a connection to `authority` within `timeout`.
async fn connect(authority: &Authority, timeout: Duration) -> Result<TcpStream, SendError> {
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = authority.port_u16().unwrap_or(80);
    let deadline = tokio::time::Instant::now() + timeout;
    let timed_out = || {
        SendError::new(
            FailureKind::Timeout,
            format!("connecting to {authority}: timed out after {timeout:?}"),
        )
    };
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => {
                return Err(SendError::io(
                    FailureKind::Connect,
                    &format!("resolving {authority}"),
                    &e,
                ))
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    // Each address gets its share of what is left, as hyper's connector does, so that one
    // unreachable address does not use up the whole budget.
    let mut last = None;
    for (i, addr) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let share = left / u32::try_from(addrs.len() - i).unwrap_or(u32::MAX);
        match tokio::time::timeout(share, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(io::ErrorKind::TimedOut.into()),
        }
    }
    match last {
        Some(e) if e.kind() == io::ErrorKind::TimedOut => Err(timed_out()),
        Some(e) => Err(SendError::io(
            FailureKind::Connect,
            &format!("connecting to {authority}"),
            &e,
        )),
        None => Err(SendError::new(
            FailureKind::Connect,
            format!("{authority} resolved to no address"),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(
        raw: &[u8],
        method: &Method,
    ) -> Result<Option<(Response<()>, Framing, bool)>, SendError> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, method)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let (r, f, k) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status(), f, k),
            (StatusCode::OK, Framing::Length(5), true)
        );
        let (_, f, _) = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(f, Framing::Empty);
        let (_, f, k) = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((f, k), (Framing::Chunked, false));
        let (_, f, k) = parse(b"HTTP/1.1 200 OK\r\n\r\n", &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((f, k), (Framing::UntilClose, false));
        let (_, f, k) = parse(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((f, k), (Framing::Length(0), false));
        let (_, _, k) = parse(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!k);
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &Method::GET
        )
        .is_err());
        assert!(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            &Method::GET
        )
        .is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
            .unwrap()
            .is_none());
    }

    #[test]
    fn interim_answers_are_skipped() {
        let (r, f, _) = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            &Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status(), f), (StatusCode::NO_CONTENT, Framing::Empty));
    }

    #[test]
    fn a_missing_host_is_the_upstreams_origin() {
        let headers = HeaderMap::new();
        let request = |authority: &Authority| {
            String::from_utf8(encode_head(&Request {
                authority,
                connect_timeout: Duration::from_secs(1),
                method: &Method::GET,
                target: "/",
                headers: &headers,
                body: Bytes::new(),
                resendable: true,
            }))
            .unwrap()
        };
        assert_eq!(
            request(&"shop.internal:80".parse().unwrap()),
            "GET / HTTP/1.1\r\nhost: shop.internal\r\n\r\n"
        );
        assert_eq!(
            request(&"10.0.0.1:8080".parse().unwrap()),
            "GET / HTTP/1.1\r\nhost: 10.0.0.1:8080\r\n\r\n"
        );
    }

    /// The body `UpstreamBody` decodes from `wire`, sent over a real socket in small pieces.
    async fn decode(framing: Framing, wire: &'static [u8]) -> (Vec<u8>, Option<HeaderMap>, bool) {
        use http_body_util::BodyExt;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.unwrap();
            for piece in wire.chunks(3) {
                peer.write_all(piece).await.unwrap();
                peer.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            // Closing: a body cut short must end, not wait.
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Conn {
            stream,
            buf: BytesMut::new(),
            owner: std::thread::current().id(),
        };
        let authority: Authority = addr.to_string().parse().unwrap();
        let mut body = UpstreamBody::new(conn, authority, framing, true);
        let (mut data, mut trailers, mut failed) = (Vec::new(), None, false);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        writer.await.unwrap();
        (data, trailers, failed)
    }

    #[tokio::test]
    async fn chunked_bodies_decode_with_their_trailers() {
        let (data, trailers, failed) = decode(
            Framing::Chunked,
            b"5;ext=1\r\nhello\r\n1 \r\n,\r\n006\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        )
        .await;
        assert!(!failed);
        assert_eq!(data, b"hello, world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers.get("x-checksum").unwrap(), "abc");
        let (data, trailers, failed) = decode(Framing::Chunked, b"3\r\nabc\r\n0\r\n\r\n").await;
        assert_eq!(
            (data.as_slice(), trailers.is_none(), failed),
            (&b"abc"[..], true, false)
        );
    }

    #[tokio::test]
    async fn bodies_cut_short_end_in_an_error() {
        let (data, _, failed) = decode(Framing::Length(10), b"abc").await;
        assert_eq!((data.as_slice(), failed), (&b"abc"[..], true));
        let (_, _, failed) = decode(Framing::Chunked, b"5\r\nab").await;
        assert!(failed);
        let (data, _, failed) = decode(Framing::UntilClose, b"all of it").await;
        assert_eq!((data.as_slice(), failed), (&b"all of it"[..], false));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0;ext=1").unwrap(), 0);
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"1ffffffffffffffff").is_err());
        assert_eq!(parse_chunk_size(b"1a \t").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"00000000000000000001").unwrap(), 1);
        assert_eq!(parse_chunk_size(b"3 ;x").unwrap(), 3);
    }

    #[test]
    fn encodes_framing_of_its_own() {
        let authority: Authority = "127.0.0.1:1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("shop"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let head = encode_head(&Request {
            authority: &authority,
            connect_timeout: Duration::from_secs(1),
            method: &Method::POST,
            target: "/a?b",
            headers: &headers,
            body: Bytes::from_static(b"abc"),
            resendable: false,
        });
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /a?b HTTP/1.1\r\nhost: shop\r\ncontent-length: 3\r\n\r\n"
        );
    }
}
