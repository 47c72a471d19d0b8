//! The demo app over the wire (docs/demo.md "Demo app protocol", the Axum seed's protocol): the
//! seed's client messages get the seed's answers byte for byte; broadcast
//! reaches every demo connection on both shards; `get_connections` counts
//! process-wide; every bad input gets an error that keeps the `id` and no
//! disconnect; ping/close behave; a slow receiver is closed with 1013 while
//! a fast one gets every broadcast; and the app is off unless enabled.

mod common;

use std::time::Duration;

use common::http::get;
use common::prom::{python_or_skip, scrape};
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, connect_async, MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn demo_config(queue: usize) -> RelayConfig {
    RelayConfig {
        extra_toml: vec![format!(
            "[demo]\nenabled = true\npath = \"/demo\"\nmax_queue_messages = {queue}\n"
        )],
        ..RelayConfig::default()
    }
}

async fn open(relay: &Relay) -> (Client, String) {
    let (mut ws, _) = within(STEP, "demo upgrade", connect_async(relay.url("/demo")))
        .await
        .expect("demo upgrade");
    let hello = next_text(&mut ws).await;
    let v: Value = serde_json::from_str(&hello).unwrap();
    assert_eq!(v["type"], "notification", "{hello}");
    assert_eq!(v["data"]["event"], "connected", "{hello}");
    let id = v["data"]["connection_id"].as_str().unwrap().to_string();
    (ws, id)
}

async fn next_text(ws: &mut Client) -> String {
    loop {
        let msg = within(STEP, "demo message", ws.next())
            .await
            .expect("stream ended")
            .expect("read");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn ask(ws: &mut Client, text: &str) -> String {
    within(STEP, "send", ws.send(Message::text(text)))
        .await
        .unwrap();
    next_text(ws).await
}

fn is_uuid_v4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    lens == [8, 4, 4, 4, 12]
        && s.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[2].starts_with('4')
        && parts[3].starts_with(['8', '9', 'a', 'b'])
}

#[tokio::test]
async fn seed_messages_get_seed_answers() {
    let relay = Relay::start(demo_config(256)).await;
    let (mut ws, id) = open(&relay).await;
    assert!(is_uuid_v4(&id), "connection_id {id} is not a UUID v4");
    let (_other, other_id) = open(&relay).await;
    assert_ne!(id, other_id);
    // The seed README's three requests, as written there.
    let echo = r#"{
  "id": "1",
  "type": "request",
  "action": "echo",
  "payload": {
    "message": "test"
  }
}"#;
    assert_eq!(
        ask(&mut ws, echo).await,
        r#"{"id":"1","type":"response","data":{"echo":"test"}}"#
    );
    let seed_echo =
        r#"{"id":"msg-123","type":"request","action":"echo","payload":{"message":"Hello"}}"#;
    assert_eq!(
        ask(&mut ws, seed_echo).await,
        r#"{"id":"msg-123","type":"response","data":{"echo":"Hello"}}"#
    );
    let count = r#"{"id":"3","type":"request","action":"get_connections","payload":{}}"#;
    assert_eq!(
        ask(&mut ws, count).await,
        r#"{"id":"3","type":"response","data":{"connections":2}}"#
    );
    let bc = r#"{"id":"2","type":"request","action":"broadcast","payload":{"message":"Hello everyone!"}}"#;
    assert_eq!(
        ask(&mut ws, bc).await,
        r#"{"id":"2","type":"response","data":{"broadcast":true,"recipients":2}}"#
    );
    let note = format!(
        r#"{{"type":"notification","data":{{"event":"broadcast","from":"{id}","message":"Hello everyone!"}}}}"#
    );
    assert_eq!(next_text(&mut ws).await, note);
}

