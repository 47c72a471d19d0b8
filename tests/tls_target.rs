//! Trust and resumption toward `wss://` targets: a self-signed target with no
//! CA configured fails with `target_handshake_failed` (first-message: error
//! message + Close 1014; header mode: 502 + JSON), as do a CA that did not
//! sign the target, a host-name mismatch and a plaintext server behind a
//! `wss://` URL; `insecure_skip_verify = true` and `target_ca_file` (a CA, or
//! the pinned self-signed certificate itself) each make it pass; and repeated
//! sessions to one target on a `workers = 1` relay resume the target's TLS
//! session (`target_tls="resumed"`, confirmed on the target's side). A target
//! that closes TCP in the middle of the TLS handshake must fail fast with
//! `target_handshake_failed` and leave the shard serving.

mod common;

use std::time::Duration;

use common::tls::*;
use tokio_tungstenite::tungstenite::Message;

/// Opens a first-message session through a plain listener to `target_url`,
/// expecting `target_handshake_failed` and Close 1014.
async fn expect_first_message_failure(relay: &TlsRelay, target_url: &str) {
    let (io, seen) = tap(tcp(relay.port).await);
    let mut ws = try_upgrade(io, relay.port, &[]).await.expect("upgrade");
    let auth = serde_json::json!({ "token": TOKEN, "target": target_url }).to_string();
    send(&mut ws, Message::text(auth)).await;
    expect_error_close_raw(&mut ws, &seen, "target_handshake_failed", 1014).await;
}

async fn expect_header_failure(relay: &TlsRelay, target_url: &str) {
    let io = tcp(relay.port).await;
    let err = header_auth(io, relay.port, TOKEN, target_url)
        .await
        .err()
        .unwrap_or_else(|| panic!("header-mode session to {target_url} must be refused"));
    let (status, body) = refused(err);
    assert_eq!(status, 502, "header-mode refusal body: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("body not JSON ({e}): {body}"));
    assert_eq!(v["status"], "error", "{body}");
    assert_eq!(v["code"], "target_handshake_failed", "{body}");
}

/// A relayed echo through a plain listener must work.
async fn expect_pass(relay: &TlsRelay, target: &EchoTarget) {
    let io = tcp(relay.port).await;
    let mut ws = first_message(io, relay.port, TOKEN, &target.url()).await;
    echo(&mut ws, Message::text("verified target")).await;
    echo(&mut ws, Message::binary(vec![7u8; 70_000])).await;
    close(ws).await;
    let io = tcp(relay.port).await;
    let mut ws = header_auth(io, relay.port, TOKEN, &target.url())
        .await
        .unwrap_or_else(|e| panic!("header-mode session to {} failed: {e}", target.url()));
    echo(&mut ws, Message::text("verified target, header mode")).await;
    close(ws).await;
}

#[tokio::test]
async fn self_signed_target_without_ca_is_refused() {
    let target = EchoTarget::tls(Leaf::self_signed(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain()).await;
    expect_first_message_failure(&relay, &target.url()).await;
    expect_header_failure(&relay, &target.url()).await;
    assert!(
        target.handshake_kinds().is_empty(),
        "no TLS handshake with an unverified target may complete: {:?}",
        target.handshake_kinds()
    );
    relay
        .wait_for_log(
            "a refusal logged with code target_handshake_failed",
            STEP,
            |l| {
                l.lines()
                    .filter(|l| {
                        l.contains("session refused") && l.contains("target_handshake_failed")
                    })
                    .count()
                    >= 2
            },
        )
        .await;
    assert!(
        relay.session_ends().is_empty(),
        "refused sessions are not relayed sessions"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_self_signed_target() {
    let target = EchoTarget::tls(Leaf::self_signed(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().line("insecure_skip_verify = true")).await;
    expect_pass(&relay, &target).await;
    let log = relay.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("insecure_skip_verify")),
        "skip-verify must be warned about at start:\n{log}"
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_wrong_host_name() {
    let ca = Ca::new("skip-verify CA");
    let target = EchoTarget::tls(ca.leaf(&["elsewhere.example"]).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().line("insecure_skip_verify = true")).await;
    expect_pass(&relay, &target).await;
}

#[tokio::test]
async fn target_ca_file_accepts_target_signed_by_that_ca() {
    let ca = Ca::new("private target CA");
    let target = EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    // Without the CA: refused.
    let without = TlsRelay::start(RelaySpec::plain()).await;
    expect_first_message_failure(&without, &target.url()).await;
    drop(without);
    // With it: relayed.
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&ca.pem)).await;
    expect_pass(&relay, &target).await;
}

/// The CA file may hold several CAs; the one that signed the target counts.
#[tokio::test]
async fn target_ca_file_with_several_cas() {
    let other = Ca::new("unrelated CA");
    let ca = Ca::new("the right CA");
    let target = EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let both = format!("{}{}", other.pem, ca.pem);
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&both)).await;
    expect_pass(&relay, &target).await;
}

/// Pinning: the self-signed target certificate itself as `target_ca_file`.
#[tokio::test]
async fn target_ca_file_pins_a_self_signed_target() {
    let leaf = Leaf::self_signed(LOCAL_NAMES);
    let target = EchoTarget::tls(leaf.server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&leaf.cert_pem)).await;
    expect_pass(&relay, &target).await;
}

