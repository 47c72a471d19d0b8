//! Push hub clients over the wire: both ways to give a token, identify
//! moving a connection, many connections per token across 2 shards,
//! broadcast to token-less clients, client messages answered on that
//! connection only, ping/pong and close.

mod common;

use std::time::Duration;

use common::hub::*;
use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn query_token_and_identify_both_group_a_connection() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut by_query = hub_client(relay.port, Some("USER_123")).await;
    let mut by_identify = hub_client(relay.port, None).await;
    identify(&mut by_identify, json!("USER_123")).await;
    let mut other = hub_client(relay.port, Some("someone-else")).await;
    let subject = json!({"text": "hello"});
    let r = push_once(
        relay.port,
        &json!({"event_name": "userMessage", "subject": subject, "token": "USER_123"}),
    )
    .await;
    assert_delivered(&r, 2);
    for ws in [&mut by_query, &mut by_identify] {
        let m = next_json(ws).await;
        assert_push(&m, "userMessage", &subject, &json!("USER_123"));
    }
    expect_silence(&mut other, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn identify_moves_the_connection_to_the_new_group() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = hub_client(relay.port, Some("old")).await;
    identify(&mut ws, json!("new")).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "old"}),
    )
    .await;
    assert_delivered(&r, 0);
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 2, "token": "new"}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_eq!(next_json(&mut ws).await["data"]["subject"], 2);
    // Identify with a number: the same token rules as pushes.
    identify(&mut ws, json!(77)).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 3, "token": 77}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_eq!(next_json(&mut ws).await["data"]["subject"], 3);
    // Identify with null: back to broadcasts only.
    identify(&mut ws, json!(null)).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 4, "token": 77}),
    )
    .await;
    assert_delivered(&r, 0);
}

#[tokio::test]
async fn many_connections_per_token_across_two_shards() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(hub_client(relay.port, Some("multi")).await);
    }
    let r = push_once(
        relay.port,
        &json!({"event_name": "fan", "subject": "x", "token": "multi"}),
    )
    .await;
    assert_delivered(&r, 16);
    for ws in &mut clients {
        let m = next_json(ws).await;
        assert_push(&m, "fan", &json!("x"), &json!("multi"));
        expect_silence(ws, Duration::from_millis(20)).await;
    }
    for ws in clients {
        close(ws).await;
    }
    let log = relay
        .wait_for_log("16 hub client ends", STEP, |l| {
            l.matches("hub client end").count() >= 16
        })
        .await;
    let on = |s: &str| {
        log.lines()
            .any(|l| l.contains("hub client end") && l.contains(s))
    };
    assert!(
        on("shard=0") && on("shard=1"),
        "clients landed on one shard only:\n{log}"
    );
}

#[tokio::test]
async fn broadcast_reaches_everyone_token_or_not() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut anon = hub_client(relay.port, None).await;
    let mut named = hub_client(relay.port, Some("u1")).await;
    let subject = json!({"text": "hello everyone"});
    let r = push_once(
        relay.port,
        &json!({"event_name": "broadcast", "subject": subject, "delay_seconds": 0}),
    )
    .await;
    assert_delivered(&r, 2);
    for ws in [&mut anon, &mut named] {
        assert_push(&next_json(ws).await, "broadcast", &subject, &json!(null));
    }
    // A user push does not reach the token-less client.
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "u1"}),
    )
    .await;
    assert_delivered(&r, 1);
    expect_silence(&mut anon, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn client_messages_are_answered_with_an_error_and_hurt_nobody() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut noisy = hub_client(relay.port, Some("u")).await;
    let mut calm = hub_client(relay.port, Some("u")).await;
    for bad in [
        Message::text("not json"),
        Message::text(r#"{"event":"push","data":{"token":"x"}}"#),
        Message::text(r#"{"event":"identify"}"#),
        Message::binary(vec![1, 2, 3]),
    ] {
        send(&mut noisy, bad).await;
        let m = next_json(&mut noisy).await;
        assert_eq!(m["event"], "error", "{m}");
        assert!(
            m["data"]["msg"].as_str().is_some_and(|s| !s.is_empty()),
            "{m}"
        );
    }
    // Still grouped, still open; the other client saw nothing.
    expect_silence(&mut calm, Duration::from_millis(200)).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "u"}),
    )
    .await;
    assert_delivered(&r, 2);
    next_json(&mut noisy).await;
    next_json(&mut calm).await;
    // An oversized message closes that client with 1009, nobody else.
    send(&mut noisy, Message::text("x".repeat(5000))).await;
    expect_close(&mut noisy, 1009, STEP).await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 2, "token": "u"}),
    )
    .await;
    assert_delivered(&r, 1);
    next_json(&mut calm).await;
}

