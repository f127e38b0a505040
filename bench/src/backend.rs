//! `bench-backend`: answers `GET /large` (any path ending in `/large`, so that a route's
//! prefix can sit in front) with a fixed 64 KiB body, and everything else with a ~100-byte
//! JSON body. Keep-alive HTTP/1.1 on a multi-thread tokio runtime.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Size of the large body.
pub const LARGE_BYTES: usize = 64 * 1024;

/// The small JSON body (about 100 bytes).
pub const SMALL_BODY: &[u8] =
    br#"{"id":42,"name":"strangler benchmark","status":"ok","items":[1,2,3,4,5],"tags":["a","b"]}"#;

#[derive(Debug, Parser)]
#[command(
    name = "bench-backend",
    about = "A tiny HTTP/1.1 backend for the benchmarks"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// Entry point of `bench-backend`.
pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = rt.enable_all().build().context("starting the runtime")?;
    rt.block_on(serve(args.listen))
}

/// Serves until the process is killed.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let small = Bytes::from_static(SMALL_BODY);
    let large = Bytes::from(large_body());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (small, large) = (small.clone(), large.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (small, large) = (small.clone(), large.clone());
                async move { Ok::<_, Infallible>(answer(&req, small, large)) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, small: Bytes, large: Bytes) -> Response<Full<Bytes>> {
    let (body, content_type) = if req.uri().path().ends_with("/large") {
        (large, "application/octet-stream")
    } else {
        (small, "application/json")
    };
    let mut resp = Response::new(Full::new(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn large_body() -> Vec<u8> {
    (0..LARGE_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}