/// Opens demo connections until both shards hold some (per `/metrics`).
async fn open_on_both_shards(relay: &Relay, py: &std::path::PathBuf) -> Vec<(Client, String)> {
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(open(relay).await);
        if conns.len() < 4 {
            continue;
        }
        let s = scrape(py, relay.port).await;
        let on = |shard| {
            s.sum(
                "ws_relay_sessions_open",
                &[("kind", "demo"), ("shard", shard)],
            )
        };
        if on("0") > 0.0 && on("1") > 0.0 {
            assert_eq!(on("0") + on("1"), conns.len() as f64);
            return conns;
        }
    }
    panic!("40 demo connections all landed on one shard");
}

#[tokio::test]
async fn broadcast_reaches_every_connection_on_every_shard() {
    let Some(py) = python_or_skip("broadcast_reaches_every_connection_on_every_shard") else {
        return;
    };
    let relay = Relay::start(demo_config(256)).await;
    let mut conns = open_on_both_shards(&relay, &py).await;
    let n = conns.len();
    let from = conns[0].1.clone();
    let count = ask(
        &mut conns[n - 1].0,
        r#"{"id":7,"type":"request","action":"get_connections"}"#,
    )
    .await;
    assert_eq!(
        count,
        format!(r#"{{"id":7,"type":"response","data":{{"connections":{n}}}}}"#)
    );
    for round in 0..3 {
        let req = json!({"id": format!("b{round}"), "type": "request", "action": "broadcast",
                         "payload": {"message": {"round": round, "text": "to all"}}});
        let reply = ask(&mut conns[0].0, &req.to_string()).await;
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["id"], format!("b{round}"));
        assert_eq!(v["data"]["recipients"], n);
        let want = json!({"type": "notification",
            "data": {"event": "broadcast", "from": from, "message": {"round": round, "text": "to all"}}});
        for (i, (ws, _)) in conns.iter_mut().enumerate() {
            let got: Value = serde_json::from_str(&next_text(ws).await).unwrap();
            assert_eq!(got, want, "connection {i}, round {round}");
        }
    }
    // Closing some changes the process-wide count.
    for (mut ws, _) in conns.drain(..2) {
        ws.close(None).await.unwrap();
    }
    let want = format!(
        r#"{{"id":"c","type":"response","data":{{"connections":{}}}}}"#,
        n - 2
    );
    let mut last = String::new();
    for _ in 0..50 {
        last = ask(
            &mut conns[0].0,
            r#"{"id":"c","type":"request","action":"get_connections"}"#,
        )
        .await;
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("count after closing two: {last}, want {want}");
}

#[tokio::test]
async fn bad_input_gets_errors_that_keep_the_id_and_no_disconnect() {
    let relay = Relay::start(demo_config(256)).await;
    let (mut ws, _) = open(&relay).await;
    let (mut bystander, _) = open(&relay).await;
    let big = "x".repeat(70 * 1024);
    let cases: Vec<(Message, Value, &str)> = vec![
        (Message::text("not json"), Value::Null, "invalid_json"),
        (Message::text("[1,2,3]"), Value::Null, "invalid_json"),
        (
            Message::text(r#"{"id":"u1","type":"request","action":"fly"}"#),
            json!("u1"),
            "unknown_action",
        ),
        (
            Message::text(r#"{"id":"u2","type":"request","action":"echo","payload":{}}"#),
            json!("u2"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":42,"type":"reply","action":"echo"}"#),
            json!(42),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"u3","type":"request","action":"echo","payload":"x"}"#),
            json!("u3"),
            "bad_request",
        ),
        (
            Message::text(r#"{"id":"u4","type":"request"}"#),
            json!("u4"),
            "bad_request",
        ),
        (
            Message::binary(vec![1u8, 2, 3]),
            Value::Null,
            "binary_not_supported",
        ),
        (Message::text(big), Value::Null, "message_too_large"),
    ];
    for (msg, id, code) in cases {
        within(STEP, "send", ws.send(msg.clone())).await.unwrap();
        let text = next_text(&mut ws).await;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error", "{text}");
        assert_eq!(v["id"], id, "{text}");
        assert_eq!(v["data"]["code"], code, "{text}");
        assert!(
            v["data"]["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        // Still serving this connection and the other one.
        let echo =
            r#"{"id":"ok","type":"request","action":"echo","payload":{"message":"still here"}}"#;
        assert_eq!(
            ask(&mut ws, echo).await,
            r#"{"id":"ok","type":"response","data":{"echo":"still here"}}"#
        );
    }
    let echo = r#"{"id":"b","type":"request","action":"echo","payload":{"message":1}}"#;
    assert_eq!(
        ask(&mut bystander, echo).await,
        r#"{"id":"b","type":"response","data":{"echo":1}}"#
    );
    // Ping is answered; a Close is echoed with its code.
    ws.send(Message::Ping(b"hi".to_vec().into())).await.unwrap();
    let pong = within(STEP, "pong", ws.next()).await.unwrap().unwrap();
    assert_eq!(pong, Message::Pong(b"hi".to_vec().into()));
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "".into(),
    })))
    .await
    .unwrap();
    let close = within(STEP, "close echo", ws.next())
        .await
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(f)) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected Close, got {other:?}"),
    }
    relay
        .wait_for_log("the close line", STEP, |l| {
            l.contains("demo connection closed")
        })
        .await;
}