/// A target whose leaf comes through an intermediate it sends itself.
#[tokio::test]
async fn target_chain_through_intermediate_verifies_against_root() {
    let root = Ca::new("target root");
    let inter = root.intermediate("target intermediate");
    let leaf = inter.leaf(LOCAL_NAMES);
    let target = EchoTarget::tls(leaf.server_config(std::slice::from_ref(&inter.der))).await;
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&root.pem)).await;
    expect_pass(&relay, &target).await;
}

#[tokio::test]
async fn target_ca_file_of_another_ca_is_refused() {
    let trusted = Ca::new("trusted but irrelevant");
    let signer = Ca::new("actual signer");
    let target = EchoTarget::tls(signer.leaf(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&trusted.pem)).await;
    expect_first_message_failure(&relay, &target.url()).await;
    expect_header_failure(&relay, &target.url()).await;
}

#[tokio::test]
async fn target_host_name_mismatch_is_refused() {
    let ca = Ca::new("mismatch CA");
    let target = EchoTarget::tls(ca.leaf(&["elsewhere.example"]).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().target_ca(&ca.pem)).await;
    expect_first_message_failure(&relay, &target.url()).await;
    expect_header_failure(&relay, &target.url()).await;
}

/// `wss://` to a server that speaks plain WebSocket: the TLS handshake fails.
#[tokio::test]
async fn wss_url_to_plaintext_server_is_refused() {
    let target = EchoTarget::plain().await;
    let relay = TlsRelay::start(
        RelaySpec::plain()
            .line("insecure_skip_verify = true")
            .line("connect_timeout_secs = 3"),
    )
    .await;
    let url = format!("wss://localhost:{}/", target.port);
    // The plain server reads the ClientHello, cannot parse it, and closes.
    let limit = Duration::from_secs(6);
    let answered = tokio::time::timeout(limit, async {
        expect_first_message_failure(&relay, &url).await;
        expect_header_failure(&relay, &url).await;
    })
    .await;
    assert!(
        answered.is_ok(),
        "no answer within {limit:?} (connect_timeout_secs = 3) for a wss:// URL that points \
         at a plaintext WebSocket server (it closes after reading the ClientHello)"
    );
}

