//! Client side: rustls client configs, TCP/TLS connections to the relay,
//! raw `GET` over any stream, the WebSocket upgrade (tokio-tungstenite over
//! the TLS stream), both auth modes, and message assertions with timeouts.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{provider, within, STEP};

/// The exact status text the relay sends after a first-message auth.
pub const CONNECTED: &str = r#"{"status":"已连接"}"#;

/// Any byte stream the tests speak WebSocket over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type BoxIo = Box<dyn Io>;
pub type Ws<S = BoxIo> = WebSocketStream<S>;

/// A client config trusting exactly `roots`, TLS 1.2 and 1.3, ALPN
/// `http/1.1`, default in-memory resumption store.
pub fn client_config(roots: &[&CertificateDer<'static>]) -> Arc<ClientConfig> {
    client_config_versions(roots, rustls::DEFAULT_VERSIONS)
}

pub fn client_config_versions(
    roots: &[&CertificateDer<'static>],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).expect("add root");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client config that accepts any certificate (used only to probe health
/// before a test knows which certificate the relay serves).
pub fn insecure_client_config() -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub async fn tcp(port: u16) -> TcpStream {
    let s = within(STEP, "TCP connect", TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap_or_else(|e| panic!("TCP connect to 127.0.0.1:{port} failed: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// TCP + TLS handshake to the relay, SNI `name`.
pub async fn try_tls(
    port: u16,
    config: &Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp(port).await;
    let server_name = ServerName::try_from(name.to_string()).expect("server name");
    within(
        STEP,
        "TLS handshake with the relay",
        tokio_rustls::TlsConnector::from(config.clone()).connect(server_name, tcp),
    )
    .await
}

pub async fn tls(port: u16, config: &Arc<ClientConfig>, name: &str) -> TlsStream<TcpStream> {
    try_tls(port, config, name)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with the relay (SNI {name}) failed: {e}"))
}

pub fn handshake_kind(s: &TlsStream<TcpStream>) -> Option<rustls::HandshakeKind> {
    s.get_ref().1.handshake_kind()
}

/// The leaf certificate the relay presented.
pub fn peer_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET path` with `Connection: close`; reads to EOF (or Content-Length).
pub async fn http_get<S: Io>(mut s: S, path: &str) -> HttpResponse {
    within(STEP, "HTTP GET", async {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write GET");
        s.flush().await.expect("flush GET");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            if let Some(resp) = parse_response(&buf) {
                return resp;
            }
        }
        parse_response(&buf).unwrap_or_else(|| {
            panic!(
                "incomplete HTTP response: {:?}",
                String::from_utf8_lossy(&buf)
            )
        })
    })
    .await
}

fn parse_response(buf: &[u8]) -> Option<HttpResponse> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(usize::MAX);
    (body.len() >= len).then(|| HttpResponse {
        status,
        head: head.to_string(),
        body: body[..len].to_string(),
    })
}

/// WebSocket upgrade on `/` over `s` with extra headers.
pub async fn try_upgrade<S: Io>(
    s: S,
    port: u16,
    headers: &[(&str, String)],
) -> Result<WebSocketStream<S>, WsError> {
    let mut req = format!("ws://localhost:{port}/")
        .into_client_request()
        .unwrap();
    for (n, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    within(
        STEP,
        "WebSocket upgrade",
        tokio_tungstenite::client_async(req, s),
    )
    .await
    .map(|(ws, _)| ws)
}

/// Upgrade, send `{"token","target"}`, expect the exact `已连接` status.
pub async fn first_message<S: Io>(
    s: S,
    port: u16,
    token: &str,
    target: &str,
) -> WebSocketStream<S> {
    let mut ws = try_upgrade(s, port, &[])
        .await
        .unwrap_or_else(|e| panic!("upgrade failed: {e}"));
    let auth = serde_json::json!({ "token": token, "target": target }).to_string();
    send(&mut ws, Message::text(auth)).await;
    expect_text(&mut ws, CONNECTED).await;
    ws
}

/// Handshake-time auth: `Authorization: Bearer` + `X-Relay-Target`.
pub async fn header_auth<S: Io>(
    s: S,
    port: u16,
    token: &str,
    target: &str,
) -> Result<WebSocketStream<S>, WsError> {
    let headers = [
        ("Authorization", format!("Bearer {token}")),
        ("X-Relay-Target", target.to_string()),
    ];
    try_upgrade(s, port, &headers).await
}

/// The refused upgrade's status and body (header mode).
pub fn refused(e: WsError) -> (u16, String) {
    match e {
        WsError::Http(resp) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

pub async fn send<S: Io>(ws: &mut WebSocketStream<S>, m: Message) {
    within(STEP, "send", ws.send(m))
        .await
        .expect("send message");
}

/// Next data message (skipping pings/pongs); `None` when the stream ended.
pub async fn next_msg<S: Io>(ws: &mut WebSocketStream<S>) -> Option<Message> {
    loop {
        match within(STEP, "next message", ws.next()).await {
            Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => continue,
            Some(Ok(m)) => return Some(m),
            Some(Err(e)) => panic!("WebSocket error while reading: {e}"),
            None => return None,
        }
    }
}

pub async fn expect_text<S: Io>(ws: &mut WebSocketStream<S>, want: &str) {
    match next_msg(ws).await {
        Some(Message::Text(t)) => assert_eq!(t.as_str(), want, "unexpected text message"),
        other => panic!("expected text {want:?}, got {other:?}"),
    }
}

/// Sends `m` and expects the echo target to return it unchanged.
pub async fn echo<S: Io>(ws: &mut WebSocketStream<S>, m: Message) {
    let what = describe(&m);
    send(ws, m.clone()).await;
    let got = next_msg(ws)
        .await
        .unwrap_or_else(|| panic!("stream ended awaiting echo of {what}"));
    assert!(
        got == m,
        "echo mismatch: sent {what}, got {}",
        describe(&got)
    );
}

pub fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) if t.len() <= 64 => format!("text {:?}", t.as_str()),
        Message::Text(t) => format!("text of {} bytes", t.len()),
        Message::Binary(b) => format!("binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

/// Text, binary, and 1 MiB text and binary messages, each echoed intact.
pub async fn echo_suite<S: Io>(ws: &mut WebSocketStream<S>) {
    echo(ws, Message::text("hello over tls")).await;
    echo(ws, Message::binary((0..=255u8).collect::<Vec<_>>())).await;
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    echo(ws, Message::binary(big)).await;
    let big_text: String = (0..1 << 20)
        .map(|i: u32| (b'a' + (i % 26) as u8) as char)
        .collect();
    echo(ws, Message::text(big_text)).await;
    echo(ws, Message::text("after the big ones")).await;
}

/// Expects the first-message error object with `code`, then Close
/// `close_code` (only codes tungstenite knows; see [`expect_error_close_raw`]).
pub async fn expect_error_close<S: Io>(ws: &mut WebSocketStream<S>, code: &str, close_code: u16) {
    expect_error_message(ws, code).await;
    match next_msg(ws).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), close_code, "close frame {frame:?}")
        }
        other => panic!("expected Close {close_code}, got {other:?}"),
    }
}

/// Expects the first-message error object `{"status":"error","code":..}`.
pub async fn expect_error_message<S: Io>(ws: &mut WebSocketStream<S>, code: &str) {
    match next_msg(ws).await {
        Some(Message::Text(t)) => {
            let v: serde_json::Value = serde_json::from_str(t.as_str())
                .unwrap_or_else(|e| panic!("error message is not JSON ({e}): {t}"));
            assert_eq!(v["status"], "error", "error object: {t}");
            assert_eq!(v["code"], code, "error object: {t}");
            assert!(
                v["error"].as_str().is_some_and(|s| !s.is_empty()),
                "error text: {t}"
            );
        }
        other => panic!("expected the {code} error message, got {other:?}"),
    }
}

/// Closes politely and waits (bounded) for the stream to end.
pub async fn close<S: Io>(mut ws: WebSocketStream<S>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Reads until EOF or error; returns how long that took from `since`, or
/// `None` if the peer kept the connection open for `limit`.
pub async fn time_to_close<S: AsyncRead + Unpin>(
    s: &mut S,
    since: std::time::Instant,
    limit: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    let done = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    done.ok().map(|_| since.elapsed())
}

/// A stream wrapper recording every byte read from the relay, so Close codes
/// can be checked as sent: tungstenite 0.28 does not know 1014 and hands the
/// application `1002 "Protocol violation"` instead.
pub struct Tap<S> {
    inner: S,
    seen: Arc<std::sync::Mutex<Vec<u8>>>,
}

pub type Seen = Arc<std::sync::Mutex<Vec<u8>>>;

pub fn tap<S>(inner: S) -> (Tap<S>, Seen) {
    let seen: Seen = Default::default();
    (
        Tap {
            inner,
            seen: seen.clone(),
        },
        seen,
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let new = buf.filled()[before..].to_vec();
            self.seen.lock().unwrap().extend_from_slice(&new);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Close codes of the server frames in `raw`, which starts with the HTTP
/// 101 response head. `None` for an empty Close payload.
pub fn raw_close_codes(raw: &[u8]) -> Vec<Option<u16>> {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(start) => close_codes(&raw[start + 4..]),
        None => Vec::new(),
    }
}

/// Close codes of the complete frames at the start of `frames` (masked
/// ones unmasked, so a target's view of the relay's frames reads too), read
/// with the engine's decoder as a lenient observer. `None` for an empty
/// Close payload; an incomplete last frame is ignored.
pub fn close_codes(frames: &[u8]) -> Vec<Option<u16>> {
    use ws_relay_core::ws::decoder::{Decoder, Event};
    let mut chunk = frames.to_vec();
    let (mut dec, mut pos) = (Decoder::passthrough().allowing_reserved_bits(), 0);
    let (mut close, mut codes) = (None::<Vec<u8>>, Vec::new());
    while let Ok(Some(event)) = dec.next(&mut chunk, &mut pos) {
        match event {
            Event::Header(h) => close = (h.opcode == 0x8).then(Vec::new),
            Event::Payload { start, end } => {
                if let Some(c) = &mut close {
                    c.extend_from_slice(&chunk[start..end]);
                }
            }
            Event::End => {
                if let Some(p) = close.take() {
                    codes.push((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])));
                }
            }
        }
    }
    codes
}

/// Like [`expect_error_close`], checking the Close code as sent on the wire.
pub async fn expect_error_close_raw<S: Io>(
    ws: &mut WebSocketStream<Tap<S>>,
    seen: &Seen,
    code: &str,
    close_code: u16,
) {
    expect_error_message(ws, code).await;
    match next_msg(ws).await {
        Some(Message::Close(_)) => {}
        other => panic!("expected Close {close_code}, got {other:?}"),
    }
    let codes = raw_close_codes(&seen.lock().unwrap());
    assert_eq!(
        codes,
        vec![Some(close_code)],
        "Close code(s) the relay sent"
    );
}
