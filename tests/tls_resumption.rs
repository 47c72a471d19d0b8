//! TLS session resumption on the listener across shards (`workers = 2`): one
//! full handshake, then 20 connections with the same client config all
//! resume (client side: `HandshakeKind::Resumed`; relay side: the session-end
//! lines say `client_tls="resumed"` and come from both shards), for TLS 1.3
//! (shared ticket key) and TLS 1.2; a client without a stored session does a
//! full handshake; tickets from before a restart fall back to a full one.

mod common;

use std::collections::BTreeSet;

use common::tls::*;
use rustls::HandshakeKind;
use tokio_tungstenite::tungstenite::Message;

const RESUMED_CONNECTIONS: usize = 20;

/// One relayed exchange over `s`; reading the relay's messages also lets the
/// client take in the session tickets sent after the handshake.
async fn relay_exchange(s: BoxIo, port: u16, target: &EchoTarget, i: usize) {
    let mut ws = first_message(s, port, TOKEN, &target.url()).await;
    echo(&mut ws, Message::text(format!("connection {i}"))).await;
    close(ws).await;
}

async fn resumes_across_shards(version: &'static rustls::SupportedProtocolVersion) {
    let ca = Ca::new("resumption CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).workers(2)).await;
    let target = EchoTarget::plain().await;
    let client = client_config_versions(&[&ca.der], &[version]);

    let first = tls(relay.port, &client, "localhost").await;
    assert_eq!(
        handshake_kind(&first),
        Some(HandshakeKind::Full),
        "first connection"
    );
    relay_exchange(Box::new(first), relay.port, &target, 0).await;
    relay.wait_session_ends(1).await;

    let mut kinds = Vec::new();
    for i in 1..=RESUMED_CONNECTIONS {
        let s = tls(relay.port, &client, "localhost").await;
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(version.version),
            "connection {i} version"
        );
        kinds.push(handshake_kind(&s));
        relay_exchange(Box::new(s), relay.port, &target, i).await;
        relay.wait_session_ends(i + 1).await;
    }
    let ends = relay.session_ends();
    let shards = |kind: &str| -> BTreeSet<String> {
        ends.iter()
            .filter(|l| field(l, "client_tls") == Some(kind))
            .filter_map(|l| field(l, "shard").map(str::to_string))
            .collect()
    };
    let resumed_lines = ends
        .iter()
        .filter(|l| field(l, "client_tls") == Some("resumed"))
        .count();
    let resumed = kinds
        .iter()
        .filter(|k| **k == Some(HandshakeKind::Resumed))
        .count();
    assert_eq!(
        resumed,
        RESUMED_CONNECTIONS,
        "{:?}: connections after the first that resumed, client side: {kinds:?}\n\
         shards that resumed: {:?}; shards that did a full handshake: {:?}\n{}",
        version.version,
        shards("resumed"),
        shards("full"),
        ends.join("\n")
    );
    assert_eq!(
        resumed_lines,
        RESUMED_CONNECTIONS,
        "relay-side client_tls=\"resumed\" lines:\n{}",
        ends.join("\n")
    );
    assert_eq!(
        field(&ends[0], "client_tls"),
        Some("full"),
        "first session: {}",
        ends[0]
    );
    // SO_REUSEPORT spreads 20 connections over both shards (all on one shard:
    // probability 2^-19), so resumption worked on a shard other than the
    // one that issued the first ticket.
    assert_eq!(
        shards("resumed").len(),
        2,
        "resumed sessions should span both shards; shards seen: {:?}\n{}",
        shards("resumed"),
        ends.join("\n")
    );
}

#[tokio::test]
async fn tls13_resumes_across_shards() {
    resumes_across_shards(&rustls::version::TLS13).await
}

#[tokio::test]
async fn tls12_resumes_across_shards() {
    resumes_across_shards(&rustls::version::TLS12).await
}

/// A new client config (empty session store) always does a full handshake;
/// health checks over TLS show the same resumption behaviour as relayed
/// sessions, and `/metrics` counts full and resumed handshakes.
#[tokio::test]
async fn fresh_clients_do_full_handshakes_and_health_checks_resume() {
    let ca = Ca::new("fresh CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).workers(2)).await;
    for _ in 0..3 {
        let cfg = client_config(&[&ca.der]);
        let s = tls(relay.port, &cfg, "localhost").await;
        assert_eq!(handshake_kind(&s), Some(HandshakeKind::Full));
        assert_eq!(http_get(s, "/health").await.status, 200);
    }
    let cfg = client_config(&[&ca.der]);
    let s = tls(relay.port, &cfg, "localhost").await;
    assert_eq!(http_get(s, "/health").await.status, 200);
    for i in 0..8 {
        let s = tls(relay.port, &cfg, "localhost").await;
        assert_eq!(
            handshake_kind(&s),
            Some(HandshakeKind::Resumed),
            "health connection {i}"
        );
        assert_eq!(http_get(s, "/health").await.status, 200);
    }
    // `/metrics` counts the same handshakes: full = the harness's start-up
    // health check + 3 fresh clients + `cfg`'s first; resumed = 8 + this
    // scrape's own; none toward targets.
    let s = tls(relay.port, &cfg, "localhost").await;
    let resp = http_get(s, "/metrics").await;
    assert_eq!(resp.status, 200, "{}", resp.head);
    for line in [
        r#"ws_relay_tls_handshakes_total{side="listener",mode="full"} 5"#,
        r#"ws_relay_tls_handshakes_total{side="listener",mode="resumed"} 9"#,
        r#"ws_relay_tls_handshakes_total{side="target",mode="full"} 0"#,
    ] {
        assert!(
            resp.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            resp.body
        );
    }
}

/// After a restart (new process, new ticket key) an old ticket cannot be
/// decrypted: the client falls back to a full handshake instead of failing.
#[tokio::test]
async fn ticket_from_before_a_restart_falls_back_to_full_handshake() {
    let ca = Ca::new("restart CA");
    let mut relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).workers(1)).await;
    let cfg = client_config(&[&ca.der]);
    let s = tls(relay.port, &cfg, "localhost").await;
    assert_eq!(http_get(s, "/health").await.status, 200);
    relay.restart().await;
    let s = tls(relay.port, &cfg, "localhost").await;
    assert_eq!(
        handshake_kind(&s),
        Some(HandshakeKind::Full),
        "a ticket issued by the previous process must not resume"
    );
    assert_eq!(http_get(s, "/health").await.status, 200);
    let s = tls(relay.port, &cfg, "localhost").await;
    assert_eq!(
        handshake_kind(&s),
        Some(HandshakeKind::Resumed),
        "then tickets of the new process resume"
    );
}
