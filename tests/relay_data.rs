//! Data path through the relay, over the wire against the real binary:
//! text, binary (every length encoding), 1 MiB messages both ways, fragmented
//! messages both ways (with a control frame between fragments), ping/pong both
//! ways, 200 pipelined messages (the first-message variant writes the auth
//! message and all 200 frames in one TCP write), and frames a target writes in
//! the same TCP write as its 101. Each scenario runs under io_uring and legacy
//! drivers × copy and splice forwarding × first-message and header auth.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::{Bytes, Message};

matrix!(full: text_and_binary, one_mib_both_ways, fragmented, ping_pong, pipelined_200, target_greeting);
matrix!(engine: upgrade_auth_and_data_in_one_write);

async fn session(v: Variant, opts: TargetOpts) -> (Relay, Target, Ws) {
    let target = Target::start(opts).await;
    let relay = Relay::start(v.config()).await;
    let ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/echo")).await;
    (relay, target, ws)
}

/// Received data messages (not control frames) the target reported so far.
fn data_msgs(evs: &[Ev]) -> Vec<Message> {
    evs.iter()
        .filter_map(|e| match e {
            Ev::Msg { msg, .. } if msg.is_text() || msg.is_binary() => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

async fn text_and_binary(v: Variant) {
    let (_relay, mut target, mut ws) = session(v, TargetOpts::default()).await;
    let (_, head) = target.connected().await;
    assert_eq!(head_path(&head), "/echo", "target request line: {head:?}");

    let texts = [
        "hello",
        "",
        "héllo 已连接 🎉",
        r#"{"token":"not-auth","target":"ws://x/"}"#,
    ];
    for t in texts {
        send(&mut ws, Message::text(t)).await;
        expect_text(&mut ws, t).await;
    }
    // Every payload length encoding: 7-bit, 16-bit, 64-bit.
    let bins = [
        vec![],
        vec![0u8, 1, 2, 255],
        pattern(125, 1),
        pattern(126, 2),
        pattern(65535, 3),
        pattern(65536, 4),
    ];
    for b in &bins {
        send(&mut ws, Message::binary(b.clone())).await;
        expect_binary(&mut ws, b).await;
    }
    close_and_expect_echo(&mut ws, 1000, "done").await;

    let got = data_msgs(&target.drain());
    let expected: Vec<Message> = texts
        .iter()
        .map(|t| Message::text(*t))
        .chain(bins.iter().map(|b| Message::binary(b.clone())))
        .collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "messages the target received: {}",
        got.len()
    );
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert!(
            g == e,
            "target message {i}: got {}, expected {}",
            describe(g),
            describe(e)
        );
    }
}

async fn one_mib_both_ways(v: Variant) {
    let (_relay, _target, ws) = session(
        v,
        TargetOpts {
            report_msgs: false,
            ..TargetOpts::default()
        },
    )
    .await;
    let big_bin = pattern(1 << 20, 7);
    let big_text: String = (0..(1 << 20))
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    // Send and receive concurrently: 4 × 1 MiB in flight would otherwise
    // deadlock on full socket buffers (that is backpressure, not a bug).
    let (mut tx, mut rx) = ws.split();
    let (b2, t2) = (big_bin.clone(), big_text.clone());
    let sender = tokio::spawn(async move {
        for i in 0..4 {
            if i % 2 == 0 {
                tx.send(Message::binary(b2.clone()))
                    .await
                    .expect("send 1 MiB binary");
            } else {
                tx.send(Message::text(t2.clone()))
                    .await
                    .expect("send 1 MiB text");
            }
        }
        tx
    });
    for i in 0..4 {
        let m = within(Duration::from_secs(30), "1 MiB echo", rx.next())
            .await
            .unwrap_or_else(|| panic!("session ended before echo {i}"))
            .unwrap_or_else(|e| panic!("error before echo {i}: {e}"));
        match (i % 2, m) {
            (0, Message::Binary(b)) => assert!(
                b.as_ref() == big_bin.as_slice(),
                "1 MiB binary echo {i} differs (len {})",
                b.len()
            ),
            (1, Message::Text(t)) => assert!(
                t.as_str() == big_text,
                "1 MiB text echo {i} differs (len {})",
                t.len()
            ),
            (_, other) => panic!("echo {i}: unexpected {}", describe(&other)),
        }
    }
    let tx = within(STEP, "sender task", sender).await.unwrap();
    let mut ws = tx.reunite(rx).expect("reunite");
    close_and_expect_echo(&mut ws, 1000, "").await;
}

fn frame(data: &[u8], op: OpCode, fin: bool) -> Message {
    Message::Frame(Frame::message(Bytes::copy_from_slice(data), op, fin))
}

async fn fragmented(v: Variant) {
    let (_relay, mut target, mut ws) = session(v, TargetOpts::default()).await;
    target.connected().await;

    // Client → target: three text fragments with a Ping between them.
    ws.feed(frame(b"frag-", OpCode::Data(Data::Text), false))
        .await
        .unwrap();
    ws.feed(frame(b"ment", OpCode::Data(Data::Continue), false))
        .await
        .unwrap();
    ws.feed(Message::Ping(Bytes::from_static(b"mid")))
        .await
        .unwrap();
    within(
        STEP,
        "send",
        ws.send(frame(b"ed", OpCode::Data(Data::Continue), true)),
    )
    .await
    .unwrap();
    let (mut got_pong, mut got_text) = (false, false);
    while !(got_pong && got_text) {
        match next_msg(&mut ws, STEP).await {
            Message::Pong(p) if p.as_ref() == b"mid" && !got_pong => got_pong = true,
            Message::Text(t) if t.as_str() == "frag-mented" && !got_text => got_text = true,
            other => panic!("fragmented text: unexpected {}", describe(&other)),
        }
    }
    target
        .wait_event(
            "the reassembled text",
            STEP,
            |e| matches!(e, Ev::Msg { msg: Message::Text(t), .. } if t.as_str() == "frag-mented"),
        )
        .await;

    // Client → target: binary in three fragments crossing the 16-bit length.
    let payload = pattern(70_000, 5);
    ws.feed(frame(&payload[..10], OpCode::Data(Data::Binary), false))
        .await
        .unwrap();
    ws.feed(frame(
        &payload[10..66_000],
        OpCode::Data(Data::Continue),
        false,
    ))
    .await
    .unwrap();
    within(
        STEP,
        "send",
        ws.send(frame(
            &payload[66_000..],
            OpCode::Data(Data::Continue),
            true,
        )),
    )
    .await
    .unwrap();
    expect_binary(&mut ws, &payload).await;

    // Target → client: the echo target answers `FRAG:` in three fragments.
    send(&mut ws, Message::text("FRAG:abcdefghijkl-已连接")).await;
    expect_text(&mut ws, "abcdefghijkl-已连接").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

async fn ping_pong(v: Variant) {
    let (_relay, mut target, mut ws) = session(v, TargetOpts::default()).await;
    target.connected().await;

    // Client ping: answered by the target, not by the relay.
    send(&mut ws, Message::Ping(Bytes::from_static(b"ping-1"))).await;
    match next_msg(&mut ws, STEP).await {
        Message::Pong(p) => assert_eq!(p.as_ref(), b"ping-1"),
        other => panic!("expected Pong(ping-1), got {}", describe(&other)),
    }
    target
        .wait_event(
            "the client's Ping",
            STEP,
            |e| matches!(e, Ev::Msg { msg: Message::Ping(p), .. } if p.as_ref() == b"ping-1"),
        )
        .await;

    // Target ping: reaches the client; the client's automatic Pong reaches the target.
    send(&mut ws, Message::text("PING:srv-ping")).await;
    match next_msg(&mut ws, STEP).await {
        Message::Ping(p) => assert_eq!(p.as_ref(), b"srv-ping"),
        other => panic!("expected Ping(srv-ping), got {}", describe(&other)),
    }
    within(STEP, "flush pong", ws.flush()).await.unwrap();
    target
        .wait_event(
            "the client's Pong",
            STEP,
            |e| matches!(e, Ev::Msg { msg: Message::Pong(p), .. } if p.as_ref() == b"srv-ping"),
        )
        .await;

    // Still a working session afterwards.
    send(&mut ws, Message::text("after pings")).await;
    expect_text(&mut ws, "after pings").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

fn numbered(i: usize) -> Message {
    if i % 3 == 0 {
        Message::binary(pattern(i * 7, i as u8))
    } else {
        Message::text(format!("msg-{i:03}-{}", "x".repeat(i)))
    }
}

fn raw_frame(m: &Message) -> Vec<u8> {
    match m {
        Message::Text(t) => client_frame(OP_TEXT, t.as_bytes()),
        Message::Binary(b) => client_frame(OP_BINARY, b),
        _ => unreachable!(),
    }
}

async fn expect_numbered(ws: &mut Ws, range: std::ops::Range<usize>) {
    for i in range {
        let expected = numbered(i);
        let got = next_msg(ws, STEP).await;
        assert!(
            got == expected,
            "message {i}: got {}, expected {}",
            describe(&got),
            describe(&expected)
        );
    }
}

async fn pipelined_200(v: Variant) {
    let target = Target::start(TargetOpts {
        report_msgs: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(v.config()).await;
    let url = target.url("/pipe");

    // 200 frames in a single TCP write; in first-message mode the auth
    // message leads the same write, so the frames arrive before the status.
    let mut raw = Vec::new();
    let mut ws = match v.auth {
        AuthMode::FirstMessage => {
            raw.extend(client_frame(
                OP_TEXT,
                auth_json(ALICE_TOKEN, &url).as_bytes(),
            ));
            upgrade(relay.port, "/").await
        }
        AuthMode::Header => connect_header(relay.port, ALICE_TOKEN, &url).await,
    };
    for i in 0..200 {
        raw.extend(raw_frame(&numbered(i)));
    }
    within(STEP, "raw write", ws.get_mut().write_all(&raw))
        .await
        .unwrap();
    if v.auth == AuthMode::FirstMessage {
        expect_text(&mut ws, CONNECTED).await;
    }
    expect_numbered(&mut ws, 0..200).await;

    // 200 more, one write each, without waiting for echoes.
    for i in 200..400 {
        within(STEP, "feed", ws.feed(numbered(i))).await.unwrap();
    }
    within(STEP, "flush", ws.flush()).await.unwrap();
    expect_numbered(&mut ws, 200..400).await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

async fn target_greeting(v: Variant) {
    let mut greeting = vec![
        Greeting::Text("hello-from-target".into()),
        Greeting::Binary(pattern(300, 9)),
    ];
    greeting.extend((0..20).map(|i| Greeting::Text(format!("g-{i}"))));
    let (_relay, _target, mut ws) = session(
        v,
        TargetOpts {
            greeting,
            ..TargetOpts::default()
        },
    )
    .await;
    // `connect` already consumed the status in first-message mode: the
    // greeting must come after it, in order, and in header mode it must be
    // the very first thing the client sees.
    expect_text(&mut ws, "hello-from-target").await;
    expect_binary(&mut ws, &pattern(300, 9)).await;
    for i in 0..20 {
        expect_text(&mut ws, &format!("g-{i}")).await;
    }
    send(&mut ws, Message::text("after greeting")).await;
    expect_text(&mut ws, "after greeting").await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}

/// The upgrade request, the auth message and two data frames in one TCP
/// write: nothing the relay read along with the request head may be lost.
async fn upgrade_auth_and_data_in_one_write(v: Variant) {
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let mut raw = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        relay.port
    )
    .into_bytes();
    raw.extend(client_frame(
        OP_TEXT,
        auth_json(ALICE_TOKEN, &target.url("/")).as_bytes(),
    ));
    raw.extend(client_frame(OP_TEXT, b"first"));
    raw.extend(client_frame(OP_BINARY, &pattern(1000, 3)));
    let mut tcp = TcpStream::connect(relay.addr()).await.unwrap();
    within(STEP, "raw write", tcp.write_all(&raw))
        .await
        .unwrap();

    // Read the 101 byte-exactly, keep whatever follows it.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = within(STEP, "101 response", async {
        loop {
            if let Some(end) = common::http::find_head_end(&buf) {
                break end;
            }
            use tokio::io::AsyncReadExt;
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "relay closed before answering: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let (status, headers) = common::http::parse_head(&buf[..end]).unwrap();
    assert_eq!(status, 101, "{}", String::from_utf8_lossy(&buf[..end]));
    let accept = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-accept"));
    assert_eq!(
        accept.map(|(_, v)| v.as_str()),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let rest = buf[end..].to_vec();
    let tap = Tap::frames(tcp);
    tap.feed(&rest);
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_partially_read(tap, rest, Role::Client, None)
            .await;
    expect_text(&mut ws, CONNECTED).await;
    expect_text(&mut ws, "first").await;
    expect_binary(&mut ws, &pattern(1000, 3)).await;
    close_and_expect_echo(&mut ws, 1000, "").await;
}
