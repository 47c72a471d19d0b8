//! The HTTP front door: `GET /health`, 405 for other methods, 404 for unknown
//! paths, the test page (not 426) for a relay-path GET without Upgrade, 426
//! when the page is disabled, 400 for a broken upgrade,
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

/// A plain GET on the relay path gets the test page; an upgrade there still
/// relays (every relay test upgrades on it).
#[tokio::test]
async fn relay_path_without_upgrade_gets_the_page() {
    let relay = Relay::start(RelayConfig {
        relay_path: Some("/relay".into()),
        ..RelayConfig::default()
    })
    .await;
    for path in ["/relay", "/"] {
        let resp = within(STEP, path, get(relay.port, path)).await.unwrap();
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.head);
        assert_eq!(
            resp.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(
            resp.body_str().contains("<title>ws-relay-core"),
            "GET {path}"
        );
        let csp = resp.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
    }
    let raw = "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (resp, mut stream) = request(relay.port, raw.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty(), "HEAD has no body");
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
}

/// With the page off, a plain GET on the relay path asks for an upgrade.
#[tokio::test]
async fn relay_path_without_upgrade_is_426_when_the_page_is_off() {
    let relay = Relay::start(RelayConfig {
        extra_toml: vec!["[page]\nenabled = false\n".into()],
        ..RelayConfig::default()
    })
    .await;
    let resp = within(STEP, "GET /", get(relay.port, "/")).await.unwrap();
    assert_eq!(resp.status, 426, "{}", resp.head);
}

/// `[page] path` moves the page; the old place is the relay path again.
#[tokio::test]
async fn page_path_is_configurable() {
    let relay = Relay::start(RelayConfig {
        relay_path: Some("/relay".into()),
        extra_toml: vec!["[page]\npath = \"/try\"\n".into()],
        ..RelayConfig::default()
    })
    .await;
    let resp = get(relay.port, "/try").await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.body_str().contains("<title>ws-relay-core"));
    assert_eq!(get(relay.port, "/").await.unwrap().status, 404);
    // The relay path still shows the page to a browser that lands there.
    assert_eq!(get(relay.port, "/relay").await.unwrap().status, 200);
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
