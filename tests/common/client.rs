//! Client side: the two auth modes, message helpers with timeouts, and the
//! error/close assertions every error test shares.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::http::urlencode;
use super::tap::{RawClose, Tap};
use super::target::describe;

/// A client connection; the [`Tap`] records Close frames as they were on the
/// wire (tungstenite rewrites codes it does not know, such as 1014).
pub type Ws = WebSocketStream<Tap>;

/// The exact status text the relay sends after a first-message auth.
pub const CONNECTED: &str = r#"{"status":"已连接"}"#;

/// Default per-step limit: generous, only hit when the engine is broken.
pub const STEP: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// `{"token","target"}` as the first text message.
    FirstMessage,
    /// `Authorization: Bearer` + `X-Relay-Target` on the upgrade.
    Header,
}

/// Awaits `fut`, panicking with `what` after `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Writes hand-built frames under the client: what a well-behaved client
/// never sends (text that is not UTF-8, reserved Close codes).
pub async fn send_raw(ws: &mut Ws, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    within(STEP, "raw write", ws.get_mut().write_all(bytes))
        .await
        .expect("raw write");
}

pub fn auth_json(token: &str, target: &str) -> String {
    serde_json::json!({ "token": token, "target": target }).to_string()
}

/// Plain WebSocket upgrade on `path`, no auth. Panics on failure.
pub async fn upgrade(port: u16, path: &str) -> Ws {
    let req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    match try_upgrade(port, req).await {
        Ok((ws, _)) => ws,
        Err(e) => panic!("upgrade on {path} failed: {}", ws_error_text(&e)),
    }
}

pub async fn try_upgrade(port: u16, req: Request) -> Result<(Ws, Response), WsError> {
    within(STEP, "TCP connect + WebSocket upgrade", async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(WsError::Io)?;
        let _ = tcp.set_nodelay(true);
        tokio_tungstenite::client_async(req, Tap::http(tcp)).await
    })
    .await
}

/// Upgrade, send the auth message, and expect the `已连接` status.
pub async fn connect_first_message(port: u16, token: &str, target: &str) -> Ws {
    let mut ws = upgrade(port, "/").await;
    send(&mut ws, Message::text(auth_json(token, target))).await;
    expect_text(&mut ws, CONNECTED).await;
    ws
}

/// Options for a handshake-time auth upgrade.
#[derive(Clone, Debug, Default)]
pub struct HeaderAuth {
    pub token: Option<String>,
    pub target: Option<String>,
    /// Put token and target in the query string instead of headers.
    pub query: bool,
    /// `Sec-WebSocket-Protocol` offer.
    pub protocols: Option<String>,
    /// Extra raw headers.
    pub extra: Vec<(String, String)>,
    /// Upgrade path (default "/").
    pub path: Option<String>,
}

impl HeaderAuth {
    pub fn new(token: &str, target: &str) -> HeaderAuth {
        HeaderAuth {
            token: Some(token.into()),
            target: Some(target.into()),
            ..HeaderAuth::default()
        }
    }

    pub fn request(&self, port: u16) -> Request {
        let mut path = self.path.clone().unwrap_or_else(|| "/".into());
        if self.query {
            let mut q = Vec::new();
            if let Some(t) = &self.token {
                q.push(format!("token={}", urlencode(t)));
            }
            if let Some(t) = &self.target {
                q.push(format!("target={}", urlencode(t)));
            }
            if !q.is_empty() {
                path.push(if path.contains('?') { '&' } else { '?' });
                path.push_str(&q.join("&"));
            }
        }
        let mut req = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        if !self.query {
            if let Some(t) = &self.token {
                h.insert(
                    "Authorization",
                    HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
                );
            }
            if let Some(t) = &self.target {
                h.insert("X-Relay-Target", HeaderValue::from_str(t).unwrap());
            }
        }
        if let Some(p) = &self.protocols {
            h.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        for (n, v) in &self.extra {
            h.append(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        req
    }
}

/// A refused upgrade: HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Refused {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {:?}", self.body))
    }
}

pub fn ws_error_text(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!(
            "HTTP {} {:?}",
            resp.status(),
            resp.body().as_deref().map(String::from_utf8_lossy)
        ),
        other => other.to_string(),
    }
}

