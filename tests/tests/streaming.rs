//! Streaming: large bodies both ways with bounded proxy memory, and a WebSocket that lives
//! through reloads.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use strangler_e2e::{http_client, routes_yaml, Backend, Proxy};
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;
/// The proxy's peak RSS must stay under this while streaming.
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_and_upload_stream_through_with_bounded_memory() {
    let legacy = Backend::echo("legacy").await;
    let download = Backend::download(200 * MIB).await;
    let upload = Backend::upload_counter().await;
    let yaml = routes_yaml(
        &[
            ("legacy", &legacy.url),
            ("download", &download.url),
            ("upload", &upload.url),
        ],
        r#"routes:
  - name: download
    match: {prefix: /download}
    upstream: download
    mode: extracted
  - name: upload
    match: {prefix: /upload}
    upstream: upload
    mode: extracted
"#,
    );
    let proxy = Proxy::start(&yaml).await;
    let client = http_client();

    let resp = client
        .get(proxy.url("/download/big"))
        .send()
        .await
        .expect("GET download");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        received += chunk.expect("download chunk").len() as u64;
    }
    assert_eq!(received, 200 * MIB, "download byte count");

    // 50 MiB in 64 KiB chunks, generated as they are sent.
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = (50 * MIB / chunk.len() as u64) as usize;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let resp = client
        .post(proxy.url("/upload/big"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("POST upload");
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.expect("upload JSON");
    assert_eq!(json["bytes"], 50 * MIB, "upload byte count: {json}");

    let peak = proxy.peak_rss_kib();
    eprintln!("proxy peak RSS after streaming: {peak} KiB");
    assert!(
        peak < RSS_LIMIT_KIB,
        "proxy peak RSS {peak} KiB after streaming 200 MiB down and 50 MiB up (limit {RSS_LIMIT_KIB} KiB)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_survives_twenty_reloads() {
    let legacy = Backend::echo("legacy").await;
    let other = Backend::echo("other").await;
    let ws = Backend::websocket_echo().await;
    let config = |other_mode: &str| {
        routes_yaml(
            &[
                ("legacy", &legacy.url),
                ("ws", &ws.url),
                ("other", &other.url),
            ],
            &format!(
                "routes:\n  - name: ws\n    match: {{prefix: /ws}}\n    upstream: ws\n    mode: extracted\n  - name: other\n    match: {{prefix: /other}}\n    upstream: other\n    mode: {other_mode}\n"
            ),
        )
    };
    let proxy = Proxy::start(&config("legacy")).await;
    let url = format!("ws://{}/ws/echo", proxy.addr());
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    )
    .await
    .expect("WebSocket handshake in time")
    .expect("WebSocket handshake through the proxy");

    async fn round_trip<S>(socket: &mut S, text: &str)
    where
        S: futures_util::Sink<Message>
            + futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
        <S as futures_util::Sink<Message>>::Error: std::fmt::Debug,
    {
        socket
            .send(Message::text(text.to_string()))
            .await
            .expect("send over the WebSocket");
        let reply = match tokio::time::timeout(Duration::from_secs(10), socket.next()).await {
            Err(_) => panic!("no echo for {text:?}"),
            Ok(None) => panic!("WebSocket closed before echoing {text:?}"),
            Ok(Some(Err(e))) => panic!("WebSocket error waiting for {text:?}: {e}"),
            Ok(Some(Ok(reply))) => reply,
        };
        assert_eq!(reply, Message::text(text.to_string()));
    }

    round_trip(&mut socket, "before any reload").await;
    for i in 0..20 {
        let next = config(if i % 2 == 0 { "extracted" } else { "legacy" });
        proxy.replace_config_by_rename(&next);
        let (status, body) = proxy.post_reload().await;
        assert_eq!(status, 200, "reload {i}: {body}");
        round_trip(&mut socket, &format!("after reload {i}")).await;
    }
    assert_eq!(
        ws.hits(),
        1,
        "one WebSocket connection to the backend throughout"
    );
    let _ = socket.close(None).await;
}
