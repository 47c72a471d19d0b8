//! Every refusal, in both auth modes where it applies: the error code, its
//! Close code (first-message mode: one error text, a Close, TCP close) or its
//! HTTP status with a JSON error body (handshake-time auth). Covers
//! bad_request (and that unsupported schemes open no connection),
//! auth_failed, target_forbidden (private addresses, allow-lists),
//! target_unreachable (refused, connect timeout → 504),
//! target_handshake_failed (non-101, silent target), over_capacity
//! (max_connections, max_sessions), the per-IP auth-failure throttle, and the
//! auth timeout (idle client, slowloris head, partial auth frame).

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

matrix!(auth: auth_failed, target_forbidden_private_addresses, target_forbidden_by_allow_list,
    target_unreachable_closed_port, target_connect_timeout, target_handshake_failed_non_101,
    target_handshake_failed_silent_target, over_capacity_max_connections, over_capacity_max_sessions);

/// A session attempt that must be refused with `code`.
#[allow(clippy::too_many_arguments)]
async fn expect_refused(
    mode: AuthMode,
    port: u16,
    token: &str,
    target: &str,
    code: &str,
    close_code: u16,
    http_status: u16,
    limit: Duration,
) {
    match mode {
        AuthMode::FirstMessage => {
            let mut ws = upgrade(port, "/").await;
            send(&mut ws, Message::text(auth_json(token, target))).await;
            expect_ws_error_within(&mut ws, code, close_code, limit).await;
        }
        AuthMode::Header => {
            let auth = HeaderAuth::new(token, target);
            let res = within(
                limit,
                "header-mode refusal",
                try_connect_header(port, &auth),
            )
            .await;
            match res {
                Ok(_) => panic!("session to {target} accepted; expected HTTP {http_status} {code}"),
                Err(r) => assert_refused(&r, http_status, code),
            }
        }
    }
}

