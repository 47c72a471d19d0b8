//! How a TLS session ends (issue 14, item 5): a client that sends
//! close_notify without a WebSocket Close gets the relay's close_notify back
//! (RFC 8446 §6.1) before the FIN, over TLS 1.3 and 1.2, and the same after
//! a normal close handshake; application data sent behind a close_notify
//! never reaches the target. Refused records get the alert RFC 8446 names
//! (plaintext ChangeCipherSpec or alert and unknown types: unexpected_message;
//! a TLS 1.3 record over 2^14+256: record_overflow), also when the bad
//! record arrives right behind the client's Finished. A rustls client reports a bare FIN as
//! `UnexpectedEof` ("peer closed connection without sending TLS
//! close_notify"), the error OpenSSL calls `UNEXPECTED_EOF_WHILE_READING`.

mod common;

use std::time::Duration;

use common::tls::*;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

static TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

/// Reads what the relay still sends until EOF; `Err` when the EOF came
/// without the relay's close_notify.
async fn read_to_clean_eof(
    s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> std::io::Result<Vec<u8>> {
    let mut rest = Vec::new();
    let read = s.read_to_end(&mut rest);
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the relay did not end the connection within 5 s")?;
    Ok(rest)
}

#[tokio::test]
async fn close_notify_from_the_client_is_answered() {
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let target = EchoTarget::plain().await;
    for versions in [&TLS13[..], &TLS12[..]] {
        let cfg = client_config_versions(&[&ca.der], versions);
        let s = tls(relay.port, &cfg, "localhost").await;
        let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
        echo(&mut ws, Message::text("before close_notify")).await;
        // No WebSocket Close: TLS close_notify (and our FIN) only.
        let s = ws.get_mut();
        s.shutdown().await.expect("send close_notify");
        let rest = read_to_clean_eof(s)
            .await
            .unwrap_or_else(|e| panic!("{:?}: no close_notify in reply: {e}", versions[0].version));
        assert!(
            rest.is_empty(),
            "unexpected bytes after close_notify: {rest:?}"
        );
    }
}

#[tokio::test]
async fn close_handshake_ends_with_close_notify() {
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let target = EchoTarget::plain().await;
    let cfg = client_config(&[&ca.der]);
    let s = tls(relay.port, &cfg, "localhost").await;
    let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
    echo(&mut ws, Message::text("hello")).await;
    ws.close(None).await.expect("send Close");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => break,
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("before the Close echo: {e}"),
            Err(_) => panic!("no Close echo within 5 s"),
        }
    }
    let rest = read_to_clean_eof(ws.get_mut())
        .await
        .unwrap_or_else(|e| panic!("no close_notify after the close handshake: {e}"));
    assert!(rest.is_empty(), "bytes after the Close: {rest:?}");
}

/// A masked client frame (fixed mask; the relay unmasks it for the target).
fn client_text(payload: &str) -> Vec<u8> {
    let mask = Some([0x12u8, 0x34, 0x56, 0x78]);
    ws_relay_core::ws::frame::build_frame(0x1, payload.as_bytes(), mask)
}

