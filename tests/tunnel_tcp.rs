//! `tcp://` targets over the wire: the real binary bridging WebSocket binary
//! messages to real TCP services in the test process (an echo service and a
//! hashing sink), websockify-style, in both auth modes and both drivers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A TCP service: echoes, and reports each connection's end ("eof" when the
/// relay sent FIN) on `ends`.
struct TcpEcho {
    port: u16,
    ends: mpsc::UnboundedReceiver<String>,
}

async fn tcp_echo() -> TcpEcho {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, ends) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => {
                            let _ = tx.send("eof".to_string());
                            return;
                        }
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(format!("error: {e}"));
                            return;
                        }
                    }
                }
            });
        }
    });
    TcpEcho { port, ends }
}

fn tcp_user(port: u16) -> UserSpec {
    UserSpec::alice().allowed(&[&format!("tcp://127.0.0.1:{port}")])
}

async fn relay_for(users: Vec<UserSpec>, driver: Driver) -> Relay {
    Relay::start(RelayConfig::default().with_users(users).with_driver(driver)).await
}

/// Reads binary messages until `want` bytes arrived; returns them.
async fn read_bytes(ws: &mut Ws, want: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match next_msg(ws, STEP).await {
            Message::Binary(b) => got.extend_from_slice(&b),
            other => panic!("expected binary, got {}", describe(&other)),
        }
    }
    got
}

async fn header_session(port: u16, target: &str, protocols: Option<&str>) -> (Ws, Option<String>) {
    let auth = HeaderAuth {
        query: true,
        protocols: protocols.map(str::to_string),
        ..HeaderAuth::new(ALICE_TOKEN, target)
    };
    let (ws, resp) = match try_connect_header(port, &auth).await {
        Ok(v) => v,
        Err(r) => panic!("refused: {} {}", r.status, r.body),
    };
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, proto)
}

async fn echo_roundtrips(ws: &mut Ws) {
    for size in [1usize, 125, 126, 65535, 65536, 300_000] {
        let data = pattern(size, size as u8);
        send(ws, Message::binary(data.clone())).await;
        assert!(read_bytes(ws, size).await == data, "size {size}");
    }
}

#[tokio::test]
async fn bridges_binary_messages_both_auth_modes_and_drivers() {
    let mut svc = tcp_echo().await;
    let target = format!("tcp://127.0.0.1:{}", svc.port);
    for driver in [Driver::IoUring, Driver::Legacy] {
        let relay = relay_for(vec![tcp_user(svc.port)], driver).await;
        // websockify's subprotocol is offered back.
        let (mut ws, proto) = header_session(relay.port, &target, Some("binary")).await;
        assert_eq!(proto.as_deref(), Some("binary"));
        echo_roundtrips(&mut ws).await;
        // Fragmented messages and pings in between.
        let mut raw = client_frame_fragment(false, OP_BINARY, b"abc");
        raw.extend(client_frame(0x9, b"hi"));
        raw.extend(client_frame_fragment(true, 0x0, b"def"));
        ws.get_mut().write_all(&raw).await.unwrap();
        let mut got = Vec::new();
        let mut pong = false;
        while got.len() < 6 || !pong {
            match next_msg(&mut ws, STEP).await {
                Message::Binary(b) => got.extend_from_slice(&b),
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"hi");
                    pong = true;
                }
                other => panic!("{}", describe(&other)),
            }
        }
        assert_eq!(got, b"abcdef");
        // A client Close reaches the service as a FIN and is answered.
        ws.send(Message::Close(None)).await.unwrap();
        match next_msg(&mut ws, STEP).await {
            Message::Close(None) => {}
            other => panic!("expected an empty Close back, got {}", describe(&other)),
        }
        expect_end(&mut ws, STEP).await;
        let end = within(STEP, "service sees the end", svc.ends.recv()).await;
        assert_eq!(end.as_deref(), Some("eof"));
        let log = relay
            .wait_for_log("session end", STEP, |l| l.contains("tcp=true"))
            .await;
        assert!(log.contains("closed_by=\"client\""), "{log}");

        let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &target).await;
        echo_roundtrips(&mut ws).await;
        // The client's Close comes back as it was sent, code and reason,
        // once the service has answered the FIN with its own.
        close_and_expect_echo(&mut ws, 4000, "bye").await;
    }
}

fn client_frame_fragment(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, op, payload, Some([9, 8, 7, 6]))
}

