//! Clients: an HTTP client with redirects off, and raw TCP for malformed requests.

use std::time::Duration;

/// A reqwest client with redirects off, no proxy from the environment, and a 60 s bound per
/// request so a hung proxy fails a test instead of hanging it.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build reqwest client")
}

/// GETs `url` with [`http_client`] and parses the body as JSON, whatever the status; panics when
/// the request fails or the body is not JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    http_client()
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: the body is not JSON: {e}"))
}

/// A parsed HTTP/1.x response read from a raw socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header lines as (lower-case name, value), in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// The body parsed as JSON (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// The first value of header `name` (case-insensitive) among (lower-case name, value) pairs.
pub(crate) fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

/// Raw TCP helpers: exact bytes out, a parsed response back, every step bounded in time.
pub mod raw {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::time::timeout;

    use super::RawResponse;

    /// How long any single raw step may take.
    pub const STEP: Duration = Duration::from_secs(10);

    /// What a connection did when we tried to read from it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ReadState {
        /// End of stream or reset: the peer closed the connection.
        Closed,
        /// More bytes arrived.
        Data(Vec<u8>),
        /// Nothing within the wait.
        Open,
    }

    /// A raw HTTP/1.x connection.
    #[derive(Debug)]
    pub struct Conn {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Conn {
        /// Connects to `addr`.
        pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
            let stream = timeout(STEP, TcpStream::connect(addr))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect"))??;
            stream.set_nodelay(true)?;
            Ok(Conn {
                stream,
                buf: Vec::new(),
            })
        }

        /// Writes all of `bytes`.
        pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
            timeout(STEP, self.stream.write_all(bytes))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write"))?
        }

        async fn fill(&mut self) -> io::Result<usize> {
            let mut chunk = [0u8; 16 * 1024];
            let n = timeout(STEP, self.stream.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read"))??;
            self.buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }

        /// Reads one response (to a request that was not HEAD).
        pub async fn read_response(&mut self) -> io::Result<RawResponse> {
            let head_end = loop {
                if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                    break pos;
                }
                if self.fill().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "connection closed before a response head; got {:?}",
                            String::from_utf8_lossy(&self.buf)
                        ),
                    ));
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
            self.buf.drain(..head_end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad status line {status_line:?}"),
                    )
                })?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let get = |name: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let body = if (100..200).contains(&status) || status == 204 || status == 304 {
                Vec::new()
            } else if get("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
            {
                self.read_chunked().await?
            } else if let Some(len) = get("content-length") {
                let len: usize = len.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad content-length")
                })?;
                while self.buf.len() < len {
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short body"));
                    }
                }
                self.buf.drain(..len).collect()
            } else {
                // Close-delimited.
                while self.fill().await? != 0 {}
                std::mem::take(&mut self.buf)
            };
            Ok(RawResponse {
                status,
                headers,
                body,
            })
        }

        async fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(pos) = find(&self.buf, b"\r\n") {
                        break pos;
                    }
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk size"));
                    }
                };
                let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                self.buf.drain(..line_end + 2);
                let size_text = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk size"))?;
                if size == 0 {
                    // Trailers, then an empty line.
                    loop {
                        let end = loop {
                            if let Some(pos) = find(&self.buf, b"\r\n") {
                                break pos;
                            }
                            if self.fill().await? == 0 {
                                return Ok(body);
                            }
                        };
                        self.buf.drain(..end + 2);
                        if end == 0 {
                            return Ok(body);
                        }
                    }
                }
                while self.buf.len() < size + 2 {
                    if self.fill().await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunk data"));
                    }
                }
                body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        }

        /// Waits up to `wait` for the connection to close; reports any bytes that arrive instead.
        pub async fn read_state(&mut self, wait: Duration) -> ReadState {
            if !self.buf.is_empty() {
                return ReadState::Data(std::mem::take(&mut self.buf));
            }
            let mut chunk = [0u8; 4096];
            match timeout(wait, self.stream.read(&mut chunk)).await {
                Err(_) => ReadState::Open,
                Ok(Ok(0)) | Ok(Err(_)) => ReadState::Closed,
                Ok(Ok(n)) => ReadState::Data(chunk[..n].to_vec()),
            }
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// Connects, writes `request`, reads one response.
    pub async fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<RawResponse> {
        let mut conn = Conn::connect(addr).await?;
        conn.send(request).await?;
        conn.read_response().await
    }

    /// `GET {target} HTTP/1.1` with `Host: example.test` and `Connection: close`; one response.
    pub async fn get(addr: SocketAddr, target: &str) -> io::Result<RawResponse> {
        let mut req = format!("GET {target} HTTP/1.1\r\n").into_bytes();
        req.extend_from_slice(b"Host: example.test\r\nConnection: close\r\n\r\n");
        exchange(addr, &req).await
    }

    /// Like [`get`] with a target given as bytes (for non-ASCII bytes).
    pub async fn get_bytes(addr: SocketAddr, target: &[u8]) -> io::Result<RawResponse> {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n");
        exchange(addr, &req).await
    }
}
