//! The HTTP front door: `GET /health`, 405 for other methods, 404 for unknown
//! paths, 426 for a relay-path GET without Upgrade, 400 for a broken upgrade,
//! 431/400 + close for oversized heads and too many headers, 400 + close for
//! garbage — and none of it disturbs sessions already running (both drivers,
//! both forward modes).

mod common;

use std::time::Duration;

use common::http::{closed_within, get, request};
use common::*;
use tokio_tungstenite::tungstenite::Message;

matrix!(engine: malformed_requests_do_not_disturb_sessions);

#[tokio::test]
async fn health_ok() {
    let relay = Relay::start(RelayConfig::default()).await;
    let resp = get(relay.port, "/health").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.body_str().trim(), r#"{"status":"ok"}"#);
    assert_eq!(resp.json()["status"], "ok");
}

#[tokio::test]
async fn other_methods_are_405() {
    let relay = Relay::start(RelayConfig::default()).await;
    for (method, path) in [
        ("POST", "/health"),
        ("PUT", "/"),
        ("DELETE", "/health"),
        ("PATCH", "/"),
    ] {
        let raw = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let (resp, _) = within(STEP, method, request(relay.port, raw.as_bytes()))
            .await
            .unwrap();
        assert_eq!(resp.status, 405, "{method} {path}: {}", resp.head);
    }
}

#[tokio::test]
async fn unknown_path_is_404() {
    let relay = Relay::start(RelayConfig::default()).await;
    for path in ["/nope", "/health/extra", "/relay"] {
        let resp = within(STEP, path, get(relay.port, path)).await.unwrap();
        assert_eq!(resp.status, 404, "GET {path}: {}", resp.head);
    }
}

/// A plain GET on the relay path asks the client to upgrade. (With the
/// default `relay_path = "/"`, SPEC §5 also wants the test page at `GET /`,
/// so this checks a non-root relay path.)
#[tokio::test]
async fn relay_path_without_upgrade_is_426() {
    let relay = Relay::start(RelayConfig {
        relay_path: Some("/relay".into()),
        ..RelayConfig::default()
    })
    .await;
    let resp = within(STEP, "GET /relay", get(relay.port, "/relay"))
        .await
        .unwrap();
    assert_eq!(resp.status, 426, "{}", resp.head);
}

/// An upgrade request without Sec-WebSocket-Key is a bad request.
#[tokio::test]
async fn broken_upgrade_is_400() {
    let relay = Relay::start(RelayConfig::default()).await;
    let raw = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (resp, _) = within(
        STEP,
        "upgrade without key",
        request(relay.port, raw.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.head);
}

fn oversized_head() -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9 * 1024)
    )
    .into_bytes()
}

fn many_headers() -> Vec<u8> {
    let mut s = String::from("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for i in 0..150 {
        s.push_str(&format!("X-H{i}: v\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Sends `raw`, expects one of `statuses`, then the relay closing the connection.
async fn expect_status_and_close(port: u16, what: &str, raw: &[u8], statuses: &[u16]) {
    let (resp, mut stream) = within(STEP, what, request(port, raw))
        .await
        .unwrap_or_else(|e| panic!("{what}: no HTTP response: {e}"));
    assert!(
        statuses.contains(&resp.status),
        "{what}: got {} (expected one of {statuses:?})\n{}",
        resp.status,
        resp.head
    );
    assert!(
        closed_within(&mut stream, Duration::from_secs(3)).await,
        "{what}: connection not closed after {}",
        resp.status
    );
}

#[tokio::test]
async fn oversized_head_is_431_and_closed() {
    let relay = Relay::start(RelayConfig::default()).await;
    expect_status_and_close(relay.port, "9 KiB head", &oversized_head(), &[431, 400]).await;
}

#[tokio::test]
async fn too_many_headers_is_431_and_closed() {
    let relay = Relay::start(RelayConfig::default()).await;
    expect_status_and_close(relay.port, "150 headers", &many_headers(), &[431, 400]).await;
}

fn garbage_inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut tls = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    tls.extend_from_slice(b"\r\n\r\n");
    vec![
        ("TLS ClientHello bytes", tls),
        ("words", b"HELLO WORLD\r\n\r\n".to_vec()),
        ("no request target", b"GET\r\n\r\n".to_vec()),
        ("NUL bytes", b"GET /\0\0 HTTP/1.1\r\n\r\n".to_vec()),
        (
            "bad header line",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n".to_vec(),
        ),
    ]
}

#[tokio::test]
async fn garbage_is_400_and_closed() {
    let relay = Relay::start(RelayConfig::default()).await;
    for (what, raw) in garbage_inputs() {
        expect_status_and_close(relay.port, what, &raw, &[400]).await;
    }
    // Still serving.
    assert_eq!(get(relay.port, "/health").await.unwrap().status, 200);
}

async fn malformed_requests_do_not_disturb_sessions(v: Variant) {
    let target = Target::start(TargetOpts {
        report_msgs: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(v.config()).await;
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mode = if i % 2 == 0 {
            AuthMode::FirstMessage
        } else {
            AuthMode::Header
        };
        sessions.push(connect(mode, relay.port, ALICE_TOKEN, &target.url("/")).await);
    }
    for round in 0..3 {
        for (what, raw) in garbage_inputs() {
            expect_status_and_close(relay.port, what, &raw, &[400]).await;
        }
        expect_status_and_close(relay.port, "9 KiB head", &oversized_head(), &[431, 400]).await;
        expect_status_and_close(relay.port, "150 headers", &many_headers(), &[431, 400]).await;
        for (i, ws) in sessions.iter_mut().enumerate() {
            let msg = format!("round {round} session {i}");
            send(ws, Message::text(msg.clone())).await;
            expect_text(ws, &msg).await;
        }
    }
    for ws in &mut sessions {
        close_and_expect_echo(ws, 1000, "").await;
    }
}