#[tokio::test]
async fn ping_pong_and_close_work_as_for_any_websocket() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = hub_client(relay.port, Some("p")).await;
    send(&mut ws, Message::Ping(b"abc".to_vec().into())).await;
    match next_msg(&mut ws, STEP).await {
        Message::Pong(p) => assert_eq!(p.as_ref(), b"abc"),
        other => panic!("expected pong, got {other:?}"),
    }
    close_and_expect_echo(&mut ws, 4000, "bye").await;
    relay
        .wait_for_log("client end", STEP, |l| l.contains("hub client end"))
        .await;
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "p"}),
    )
    .await;
    assert_delivered(&r, 0);
}

#[tokio::test]
async fn ws_path_refusals_and_health() {
    let relay = Relay::start(hub_config(&[
        r#"allowed_origins = ["https://app.example"]"#,
    ]))
    .await;
    let r = http::get(relay.port, "/ws").await.unwrap();
    assert_eq!(r.status, 426);
    let r = http::get(relay.port, "/health").await.unwrap();
    assert_eq!(
        (r.status, r.body_str()),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let upgrade_with = |origin: &str| {
        format!("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
    };
    let (r, _) = http::request(relay.port, upgrade_with("https://evil.example").as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    let (r, _) = http::request(relay.port, upgrade_with("https://app.example").as_bytes())
        .await
        .unwrap();
    assert_eq!(r.status, 101);
}

/// A hub client session is an RFC 6455 endpoint (docs/hub.md): text that is
/// not UTF-8 (the bad byte in a later fragment) is answered with Close
/// 1007, a Close with a code no peer may send with 1002.
#[tokio::test]
async fn invalid_text_and_reserved_close_codes_get_their_close_codes() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = hub_client(relay.port, Some("p")).await;
    let mut bytes = encode_frame(false, OP_TEXT, b"{\"x\":\"\xf4", Some(MASK));
    bytes.extend(encode_frame(true, OP_CONT, b"\x90\x80\x80\"}", Some(MASK)));
    send_raw(&mut ws, &bytes).await;
    expect_close(&mut ws, 1007, STEP).await;
    let mut ws = hub_client(relay.port, Some("p")).await;
    send_raw(&mut ws, &client_frame(OP_CLOSE, &1005u16.to_be_bytes())).await;
    expect_close(&mut ws, 1002, STEP).await;
    // A codepoint split across fragments is fine: the message is read (and
    // answered, as any message that is not an identify), the session lives.
    let mut ws = hub_client(relay.port, Some("p")).await;
    let mut bytes = encode_frame(false, OP_TEXT, b"{\"x\":\"\xce", Some(MASK));
    bytes.extend(encode_frame(true, OP_CONT, b"\xba\"}", Some(MASK)));
    send_raw(&mut ws, &bytes).await;
    assert_eq!(next_json(&mut ws).await["event"], "error");
    close_and_expect_echo(&mut ws, 4000, "bye").await;
}

/// A client that sends faster than it reads is slowed, not closed: the
/// answers to its own messages never overflow its queue (here 4 frames);
/// its connection stops reading while the queue is full. Every answer
/// arrives, in order, and the client stays grouped.
#[tokio::test]
async fn a_client_that_sends_without_reading_is_slowed_not_closed() {
    const N: usize = 20_000;
    let relay = Relay::start(hub_config(&["max_queue_messages = 4"])).await;
    let frames: Vec<u8> = (0..N)
        .flat_map(|i| client_frame(OP_TEXT, format!("not json {i}").as_bytes()))
        .collect();
    let port = relay.port;
    let flood = flood_then_read(port, "/ws?token=f", frames, Duration::from_millis(500), N);
    let seen = flood.await;
    assert_eq!(
        seen.close,
        None,
        "closed after {} answers",
        seen.texts.len()
    );
    assert_eq!(seen.texts.len(), N);
    assert!(seen.texts.iter().all(|t| t.contains("\"error\"")));
    let r = push_once(
        port,
        &json!({"event_name": "e", "subject": 1, "token": "f"}),
    )
    .await;
    assert_delivered(&r, 1);
}