#[tokio::test]
async fn bad_request_first_message() {
    let watched = Sink::silent().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let w = watched.port;
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "hello".into()),
        ("JSON array", "[1,2,3]".into()),
        (
            "missing token",
            serde_json::json!({"target": watched.url("/")}).to_string(),
        ),
        (
            "empty token",
            serde_json::json!({"token": "", "target": watched.url("/")}).to_string(),
        ),
        (
            "missing target",
            serde_json::json!({"token": ALICE_TOKEN}).to_string(),
        ),
        ("empty target", auth_json(ALICE_TOKEN, "")),
        (
            "http:// target",
            auth_json(ALICE_TOKEN, &format!("http://127.0.0.1:{w}/")),
        ),
        ("garbage target", auth_json(ALICE_TOKEN, "garbage")),
        (
            "scheme-less target",
            auth_json(ALICE_TOKEN, &format!("127.0.0.1:{w}/")),
        ),
    ];
    for (what, msg) in cases {
        let mut ws = upgrade(relay.port, "/").await;
        send(&mut ws, Message::text(msg)).await;
        let res =
            tokio::spawn(async move { expect_ws_error(&mut ws, "bad_request", 1008).await }).await;
        if let Err(e) = res {
            panic!("case {what:?}: {}", panic_text(e));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watched.accepts(), 0, "a refused target was connected to");
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn bad_request_header_mode() {
    let watched = Sink::silent().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let w = watched.port;
    for target in [format!("http://127.0.0.1:{w}/"), "garbage".into()] {
        match try_connect_header(relay.port, &HeaderAuth::new(ALICE_TOKEN, &target)).await {
            Ok(_) => panic!("target {target:?} accepted"),
            Err(r) => assert_refused(&r, 400, "bad_request"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watched.accepts(), 0, "a refused target was connected to");
}

async fn auth_failed(v: Variant) {
    let target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let wrong = "wrong-token-SECRET-4711";
    expect_refused(
        v.auth,
        relay.port,
        wrong,
        &target.url("/"),
        "auth_failed",
        1008,
        401,
        STEP,
    )
    .await;
    // A prefix of a real token is not a token.
    expect_refused(
        v.auth,
        relay.port,
        &ALICE_TOKEN[..10],
        &target.url("/"),
        "auth_failed",
        1008,
        401,
        STEP,
    )
    .await;
    assert_eq!(
        target.accepts(),
        0,
        "the relay dialed the target before authenticating"
    );
    let log = relay.log();
    assert!(
        !log.contains(wrong) && !log.contains(&ALICE_TOKEN[..10]),
        "a token was logged:\n{log}"
    );
}

async fn target_forbidden_private_addresses(v: Variant) {
    let watched = Sink::silent().await;
    // A short connect timeout so a wrongly allowed dial fails fast with the
    // wrong code instead of hanging.
    let relay = Relay::start(RelayConfig {
        allow_private_targets: false,
        connect_timeout_secs: 2,
        ..v.config()
    })
    .await;
    let w = watched.port;
    for target in [
        format!("ws://127.0.0.1:{w}/"),
        format!("ws://localhost:{w}/"),
        format!("ws://0.0.0.0:{w}/"),
        format!("ws://127.8.9.10:{w}/"),
        "ws://10.1.2.3/".into(),
        "ws://192.168.1.1:8080/".into(),
        "ws://172.16.0.1/".into(),
        "ws://169.254.1.1/".into(),
    ] {
        let what = format!("target {target}");
        within(
            STEP,
            &what,
            expect_refused(
                v.auth,
                relay.port,
                ALICE_TOKEN,
                &target,
                "target_forbidden",
                1008,
                403,
                STEP,
            ),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watched.accepts(), 0, "a forbidden target was connected to");
}

/// The private-address rule applies to `wss://` targets as well (and is
/// checked before anything about TLS toward the target).
#[tokio::test]
async fn target_forbidden_private_wss() {
    let watched = Sink::silent().await;
    let relay = Relay::start(RelayConfig {
        allow_private_targets: false,
        ..RelayConfig::default()
    })
    .await;
    for mode in [AuthMode::FirstMessage, AuthMode::Header] {
        expect_refused(
            mode,
            relay.port,
            ALICE_TOKEN,
            &format!("wss://127.0.0.1:{}/", watched.port),
            "target_forbidden",
            1008,
            403,
            STEP,
        )
        .await;
    }
    assert_eq!(watched.accepts(), 0);
}

/// IPv6 loopback written as a URL literal is private too.
#[tokio::test]
async fn target_forbidden_ipv6_loopback() {
    let relay = Relay::start(RelayConfig {
        allow_private_targets: false,
        ..RelayConfig::default()
    })
    .await;
    for mode in [AuthMode::FirstMessage, AuthMode::Header] {
        expect_refused(
            mode,
            relay.port,
            ALICE_TOKEN,
            "ws://[::1]:9/",
            "target_forbidden",
            1008,
            403,
            STEP,
        )
        .await;
    }
}

async fn target_forbidden_by_allow_list(v: Variant) {
    let mut target = Target::echo().await;
    let watched = Sink::silent().await;
    let e = target.port;
    let relay = Relay::start(v.config().with_users(vec![
        UserSpec::alice().allowed(&[&format!("ws://127.0.0.1:{e}/allowed*")]),
        UserSpec::bob().allowed(&[&format!("ws://127.0.0.1:{e}/exact")]),
    ]))
    .await;
    let mut ok = connect(
        v.auth,
        relay.port,
        ALICE_TOKEN,
        &target.url("/allowed/deeper?x=1"),
    )
    .await;
    target.connected().await;
    close_and_expect_echo(&mut ok, 1000, "").await;
    let mut ok = connect(v.auth, relay.port, BOB_TOKEN, &target.url("/exact")).await;
    target.connected().await;
    close_and_expect_echo(&mut ok, 1000, "").await;
    let accepted = target.accepts();

    for (token, url) in [
        (ALICE_TOKEN, target.url("/other")),
        (ALICE_TOKEN, watched.url("/allowed")),
        (ALICE_TOKEN, format!("wss://127.0.0.1:{e}/allowed")),
        (BOB_TOKEN, target.url("/exact/more")),
        (BOB_TOKEN, target.url("/allowed")),
    ] {
        expect_refused(
            v.auth,
            relay.port,
            token,
            &url,
            "target_forbidden",
            1008,
            403,
            STEP,
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        target.accepts(),
        accepted,
        "a forbidden target was connected to"
    );
    assert_eq!(watched.accepts(), 0, "a forbidden target was connected to");
}

async fn target_unreachable_closed_port(v: Variant) {
    let relay = Relay::start(v.config()).await;
    let url = format!("ws://127.0.0.1:{}/", closed_port());
    expect_refused(
        v.auth,
        relay.port,
        ALICE_TOKEN,
        &url,
        "target_unreachable",
        1014,
        502,
        STEP,
    )
    .await;
}

/// Connects that never complete (full accept queue) time out after
/// `connect_timeout_secs`: target_unreachable, HTTP 504 in header mode.
async fn target_connect_timeout(v: Variant) {
    let hole = Blackhole::start().await;
    let relay = Relay::start(RelayConfig {
        connect_timeout_secs: 1,
        ..v.config()
    })
    .await;
    let start = Instant::now();
    expect_refused(
        v.auth,
        relay.port,
        ALICE_TOKEN,
        &hole.url("/"),
        "target_unreachable",
        1014,
        504,
        Duration::from_secs(8),
    )
    .await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800),
        "refused after {took:?}, before the 1 s connect timeout"
    );
}

async fn target_handshake_failed_non_101(v: Variant) {
    let target = Sink::status(404).await;
    let relay = Relay::start(v.config()).await;
    expect_refused(
        v.auth,
        relay.port,
        ALICE_TOKEN,
        &target.url("/"),
        "target_handshake_failed",
        1014,
        502,
        STEP,
    )
    .await;
    assert_eq!(target.accepts(), 1);
}

/// A target that accepts TCP but never answers the upgrade.
async fn target_handshake_failed_silent_target(v: Variant) {
    let target = Sink::silent().await;
    let relay = Relay::start(RelayConfig {
        connect_timeout_secs: 2,
        ..v.config()
    })
    .await;
    expect_refused(
        v.auth,
        relay.port,
        ALICE_TOKEN,
        &target.url("/"),
        "target_handshake_failed",
        1014,
        502,
        Duration::from_secs(20),
    )
    .await;
}

/// A first-message session, retried while the relay still counts a
/// connection that just closed.
async fn session_retrying(port: u16, token: &str, target: &str) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = upgrade(port, "/").await;
        send(&mut ws, Message::text(auth_json(token, target))).await;
        match next_msg(&mut ws, STEP).await {
            Message::Text(t) if t.as_str() == CONNECTED => return ws,
            Message::Text(t) if t.contains("over_capacity") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("expected {CONNECTED}, got {}", describe(&other)),
        }
    }
}

async fn over_capacity_max_connections(v: Variant) {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        max_connections: 1,
        ..v.config()
    })
    .await;
    let mut first = session_retrying(relay.port, ALICE_TOKEN, &target.url("/")).await;
    // Several attempts: the kernel spreads them over both shards, and the
    // limit is for the whole process.
    for _ in 0..4 {
        expect_refused(
            v.auth,
            relay.port,
            ALICE_TOKEN,
            &target.url("/"),
            "over_capacity",
            1013,
            503,
            STEP,
        )
        .await;
    }
    // The first session is unaffected, and its slot frees when it ends.
    send(&mut first, Message::text("still here")).await;
    expect_text(&mut first, "still here").await;
    close_and_expect_echo(&mut first, 1000, "").await;
    let mut again = session_retrying(relay.port, ALICE_TOKEN, &target.url("/")).await;
    close_and_expect_echo(&mut again, 1000, "").await;
}