/// Reads plaintext until `needle` has arrived; returns everything read.
fn read_until(s: &mut impl std::io::Read, needle: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "EOF before {:?}", String::from_utf8_lossy(needle));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// Application data the client sends after its close_notify, in the same
/// TCP write, is ignored (RFC 8446 §6.1): it never reaches the target, so
/// no echo of it comes back, and the session ends with the relay's own
/// close_notify. Before the fix the relay opened it and relayed it.
#[tokio::test]
async fn data_after_close_notify_is_ignored() {
    use std::io::{Read, Write};
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let target = EchoTarget::plain().await;
    let (port, url, cfg) = (relay.port, target.url(), client_config(&[&ca.der]));
    let after = tokio::task::spawn_blocking(move || {
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(cfg, name).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let upgrade = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
            Sec-WebSocket-Version: 13\r\n\r\n";
        s.write_all(upgrade.as_bytes()).unwrap();
        read_until(&mut s, b"\r\n\r\n");
        let auth = serde_json::json!({ "token": TOKEN, "target": url }).to_string();
        s.write_all(&client_text(&auth)).unwrap();
        read_until(&mut s, "已连接".as_bytes());
        s.write_all(&client_text("before")).unwrap();
        read_until(&mut s, b"before");
        // close_notify, then a data record, flushed together.
        s.conn.send_close_notify();
        s.conn
            .writer()
            .write_all(&client_text("after close_notify"))
            .unwrap();
        while s.conn.wants_write() {
            s.conn.write_tls(&mut s.sock).unwrap();
        }
        let mut rest = Vec::new();
        let end = s.read_to_end(&mut rest);
        (rest, end.map(|_| ()).map_err(|e| e.to_string()))
    })
    .await
    .unwrap();
    let (rest, end) = after;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let texts = target.texts();
    assert!(texts.iter().any(|t| t == "before"), "{texts:?}");
    assert!(
        !texts.iter().any(|t| t.starts_with("after")),
        "data after close_notify reached the target: {texts:?}"
    );
    assert!(
        !rest.windows(6).any(|w| w == b"after "),
        "data after close_notify was relayed: {:?}",
        String::from_utf8_lossy(&rest)
    );
    end.unwrap_or_else(|e| panic!("the session did not end with close_notify: {e}"));
}

/// Records an established TLS 1.3 session must refuse, each with the alert
/// RFC 8446 names (§5, §5.2): sent raw under the client's TLS stream, read
/// back by rustls as the relay's fatal alert.
#[tokio::test]
async fn refused_records_get_the_rfc_alert() {
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let cfg = client_config_versions(&[&ca.der], &TLS13);
    let oversized = {
        let body = 16384 + 257;
        let mut r = vec![23u8, 3, 3, (body >> 8) as u8, body as u8];
        r.resize(5 + body, 0);
        r
    };
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "plaintext ChangeCipherSpec",
            vec![20, 3, 3, 0, 1, 1],
            "UnexpectedMessage",
        ),
        (
            "plaintext alert",
            vec![21, 3, 3, 0, 2, 2, 10],
            "UnexpectedMessage",
        ),
        (
            "unknown record type",
            vec![24, 3, 3, 0, 1, 0],
            "UnexpectedMessage",
        ),
        ("TLS 1.3 record over 2^14+256", oversized, "RecordOverflow"),
    ];
    let target = EchoTarget::plain().await;
    for (what, raw, alert) in cases {
        // An open session first: the handshake and its tickets are behind us.
        let s = tls(relay.port, &cfg, "localhost").await;
        let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
        echo(&mut ws, Message::text("open")).await;
        let s = ws.get_mut();
        s.get_mut().0.write_all(&raw).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf));
        let err = read.await.expect("no answer within 5 s").expect_err(what);
        assert!(
            err.to_string()
                .contains(&format!("received fatal alert: {alert}")),
            "{what}: {err}"
        );
    }
    // The relay is unaffected.
    let s = tls(relay.port, &client_config(&[&ca.der]), "localhost").await;
    assert_eq!(http_get(s, "/health").await.status, 200);
}

/// A bad record right behind the client's Finished reaches rustls while
/// the relay's handshake driver still holds the session tickets it encoded;
/// they go out before rustls's alert, so the client can read the alert.
/// Before the fix most of these ended in "cannot decrypt peer's message".
#[tokio::test]
async fn bad_record_behind_the_finished_gets_a_readable_alert() {
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let cfg = client_config_versions(&[&ca.der], &TLS13);
    for i in 0..20 {
        let mut s = tls(relay.port, &cfg, "localhost").await;
        s.get_mut().0.write_all(&[20, 3, 3, 0, 1, 1]).await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf));
        let err = read
            .await
            .expect("no answer within 5 s")
            .expect_err("refused");
        assert!(
            err.to_string()
                .contains("received fatal alert: UnexpectedMessage"),
            "connection {i}: {err}"
        );
    }
}

