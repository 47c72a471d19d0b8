//! Routes toward `wss://` upstreams: verified with the route's own CA file,
//! refused when the certificate does not verify, and accepted unverified
//! only when the route says `insecure_skip_verify = true`.

mod common;

use common::tls::{Ca, EchoTarget, LOCAL_NAMES};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn routes(upstream: &str, ca_file: &str) -> String {
    format!(
        "[[routes]]\nname = \"ca\"\npath = \"/ca\"\nupstream = [{upstream:?}]\nca_file = {ca_file:?}\n\n\
         [[routes]]\nname = \"default\"\npath = \"/default\"\nupstream = [{upstream:?}]\n\n\
         [[routes]]\nname = \"skip\"\npath = \"/skip\"\nupstream = [{upstream:?}]\ninsecure_skip_verify = true\n"
    )
}

async fn echo_through(port: u16, path: &str) {
    let mut ws = upgrade(port, path).await;
    send(&mut ws, Message::text("over wss")).await;
    expect_text(&mut ws, "over wss").await;
    ws.send(Message::Close(None)).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
}

#[tokio::test]
async fn wss_upstreams_verified_refused_and_skipped() {
    let ca = Ca::new("route test CA");
    let leaf = ca.leaf(LOCAL_NAMES);
    let target = EchoTarget::tls(leaf.server_config(&[])).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let relay = Relay::start(RelayConfig {
        relay_path: Some("/relay".into()),
        extra_toml: vec![routes(&target.url(), &ca_path.display().to_string())],
        ..RelayConfig::default()
    })
    .await;
    echo_through(relay.port, "/ca").await;
    echo_through(relay.port, "/skip").await;
    // The bundled web roots do not know this CA: no upstream answered.
    let r = http::request(
        relay.port,
        b"GET /default HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap()
    .0;
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert_error_json(&r.json(), "target_unreachable");
    assert!(r.body_str().contains("TLS handshake"), "{}", r.body_str());
    assert_eq!(target.handshake_kinds().len(), 2, "two verified handshakes");
}

#[tokio::test]
async fn a_missing_route_ca_file_is_named_at_start() {
    let out = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            format!(
                "[server]\nenable_tls = false\nrelay_path = \"/relay\"\n{}",
                routes("wss://localhost:1/", "/nonexistent/ca.pem")
            ),
        )
        .unwrap();
        run_cli(&path, "check").await
    };
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("routes.ca_file"), "{}", out.all());
    assert!(out.all().contains("/nonexistent/ca.pem"), "{}", out.all());
}