async fn over_capacity_max_sessions(v: Variant) {
    let target = Target::echo().await;
    let relay = Relay::start(
        v.config()
            .with_users(vec![UserSpec::alice().max_sessions(1), UserSpec::bob()]),
    )
    .await;
    let mut first = connect(
        AuthMode::FirstMessage,
        relay.port,
        ALICE_TOKEN,
        &target.url("/"),
    )
    .await;
    for _ in 0..4 {
        expect_refused(
            v.auth,
            relay.port,
            ALICE_TOKEN,
            &target.url("/"),
            "over_capacity",
            1013,
            503,
            STEP,
        )
        .await;
    }
    // Another user is not limited by alice's sessions.
    let mut bob = connect(v.auth, relay.port, BOB_TOKEN, &target.url("/")).await;
    let mut bob2 = connect(v.auth, relay.port, BOB_TOKEN, &target.url("/")).await;
    close_and_expect_echo(&mut bob, 1000, "").await;
    close_and_expect_echo(&mut bob2, 1000, "").await;
    close_and_expect_echo(&mut first, 1000, "").await;
    let mut again = session_retrying(relay.port, ALICE_TOKEN, &target.url("/")).await;
    close_and_expect_echo(&mut again, 1000, "").await;
}

/// After `auth_fail_limit_per_min` failures from 127.0.0.1 the next attempt
/// is refused with 429 `auth_throttled`, even with a valid token.
#[tokio::test]
async fn auth_throttled_after_limit() {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        auth_fail_limit_per_min: 3,
        ..RelayConfig::default()
    })
    .await;
    for i in 0..3 {
        let mode = if i % 2 == 0 {
            AuthMode::FirstMessage
        } else {
            AuthMode::Header
        };
        expect_refused(
            mode,
            relay.port,
            &format!("bad-token-{i}"),
            &target.url("/"),
            "auth_failed",
            1008,
            401,
            STEP,
        )
        .await;
    }
    // Several attempts each, so both shards are asked: the limit is per IP.
    for _ in 0..3 {
        match try_connect_header(relay.port, &HeaderAuth::new(ALICE_TOKEN, &target.url("/"))).await
        {
            Ok(_) => panic!("header-mode session accepted after 3 auth failures (limit 3/min)"),
            Err(r) => assert_refused(&r, 429, "auth_throttled"),
        }
        let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            relay.url("/"),
        )
        .unwrap();
        match try_upgrade(relay.port, req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(
                    resp.status().as_u16(),
                    429,
                    "first-message upgrade while throttled"
                )
            }
            Err(e) => panic!("first-message upgrade while throttled: expected HTTP 429, got {e}"),
            Ok(_) => panic!("first-message upgrade accepted while throttled"),
        }
    }
    assert_eq!(target.accepts(), 0);
}