#[tokio::test]
async fn service_closing_sends_close_1000() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"SSH-2.0-test\r\n").await.unwrap();
        // FIN right after the banner.
    });
    let relay = relay_for(vec![tcp_user(port)], Driver::Auto).await;
    let (mut ws, proto) =
        header_session(relay.port, &format!("tcp://127.0.0.1:{port}"), None).await;
    assert_eq!(proto, None, "no protocol offered, none chosen");
    assert_eq!(read_bytes(&mut ws, 14).await, b"SSH-2.0-test\r\n");
    expect_close(&mut ws, 1000, STEP).await;
}

#[tokio::test]
async fn bulk_transfer_keeps_every_byte_in_order() {
    let svc = tcp_echo().await;
    let relay = relay_for(vec![tcp_user(svc.port)], Driver::Auto).await;
    let (ws, _) = header_session(relay.port, &format!("tcp://127.0.0.1:{}", svc.port), None).await;
    let (mut tx, mut rx) = ws.split();
    const TOTAL: usize = 100 << 20;
    const CHUNK: usize = 64 << 10;
    let writer = tokio::spawn(async move {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        for i in 0..TOTAL / CHUNK {
            let data = pattern(CHUNK, i as u8);
            h.update(&data);
            tx.send(Message::binary(data)).await.unwrap();
        }
        (h.finish(), tx)
    });
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    let mut got = 0;
    while got < TOTAL {
        match tokio::time::timeout(Duration::from_secs(30), rx.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => {
                h.update(&b);
                got += b.len();
            }
            other => panic!("after {got} bytes: {other:?}"),
        }
    }
    let (sent, _tx) = writer.await.unwrap();
    assert_eq!(got, TOTAL);
    assert_eq!(h.finish().as_ref(), sent.as_ref(), "checksum differs");
}

async fn refused(port: u16, token: &str, target: &str) -> Refused {
    match try_connect_header(port, &HeaderAuth::new(token, target)).await {
        Ok(_) => panic!("{target} was not refused"),
        Err(r) => r,
    }
}

#[tokio::test]
async fn tcp_needs_an_explicit_allow_and_a_public_address() {
    let svc = tcp_echo().await;
    // Refused before any dial: the watched listener never sees a connection.
    let watched = Sink::silent().await;
    let target = format!("tcp://127.0.0.1:{}", watched.port);
    let users = vec![
        UserSpec::alice(),
        UserSpec::bob().allowed(&["*"]),
        UserSpec::carol().allowed(&["ws://127.0.0.1*"]),
    ];
    let relay = relay_for(users, Driver::Auto).await;
    for token in [ALICE_TOKEN, BOB_TOKEN, CAROL_TOKEN] {
        let r = refused(relay.port, token, &target).await;
        assert_refused(&r, 403, "target_forbidden");
    }
    let mut ws = upgrade(relay.port, "/").await;
    send(&mut ws, Message::text(auth_json(BOB_TOKEN, &target))).await;
    expect_ws_error(&mut ws, "target_forbidden", 1008).await;
    assert_eq!(watched.accepts(), 0, "a forbidden tcp:// target was dialed");
    let target = format!("tcp://127.0.0.1:{}", svc.port);
    // The private-address rule applies to tcp:// as to ws://.
    let relay = Relay::start(RelayConfig {
        allow_private_targets: false,
        ..RelayConfig::default().with_users(vec![tcp_user(svc.port)])
    })
    .await;
    let r = refused(relay.port, ALICE_TOKEN, &target).await;
    assert_refused(&r, 403, "target_forbidden");
    // A closed port is unreachable, like any target.
    let closed = format!("tcp://127.0.0.1:{}", closed_port());
    let relay = relay_for(
        vec![UserSpec::alice().allowed(&["tcp://127.0.0.1:*"])],
        Driver::Auto,
    )
    .await;
    let r = refused(relay.port, ALICE_TOKEN, &closed).await;
    assert_refused(&r, 502, "target_unreachable");
}

#[tokio::test]
async fn protocol_errors_close_with_1002_and_spare_other_sessions() {
    let svc = tcp_echo().await;
    let target = format!("tcp://127.0.0.1:{}", svc.port);
    let relay = relay_for(vec![tcp_user(svc.port)], Driver::Auto).await;
    let (mut good, _) = header_session(relay.port, &target, None).await;
    let (mut bad, _) = header_session(relay.port, &target, None).await;
    // An unmasked client frame.
    bad.get_mut()
        .write_all(&encode_frame(true, OP_BINARY, b"x", None))
        .await
        .unwrap();
    expect_close(&mut bad, 1002, STEP).await;
    echo_roundtrips(&mut good).await;
}