/// A target that, once upgraded, sends `count` binary messages of `size`
/// bytes as fast as the relay takes them, then waits for the end.
async fn flood_target(count: usize, size: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        use futures_util::SinkExt;
        for _ in 0..count {
            if ws.send(Message::binary(vec![0x5a; size])).await.is_err() {
                return;
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
    });
    format!("ws://127.0.0.1:{port}/")
}

/// Issue 14, item 5: when one direction ends, the other may be partway
/// through a write to a peer that is not reading. The relay finishes that
/// write (bounded) before ending the session, so the TLS record in flight
/// goes out whole and the relay's close_notify follows it. Before the fix
/// the write was dropped halfway: the client read a cut record followed by
/// the close_notify record and failed the stream instead of ending it.
#[tokio::test]
async fn a_write_in_flight_at_session_end_is_finished_not_cut() {
    let ca = Ca::new("tls_close test CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let target = flood_target(256, 64 * 1024).await;
    let cfg = client_config(&[&ca.der]);
    let s = tls(relay.port, &cfg, "localhost").await;
    let mut ws = first_message(s, relay.port, TOKEN, &target).await;
    // Not reading: the relay's write toward this client blocks part-way.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = ws.get_mut();
    s.shutdown().await.expect("send close_notify");
    let rest = read_to_clean_eof(s)
        .await
        .unwrap_or_else(|e| panic!("the stream was cut instead of ended: {e}"));
    assert!(!rest.is_empty(), "the flood never reached the client");
    eprintln!("{} bytes after close_notify, then a clean end", rest.len());
}

/// A TLS 1.2 AES-GCM session cannot rekey, so before its cipher's record
/// limit the relay ends it itself: Close 1001 at a frame boundary, then
/// close_notify, with every message before it echoed. TLS 1.3 rekeys at the
/// same limit and goes on. `WS_RELAY_TLS_RECORD_LIMIT` lowers the limit to
/// 2,000 records so the test reaches it (the margin is then 250 records;
/// at AES-GCM's 2^24 it is 2^16). Before the fix the TLS 1.2 session ran
/// into the limit and ended with no Close at all.
#[tokio::test]
async fn tls12_session_near_its_record_limit_ends_with_1001() {
    let ca = Ca::new("tls_close test CA");
    let spec = RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).env("WS_RELAY_TLS_RECORD_LIMIT", "2000");
    let relay = TlsRelay::start(spec).await;
    let target = EchoTarget::plain().await;

    let cfg = client_config_versions(&[&ca.der], &TLS12);
    let s = tls(relay.port, &cfg, "localhost").await;
    let suite = s.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert!(format!("{suite:?}").contains("GCM"), "{suite:?}");
    let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
    let mut echoed = 0;
    let frame = loop {
        assert!(echoed < 3000, "no Close after {echoed} echoes");
        let sent = format!("message {echoed}");
        send(&mut ws, Message::text(sent.clone())).await;
        match next_msg(&mut ws).await {
            Some(Message::Text(t)) if t.as_str() == sent => echoed += 1,
            Some(Message::Close(f)) => break f.expect("a Close code"),
            other => panic!("after {echoed} echoes: {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    assert_eq!(frame.reason.as_str(), "TLS 1.2 record limit");
    assert!(
        (1700..1760).contains(&echoed),
        "Close after {echoed} echoes"
    );
    let _ = ws.close(None).await;
    read_to_clean_eof(ws.get_mut())
        .await
        .unwrap_or_else(|e| panic!("no close_notify after the 1001: {e}"));
    let line = relay.wait_session_ends(1).await.pop().unwrap();
    assert_eq!(field(&line, "closed_by"), Some("relay"), "{line}");
    assert!(line.contains("reason=TLS 1.2 record limit"), "{line}");

    // TLS 1.3 rotates its sending key at the limit instead.
    let cfg = client_config_versions(&[&ca.der], &TLS13);
    let s = tls(relay.port, &cfg, "localhost").await;
    let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
    for i in 0..2500 {
        echo(&mut ws, Message::text(format!("message {i}"))).await;
    }
    close(ws).await;
}
