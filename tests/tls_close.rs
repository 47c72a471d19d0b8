//! How a TLS session ends (issue 14, item 5): a client that sends
//! close_notify without a WebSocket Close gets the relay's close_notify back
//! (RFC 8446 §6.1) before the FIN, over TLS 1.3 and 1.2, and the same after
//! a normal close handshake. A rustls client reports a bare FIN as
//! `UnexpectedEof` ("peer closed connection without sending TLS
//! close_notify"), the error OpenSSL calls `UNEXPECTED_EOF_WHILE_READING`.

mod tls_support;

use std::time::Duration;

use futures_util::StreamExt;
use tls_support::*;
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