/// Opens a demo client with a tiny receive buffer, so its socket fills fast.
async fn small_buffer_client(relay: &Relay) -> Client {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(relay.addr()).await.unwrap();
    let (mut ws, _) = client_async(relay.url("/demo"), MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let _ = next_text(&mut ws).await;
    ws
}

/// Broadcasts pour in: a client that stops reading is closed with 1013 once
/// its queue is full (and sees the Close when it reads again); one that
/// never reads is dropped after the grace; a fast client gets every
/// broadcast, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_receiver_is_closed_with_1013_fast_one_gets_everything() {
    const ROUNDS: usize = 400;
    let relay = Relay::start(demo_config(64)).await;
    let mut slow = small_buffer_client(&relay).await;
    let _dead = small_buffer_client(&relay).await;
    let (mut fast, _) = open(&relay).await;
    let (mut sender, _) = open(&relay).await;
    let payload = "p".repeat(32 * 1024);
    let fast_reader = tokio::spawn(async move {
        let mut rounds = Vec::new();
        while rounds.len() < ROUNDS {
            let v: Value = serde_json::from_str(&next_text(&mut fast).await).unwrap();
            rounds.push(v["data"]["message"]["round"].as_u64().unwrap() as usize);
        }
        rounds
    });
    // Reads nothing until both small-buffer clients were found too slow,
    // then everything: what was queued, then the Close.
    let log_path = relay.log_path.clone();
    let slow_reader = tokio::spawn(async move {
        let overflowed = || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            log.matches("too slow").count() >= 2
        };
        while !overflowed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut seen = 0;
        loop {
            match within(Duration::from_secs(30), "slow client", slow.next()).await {
                Some(Ok(Message::Text(_))) => seen += 1,
                Some(Ok(Message::Close(Some(f)))) => return (seen, u16::from(f.code)),
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(e)) => panic!("slow client error after {seen} messages: {e}"),
                None => panic!("slow client ended without a Close after {seen} messages"),
            }
        }
    });
    // Closed loop: each broadcast's response and notification come back
    // before the next one leaves.
    for round in 0..ROUNDS {
        let req = json!({"id": round, "type": "request", "action": "broadcast",
                         "payload": {"message": {"round": round, "pad": payload}}});
        let reply: Value = serde_json::from_str(&ask(&mut sender, &req.to_string()).await).unwrap();
        assert_eq!(reply["id"], round);
        let _own_notification = next_text(&mut sender).await;
    }
    let rounds = within(Duration::from_secs(30), "fast client", fast_reader)
        .await
        .unwrap();
    assert_eq!(
        rounds,
        (0..ROUNDS).collect::<Vec<_>>(),
        "fast client missed or reordered"
    );
    let (seen, code) = within(Duration::from_secs(30), "slow reader", slow_reader)
        .await
        .unwrap();
    assert_eq!(code, 1013, "after {seen} messages");
    assert!(seen < ROUNDS, "slow client got all {seen} broadcasts");
    relay
        .wait_for_log("the slow-consumer line", STEP, |l| l.contains("too slow"))
        .await;
    let Some(py) = python_or_skip("slow consumer metric") else {
        return;
    };
    let s = scrape(&py, relay.port).await;
    assert_eq!(
        s.sum("ws_relay_slow_consumers_total", &[("kind", "demo")]),
        2.0
    );
    // The client that never reads is dropped once the grace is over, even
    // though its socket never takes the Close: only fast and sender remain.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = scrape(&py, relay.port).await;
        let open = s.sum("ws_relay_sessions_open", &[("kind", "demo")]);
        if open == 2.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} demo sessions still open"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn demo_is_off_unless_enabled() {
    let relay = Relay::start(RelayConfig::default()).await;
    let resp = get(relay.port, "/demo").await.unwrap();
    assert_eq!(resp.status, 404, "{}", resp.head);
    let relay = Relay::start(demo_config(16)).await;
    let resp = get(relay.port, "/demo").await.unwrap();
    assert_eq!(
        resp.status, 426,
        "plain GET on the demo path: {}",
        resp.head
    );
}