#[tokio::test]
async fn auth_timeout_idle_client() {
    let relay = Relay::start(RelayConfig {
        auth_timeout_secs: 1,
        ..RelayConfig::default()
    })
    .await;
    let start = Instant::now();
    let mut ws = upgrade(relay.port, "/").await;
    expect_ws_error_within(&mut ws, "auth_timeout", 1008, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took <= Duration::from_secs(3),
        "auth_timeout after {took:?} with auth_timeout_secs = 1"
    );
}

/// The auth timeout ends with auth: an established session idle for longer
/// than `auth_timeout_secs` is untouched.
#[tokio::test]
async fn auth_timeout_does_not_apply_after_auth() {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        auth_timeout_secs: 1,
        ..RelayConfig::default()
    })
    .await;
    let mut fm = connect(
        AuthMode::FirstMessage,
        relay.port,
        ALICE_TOKEN,
        &target.url("/"),
    )
    .await;
    let mut hd = connect(AuthMode::Header, relay.port, ALICE_TOKEN, &target.url("/")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for ws in [&mut fm, &mut hd] {
        send(ws, Message::text("after 2.5 s")).await;
        expect_text(ws, "after 2.5 s").await;
        close_and_expect_echo(ws, 1000, "").await;
    }
}

/// A client that sends part of a request head and stalls, or dribbles one
/// byte at a time, is cut off ~auth_timeout after accept.
#[tokio::test]
async fn auth_timeout_slowloris_head() {
    let relay = Relay::start(RelayConfig {
        auth_timeout_secs: 1,
        ..RelayConfig::default()
    })
    .await;
    // Stalled.
    let start = Instant::now();
    let mut tcp = TcpStream::connect(relay.addr()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    assert!(
        common::http::closed_within(&mut tcp, Duration::from_secs(4)).await,
        "stalled head not cut off within 4 s"
    );
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "stalled head cut off only after {took:?} (auth_timeout_secs = 1)"
    );

    // Dribbling: a byte every 150 ms must not extend the deadline.
    let start = Instant::now();
    let tcp = TcpStream::connect(relay.addr()).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let dribble = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let closed = within(Duration::from_secs(5), "dribbled head", async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    dribble.abort();
    assert!(closed);
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "dribbled head cut off only after {took:?} (auth_timeout_secs = 1)"
    );
}