/// Handshake-time auth; `Err(Refused)` when the relay answers an HTTP error.
/// Panics on any other failure.
pub async fn try_connect_header(port: u16, auth: &HeaderAuth) -> Result<(Ws, Response), Refused> {
    match try_upgrade(port, auth.request(port)).await {
        Ok(v) => Ok(v),
        Err(WsError::Http(resp)) => Err(Refused {
            status: resp.status().as_u16(),
            body: resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(e) => panic!("header-mode upgrade failed without an HTTP status: {e}"),
    }
}

pub async fn connect_header(port: u16, token: &str, target: &str) -> Ws {
    match try_connect_header(port, &HeaderAuth::new(token, target)).await {
        Ok((ws, _)) => ws,
        Err(r) => panic!("header-mode upgrade refused: {} {}", r.status, r.body),
    }
}

/// A relayed session in either auth mode.
pub async fn connect(mode: AuthMode, port: u16, token: &str, target: &str) -> Ws {
    match mode {
        AuthMode::FirstMessage => connect_first_message(port, token, target).await,
        AuthMode::Header => connect_header(port, token, target).await,
    }
}

pub async fn send(ws: &mut Ws, msg: Message) {
    within(STEP, "send", ws.send(msg))
        .await
        .expect("send failed");
}

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    Msg(Message),
    /// Stream ended (None) or errored.
    End(String),
    Timeout,
}

pub async fn try_next(ws: &mut Ws, limit: Duration) -> Next {
    match tokio::time::timeout(limit, ws.next()).await {
        Ok(Some(Ok(m))) => Next::Msg(m),
        Ok(Some(Err(e))) => Next::End(format!("error: {e}")),
        Ok(None) => Next::End("closed".into()),
        Err(_) => Next::Timeout,
    }
}

/// Next message; panics on end or timeout.
pub async fn next_msg(ws: &mut Ws, limit: Duration) -> Message {
    match try_next(ws, limit).await {
        Next::Msg(m) => m,
        Next::End(how) => panic!("expected a message, the session ended ({how})"),
        Next::Timeout => panic!("expected a message, none within {limit:?}"),
    }
}

pub async fn expect_text(ws: &mut Ws, expected: &str) {
    match next_msg(ws, STEP).await {
        Message::Text(t) if t.as_str() == expected => {}
        other => panic!("expected Text({expected:?}), got {}", describe(&other)),
    }
}

pub async fn expect_binary(ws: &mut Ws, expected: &[u8]) {
    match next_msg(ws, STEP).await {
        Message::Binary(b) if b.as_ref() == expected => {}
        Message::Binary(b) => panic!(
            "binary payload differs: got {} bytes, expected {} (first difference at {:?})",
            b.len(),
            expected.len(),
            b.iter().zip(expected).position(|(a, b)| a != b)
        ),
        other => panic!(
            "expected Binary({} bytes), got {}",
            expected.len(),
            describe(&other)
        ),
    }
}

/// The Close frame the relay sent, as on the wire. Call after a
/// `Message::Close` was received.
pub fn raw_close(ws: &Ws) -> RawClose {
    ws.get_ref()
        .last_close()
        .expect("tungstenite reported a Close the tap did not see")
}

/// Expects a Close frame with `code` on the wire (reason returned). Pongs are
/// skipped.
pub async fn expect_close(ws: &mut Ws, code: u16, limit: Duration) -> String {
    loop {
        match try_next(ws, limit).await {
            Next::Msg(Message::Close(_)) => {
                let rc = raw_close(ws);
                assert_eq!(
                    rc.code,
                    Some(code),
                    "close code on the wire (reason {:?})",
                    rc.reason
                );
                return rc.reason;
            }
            Next::Msg(Message::Pong(_)) => continue,
            Next::Msg(other) => panic!("expected Close({code}), got {}", describe(&other)),
            Next::End(how) => {
                panic!("expected Close({code}), the connection ended without one ({how})")
            }
            Next::Timeout => panic!("expected Close({code}), nothing within {limit:?}"),
        }
    }
}

/// Expects the connection to end (after a Close was received, or outright).
pub async fn expect_end(ws: &mut Ws, limit: Duration) {
    match try_next(ws, limit).await {
        Next::End(_) => {}
        Next::Msg(m) => panic!("expected the connection to end, got {}", describe(&m)),
        Next::Timeout => panic!("relay did not close the TCP connection within {limit:?}"),
    }
}

/// Checks a JSON error object `{"status":"error","code":code,"error":"..."}`.
pub fn assert_error_json(v: &serde_json::Value, code: &str) {
    assert_eq!(v["status"], "error", "error object {v}");
    assert_eq!(v["code"], code, "error object {v}");
    assert!(
        v["error"].as_str().is_some_and(|s| !s.is_empty()),
        "error object needs a non-empty \"error\" text: {v}"
    );
}

/// First-message error: one error text, a Close with `close_code`, TCP close.
pub async fn expect_ws_error(ws: &mut Ws, code: &str, close_code: u16) {
    expect_ws_error_within(ws, code, close_code, STEP).await
}

pub async fn expect_ws_error_within(ws: &mut Ws, code: &str, close_code: u16, limit: Duration) {
    let text = match next_msg(ws, limit).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected an error text ({code}), got {}", describe(&other)),
    };
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error message is not JSON ({e}): {text:?}"));
    assert_error_json(&v, code);
    expect_close(ws, close_code, STEP).await;
    expect_end(ws, Duration::from_secs(5)).await;
}

/// Header-mode refusal: `status` with the JSON error object for `code`.
pub fn assert_refused(r: &Refused, status: u16, code: &str) {
    assert_eq!(r.status, status, "HTTP status (body {:?})", r.body);
    assert_error_json(&r.json(), code);
}

/// Starts a close handshake with `code`/`reason` and expects the same Close
/// back, then the end of the connection.
pub async fn close_and_expect_echo(ws: &mut Ws, code: u16, reason: &str) {
    within(
        STEP,
        "sending Close",
        ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        })),
    )
    .await
    .expect("send close");
    let got = expect_close(ws, code, STEP).await;
    assert_eq!(got, reason, "close reason");
    expect_end(ws, Duration::from_secs(5)).await;
}

/// Deterministic payload of `len` bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(seed as u32) as u8)
        .collect()
}
