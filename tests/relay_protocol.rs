//! Relay protocol details beyond moving bytes: the exact `已连接` status, extra
//! auth fields ignored, target path and query forwarded, handshake-time auth
//! through headers and through the query string, `Sec-WebSocket-Protocol`
//! negotiated with the target, no extension negotiated on either side, and a
//! non-default `relay_path`.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;

/// The status is exactly `{"status":"已连接"}`, then passthrough.
#[tokio::test]
async fn first_message_status_is_exact_and_extra_fields_ignored() {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let mut ws = upgrade(relay.port, "/").await;
    let auth = serde_json::json!({
        "token": ALICE_TOKEN,
        "target": target.url("/x"),
        "client": "test-suite",
        "version": 2,
        "nested": {"a": [1, 2, 3]}
    });
    send(&mut ws, Message::text(auth.to_string())).await;
    match next_msg(&mut ws, STEP).await {
        Message::Text(t) => assert_eq!(
            t.as_bytes(),
            CONNECTED.as_bytes(),
            "status text, byte-exact"
        ),
        other => panic!("expected the status text, got {}", describe(&other)),
    }
    target.connected().await;
    send(&mut ws, Message::text("ping")).await;
    expect_text(&mut ws, "ping").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// The auth message is one text *message*: fragmented into three frames it
/// is still accepted, and data right behind it is relayed.
#[tokio::test]
async fn fragmented_auth_message() {
    use tokio::io::AsyncWriteExt;
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let auth = auth_json(ALICE_TOKEN, &target.url("/"));
    let b = auth.as_bytes();
    let mut raw = encode_frame(false, OP_TEXT, &b[..5], Some(MASK));
    raw.extend(encode_frame(false, OP_CONT, &b[5..20], Some(MASK)));
    raw.extend(encode_frame(true, OP_CONT, &b[20..], Some(MASK)));
    raw.extend(client_frame(OP_TEXT, b"right behind"));
    let mut ws = upgrade(relay.port, "/").await;
    within(STEP, "raw write", ws.get_mut().write_all(&raw))
        .await
        .unwrap();
    expect_text(&mut ws, CONNECTED).await;
    expect_text(&mut ws, "right behind").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// The target's request line carries the path and query of the target URL.
#[tokio::test]
async fn target_path_and_query_are_forwarded() {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    for mode in [AuthMode::FirstMessage, AuthMode::Header] {
        let path = "/a/b/c?x=1&y=%20z&empty=";
        let mut ws = connect(mode, relay.port, ALICE_TOKEN, &target.url(path)).await;
        let (_, head) = target.connected().await;
        assert_eq!(
            head_path(&head),
            path,
            "{mode:?}: target request head {head:?}"
        );
        let host = head_header(&head, "host").unwrap_or_default();
        assert_eq!(
            host,
            format!("127.0.0.1:{}", target.port),
            "{mode:?}: Host header sent to the target"
        );
        close_and_expect_echo(&mut ws, 1000, "").await;
    }
}

/// Header mode: no status message — the first frame the client sees is the
/// target's.
#[tokio::test]
async fn header_mode_sends_no_status() {
    let target = Target::start(TargetOpts {
        greeting: vec![Greeting::Text("target-first".into())],
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig::default()).await;
    let (mut ws, resp) =
        try_connect_header(relay.port, &HeaderAuth::new(ALICE_TOKEN, &target.url("/")))
            .await
            .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    assert_eq!(resp.status().as_u16(), 101);
    expect_text(&mut ws, "target-first").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// `?token=` and `?target=` (URL-encoded) instead of headers.
#[tokio::test]
async fn header_mode_via_query_string() {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let auth = HeaderAuth {
        query: true,
        ..HeaderAuth::new(ALICE_TOKEN, &target.url("/q?k=v&k2=v2"))
    };
    let (mut ws, _) = try_connect_header(relay.port, &auth)
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    let (_, head) = target.connected().await;
    assert_eq!(head_path(&head), "/q?k=v&k2=v2");
    send(&mut ws, Message::text("via query")).await;
    expect_text(&mut ws, "via query").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
    assert!(
        !relay.log().contains(ALICE_TOKEN),
        "the token from the query string was logged"
    );
}

/// The client's offer reaches the target; the target's choice reaches the client.
#[tokio::test]
async fn header_mode_negotiates_subprotocol_with_target() {
    let mut target = Target::start(TargetOpts {
        subprotocol: Some("chat.v2".into()),
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig::default()).await;
    let auth = HeaderAuth {
        protocols: Some("chat.v1, chat.v2".into()),
        ..HeaderAuth::new(ALICE_TOKEN, &target.url("/chat"))
    };
    let (mut ws, resp) = try_connect_header(relay.port, &auth)
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(
        chosen.as_deref(),
        Some("chat.v2"),
        "protocol returned to the client"
    );
    let (_, head) = target.connected().await;
    let offer = head_header(&head, "sec-websocket-protocol").unwrap_or_default();
    let offered: Vec<&str> = offer.split(',').map(str::trim).collect();
    assert_eq!(
        offered,
        ["chat.v1", "chat.v2"],
        "offer forwarded to the target: {head:?}"
    );
    send(&mut ws, Message::text("v2")).await;
    expect_text(&mut ws, "v2").await;
    close_and_expect_echo(&mut ws, 1000, "").await;

    // Without an offer, neither side sees a protocol header.
    let (mut ws, resp) = try_connect_header(
        relay.port,
        &HeaderAuth::new(ALICE_TOKEN, &target.url("/chat")),
    )
    .await
    .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    let (_, head) = target.connected().await;
    assert_eq!(
        head_header(&head, "sec-websocket-protocol"),
        None,
        "{head:?}"
    );
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// docs/architecture.md "Architecture": the relay negotiates no extension on either side (frames are
/// passed through unchanged), so a client's permessage-deflate offer is
/// neither accepted nor forwarded.
#[tokio::test]
async fn no_extension_is_negotiated() {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let ext = (
        "Sec-WebSocket-Extensions".to_string(),
        "permessage-deflate; client_max_window_bits".to_string(),
    );
    let auth = HeaderAuth {
        extra: vec![ext.clone()],
        ..HeaderAuth::new(ALICE_TOKEN, &target.url("/"))
    };
    let (mut ws, resp) = try_connect_header(relay.port, &auth)
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    assert!(
        resp.headers().get("sec-websocket-extensions").is_none(),
        "relay accepted an extension"
    );
    let (_, head) = target.connected().await;
    assert_eq!(
        head_header(&head, "sec-websocket-extensions"),
        None,
        "extension offer forwarded: {head:?}"
    );
    close_and_expect_echo(&mut ws, 1000, "").await;

    // First-message mode: the upgrade answer carries no extension either.
    let auth = HeaderAuth {
        extra: vec![ext],
        ..HeaderAuth::default()
    };
    let (mut ws, resp) = try_upgrade(relay.port, auth.request(relay.port))
        .await
        .expect("plain upgrade");
    assert!(
        resp.headers().get("sec-websocket-extensions").is_none(),
        "relay accepted an extension"
    );
    send(
        &mut ws,
        Message::text(auth_json(ALICE_TOKEN, &target.url("/"))),
    )
    .await;
    expect_text(&mut ws, CONNECTED).await;
    let (_, head) = target.connected().await;
    assert_eq!(
        head_header(&head, "sec-websocket-extensions"),
        None,
        "{head:?}"
    );
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// `relay_path = "/relay"`: upgrades there work in both modes; `/` is not
/// the relay any more.
#[tokio::test]
async fn custom_relay_path() {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        relay_path: Some("/relay".into()),
        ..RelayConfig::default()
    })
    .await;
    let mut ws = upgrade(relay.port, "/relay").await;
    send(
        &mut ws,
        Message::text(auth_json(ALICE_TOKEN, &target.url("/"))),
    )
    .await;
    expect_text(&mut ws, CONNECTED).await;
    close_and_expect_echo(&mut ws, 1000, "").await;

    let auth = HeaderAuth {
        path: Some("/relay".into()),
        ..HeaderAuth::new(ALICE_TOKEN, &target.url("/"))
    };
    let (mut ws, _) = try_connect_header(relay.port, &auth)
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    close_and_expect_echo(&mut ws, 1000, "").await;

    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        relay.url("/other"),
    )
    .unwrap();
    match try_upgrade(relay.port, req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404, "upgrade on an unknown path")
        }
        Err(e) => panic!("upgrade on an unknown path: expected HTTP 404, got {e}"),
        Ok(_) => panic!("upgrade on an unknown path succeeded"),
    }
}