/// Upgraded, then half an auth frame and silence: the auth timeout still fires.
#[tokio::test]
async fn auth_timeout_partial_auth_frame() {
    let relay = Relay::start(RelayConfig {
        auth_timeout_secs: 1,
        ..RelayConfig::default()
    })
    .await;
    let start = Instant::now();
    let mut ws = upgrade(relay.port, "/").await;
    let frame = client_frame(
        OP_TEXT,
        auth_json(ALICE_TOKEN, "ws://127.0.0.1:9/").as_bytes(),
    );
    ws.get_mut()
        .write_all(&frame[..frame.len() / 2])
        .await
        .unwrap();
    loop {
        match try_next(&mut ws, Duration::from_secs(4)).await {
            Next::Msg(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).expect("error JSON");
                assert_error_json(&v, "auth_timeout");
            }
            Next::Msg(Message::Close(_)) => assert_eq!(raw_close(&ws).code, Some(1008)),
            Next::Msg(other) => panic!("unexpected {}", describe(&other)),
            Next::End(_) => break,
            Next::Timeout => panic!(
                "partial auth frame: connection still open after {:?}",
                start.elapsed()
            ),
        }
    }
    let took = start.elapsed();
    assert!(
        took <= Duration::from_secs(3),
        "cut off only after {took:?}"
    );
}

/// An auth message over the 64 KiB limit is refused without dialing.
#[tokio::test]
async fn oversized_auth_message_refused() {
    let watched = Sink::silent().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let mut ws = upgrade(relay.port, "/").await;
    let msg = serde_json::json!({"token": ALICE_TOKEN, "target": watched.url("/"), "pad": "p".repeat(100 * 1024)});
    // The relay may close while we are still writing; that is fine.
    let _ = tokio::time::timeout(
        STEP,
        futures_util::SinkExt::send(&mut ws, Message::text(msg.to_string())),
    )
    .await;
    let mut saw_close = false;
    loop {
        match try_next(&mut ws, Duration::from_secs(5)).await {
            Next::Msg(Message::Text(t)) => {
                assert_ne!(t.as_str(), CONNECTED, "oversized auth message accepted");
                let v: serde_json::Value = serde_json::from_str(&t).expect("error JSON");
                assert_eq!(v["status"], "error", "{v}");
            }
            Next::Msg(Message::Close(_)) => {
                saw_close = true;
                let code = raw_close(&ws).code.unwrap_or(0);
                assert!(
                    code == 1008 || code == 1009,
                    "close code {code} for an oversized auth message"
                );
            }
            Next::Msg(other) => panic!("unexpected {}", describe(&other)),
            Next::End(_) => break,
            Next::Timeout => panic!("oversized auth message: connection not closed within 5 s"),
        }
    }
    let _ = saw_close;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(watched.accepts(), 0);
}