/// The relay (one shard) keeps a resumption store toward targets: after the
/// first session, sessions to the same `wss://` target resume.
async fn resumes_toward_target(listener_tls: bool) {
    let ca = Ca::new("resumption CA");
    let target = EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let spec = if listener_tls {
        RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))
    } else {
        RelaySpec::plain()
    };
    let relay = TlsRelay::start(spec.workers(1).target_ca(&ca.pem)).await;
    let client = client_config(&[&ca.der]);
    const SESSIONS: usize = 5;
    for i in 0..SESSIONS {
        let io: BoxIo = if listener_tls {
            Box::new(tls(relay.port, &client, "localhost").await)
        } else {
            Box::new(tcp(relay.port).await)
        };
        let mut ws = if i % 2 == 0 {
            first_message(io, relay.port, TOKEN, &target.url()).await
        } else {
            header_auth(io, relay.port, TOKEN, &target.url())
                .await
                .expect("header upgrade")
        };
        echo(&mut ws, Message::text(format!("session {i}"))).await;
        close(ws).await;
        relay.wait_session_ends(i + 1).await;
    }
    let ends = relay.session_ends();
    let kinds: Vec<_> = ends
        .iter()
        .map(|l| field(l, "target_tls").unwrap_or("?"))
        .collect();
    assert_eq!(kinds[0], "full", "first session: {}", ends[0]);
    assert!(
        kinds[1..].iter().all(|k| *k == "resumed"),
        "sessions after the first must resume toward the target; target_tls per session: {kinds:?}\n{}",
        ends.join("\n")
    );
    let seen = target.handshake_kinds();
    assert_eq!(seen.len(), SESSIONS, "target handshakes: {seen:?}");
    assert_eq!(seen[0], Some(rustls::HandshakeKind::Full));
    assert!(
        seen[1..]
            .iter()
            .all(|k| *k == Some(rustls::HandshakeKind::Resumed)),
        "target side saw: {seen:?}"
    );
    // `/metrics` agrees: one full, the rest resumed, toward the target.
    let io: BoxIo = if listener_tls {
        Box::new(tls(relay.port, &client, "localhost").await)
    } else {
        Box::new(tcp(relay.port).await)
    };
    let body = http_get(io, "/metrics").await.body;
    for line in [
        r#"ws_relay_tls_handshakes_total{side="target",mode="full"} 1"#,
        r#"ws_relay_tls_handshakes_total{side="target",mode="resumed"} 4"#,
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        );
    }
}

#[tokio::test]
async fn target_tls_resumes_plain_listener() {
    resumes_toward_target(false).await
}

#[tokio::test]
async fn target_tls_resumes_tls_listener() {
    resumes_toward_target(true).await
}

/// A failed verification does not poison the shard: a good target right after
/// works, and the bad one still fails.
#[tokio::test]
async fn verification_failure_does_not_affect_later_sessions() {
    let ca = Ca::new("mixed CA");
    let good = EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let bad = EchoTarget::tls(Leaf::self_signed(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(RelaySpec::plain().workers(1).target_ca(&ca.pem)).await;
    for _ in 0..3 {
        expect_first_message_failure(&relay, &bad.url()).await;
        expect_pass(&relay, &good).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(bad.handshake_kinds().is_empty());
}

/// A TCP "target" that accepts, optionally reads what the relay sends (its
/// ClientHello), then closes.
async fn closing_target(read_first: bool) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            if read_first {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            }
            drop(s);
        }
    });
    port
}

async fn target_eof_during_handshake(read_first: bool) {
    let port = closing_target(read_first).await;
    let relay = TlsRelay::start(
        RelaySpec::plain()
            .workers(1)
            .line("insecure_skip_verify = true")
            .line("connect_timeout_secs = 3"),
    )
    .await;
    let url = format!("wss://localhost:{port}/");
    let (io, seen) = tap(tcp(relay.port).await);
    let mut ws = try_upgrade(io, relay.port, &[]).await.expect("upgrade");
    let auth = serde_json::json!({ "token": TOKEN, "target": url }).to_string();
    send(&mut ws, Message::text(auth)).await;
    let answered = tokio::time::timeout(
        Duration::from_secs(5),
        expect_error_close_raw(&mut ws, &seen, "target_handshake_failed", 1014),
    )
    .await;
    let health = tokio::time::timeout(Duration::from_secs(2), async {
        http_get(tcp(relay.port).await, "/health").await
    })
    .await;
    assert!(
        answered.is_ok() && health.as_ref().is_ok_and(|r| r.status == 200),
        "target closing TCP during the TLS handshake (read ClientHello first: {read_first}): \
         relay answered the client within 5 s: {} (connect_timeout_secs = 3); \
         /health on the same (only) shard afterwards: {:?}",
        answered.is_ok(),
        health.map(|r| r.status)
    );
}

#[tokio::test]
async fn target_closing_after_client_hello_fails_fast() {
    target_eof_during_handshake(true).await
}

#[tokio::test]
async fn target_closing_at_once_fails_fast() {
    target_eof_during_handshake(false).await
}