/// `max_connections` covers demo connections too: the next one gets 503.
#[tokio::test]
async fn demo_connections_count_against_max_connections() {
    let relay = Relay::start(RelayConfig {
        max_connections: 2,
        ..demo_config(16)
    })
    .await;
    let (_a, _) = open(&relay).await;
    let (_b, _) = open(&relay).await;
    match connect_async(relay.url("/demo")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string();
            assert!(body.contains(r#""code":"over_capacity""#), "{body}");
        }
        Ok(_) => panic!("third connection accepted at max_connections = 2"),
        Err(e) => panic!("expected HTTP 503, got {e}"),
    }
}

/// The demo app is an RFC 6455 endpoint too: text that is not UTF-8 gets
/// Close 1007 (it used to be answered as "invalid_json"), a reserved Close
/// code gets 1002.
#[tokio::test]
async fn invalid_text_and_reserved_close_codes_get_their_close_codes() {
    let relay = Relay::start(demo_config(256)).await;
    for (frames, code) in [
        (
            [
                encode_frame(false, OP_TEXT, b"{\"id\":\"\xf4", Some(MASK)),
                encode_frame(true, OP_CONT, b"\x90\x80\x80\"}", Some(MASK)),
            ]
            .concat(),
            1007,
        ),
        (client_frame(OP_CLOSE, &1005u16.to_be_bytes()), 1002),
    ] {
        let mut ws = common::client::upgrade(relay.port, "/demo").await;
        match next_msg(&mut ws, STEP).await {
            Message::Text(t) => assert!(t.contains("connected"), "{t}"),
            other => panic!("expected the greeting, got {other:?}"),
        }
        send_raw(&mut ws, &frames).await;
        expect_close(&mut ws, code, STEP).await;
    }
}

/// A client that sends requests faster than it reads the answers is slowed
/// (its connection reads nothing more while its queue is full), never
/// closed, and gets every answer in order.
#[tokio::test]
async fn a_client_that_sends_without_reading_is_slowed_not_closed() {
    const N: usize = 20_000;
    let relay = Relay::start(demo_config(4)).await;
    let frames: Vec<u8> = (0..N)
        .flat_map(|i| {
            let req = json!({"id": i, "type": "request", "action": "echo",
                             "payload": {"message": i}});
            client_frame(OP_TEXT, req.to_string().as_bytes())
        })
        .collect();
    let seen = flood_then_read(
        relay.port,
        "/demo",
        frames,
        Duration::from_millis(500),
        N + 1,
    )
    .await;
    assert_eq!(
        seen.close,
        None,
        "closed after {} answers",
        seen.texts.len()
    );
    assert!(seen.texts[0].contains("connected"), "{}", seen.texts[0]);
    for (i, t) in seen.texts[1..].iter().enumerate() {
        let v: Value = serde_json::from_str(t).unwrap();
        assert_eq!(
            (&v["id"], &v["data"]["echo"]),
            (&json!(i), &json!(i)),
            "{t}"
        );
    }
}
