//! Credentials: reading the first-message auth frame (original protocol) and
//! extracting handshake-time credentials from the upgrade request.
//!
//! Reads the auth message with the one message reader (`ws::message`).
//! Must not: keep or log token values beyond handing them to the user
//! table, or consume bytes past the auth message (they belong to the target).

use crate::endpoint::Endpoint;
use crate::http::head::RequestHead;
use crate::http::url::query_param;
use crate::ws::decoder::Role;
use crate::ws::error::{ErrorCode, RelayError};
use crate::ws::frame::{build_frame, opcode};
use crate::ws::message::{Message, MessageReader, Mode, ReadError};

/// A token and target, from either auth mode.
pub struct Credentials {
    pub token: String,
    pub target: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &"<redacted>")
            .field("target", &self.target)
            .finish()
    }
}

/// How a first-message read ended without credentials.
#[derive(Debug)]
pub enum FirstMessageError {
    /// The client sent something the relay must refuse.
    Refused(RelayError),
    /// The client closed (Close frame or EOF) before authenticating.
    ClientGone,
}

fn bad(detail: impl Into<String>) -> FirstMessageError {
    FirstMessageError::Refused(RelayError::new(ErrorCode::BadRequest, detail))
}

/// Handshake-time credentials, if the request carries any. Some but not both
/// is a `bad_request` (the client clearly meant this mode).
pub fn from_request(head: &RequestHead) -> Result<Option<Credentials>, RelayError> {
    let query = head.query().unwrap_or("");
    let token = head
        .header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_string())
        })
        .or_else(|| query_param(query, "token"));
    let target = head
        .header("x-relay-target")
        .map(str::to_string)
        .or_else(|| query_param(query, "target"));
    match (token, target) {
        (None, None) => Ok(None),
        (Some(token), Some(target)) if !token.is_empty() && !target.is_empty() => {
            Ok(Some(Credentials { token, target }))
        }
        _ => Err(RelayError::new(
            ErrorCode::BadRequest,
            "handshake-time auth needs both a token (Authorization: Bearer or ?token=) and a target (X-Relay-Target or ?target=)",
        )),
    }
}

/// Reads the first text message from a freshly upgraded client. `buf` holds
/// bytes already received; on success it holds only what followed the auth
/// message. Ping frames before auth are answered; other data is refused.
pub async fn read_first_message(
    stream: &Endpoint,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<Credentials, FirstMessageError> {
    let mut reader = MessageReader::new(Role::FromClient, Mode::Whole, limit);
    loop {
        let mut pos = 0;
        loop {
            let pong = match reader.next(buf, &mut pos) {
                Ok(None) => break,
                Ok(Some(Message::Text(auth))) => {
                    let credentials = parse_auth_json(auth).map_err(FirstMessageError::Refused);
                    buf.drain(..pos);
                    return credentials;
                }
                Ok(Some(Message::Ping(payload))) => build_frame(opcode::PONG, payload, None),
                Ok(Some(Message::Pong(_))) => continue,
                Ok(Some(Message::Close { .. })) => return Err(FirstMessageError::ClientGone),
                Ok(Some(_)) => return Err(bad("the auth message must be a text message")),
                Err(ReadError::TooLarge { .. }) => {
                    return Err(bad(format!("auth message larger than {limit} bytes")))
                }
                Err(e) => return Err(bad(format!("invalid WebSocket frame: {e}"))),
            };
            stream
                .write_all(&pong)
                .await
                .map_err(|_| FirstMessageError::ClientGone)?;
        }
        // Everything read so far is consumed (a frame in progress is held by
        // the reader), so pings before auth cannot grow the buffer.
        buf.clear();
        match stream.recv_some(buf, 4096).await {
            Ok(0) | Err(_) => return Err(FirstMessageError::ClientGone),
            Ok(_) => {}
        }
    }
}

/// `{"token": "...", "target": "..."}`; extra fields are ignored. Errors never
/// quote the input, which may contain a token.
pub fn parse_auth_json(bytes: &[u8]) -> Result<Credentials, RelayError> {
    let bad = |d: &str| RelayError::new(ErrorCode::BadRequest, d);
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| bad("first message is not valid JSON"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("first message must be a JSON object"))?;
    let field = |name: &str| {
        obj.get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let token = field("token").ok_or_else(|| bad("missing or empty \"token\""))?;
    let target = field("target").ok_or_else(|| bad("missing or empty \"target\""))?;
    Ok(Credentials { token, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_request_head;

    #[test]
    fn auth_json() {
        let c = parse_auth_json(br#"{"token":"t","target":"ws://h/","extra":1}"#).unwrap();
        assert_eq!((c.token.as_str(), c.target.as_str()), ("t", "ws://h/"));
        for bad in [
            &br#"not json"#[..],
            br#"[1]"#,
            br#"{"token":"","target":"ws://h"}"#,
            br#"{"token":"t"}"#,
            br#"{"token":5,"target":"ws://h"}"#,
        ] {
            let e = parse_auth_json(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
        }
        let e = parse_auth_json(br#"{"token":"sekrit""#).unwrap_err();
        assert!(!e.detail.contains("sekrit"));
    }

    fn head(raw: &str) -> RequestHead {
        parse_request_head(raw.as_bytes(), 8192, 100)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn header_and_query_credentials() {
        let h =
            head("GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nX-Relay-Target: ws://h/\r\n\r\n");
        let c = from_request(&h).unwrap().unwrap();
        assert_eq!((c.token.as_str(), c.target.as_str()), ("abc", "ws://h/"));
        let h = head("GET /?token=abc&target=ws%3A%2F%2Fh%2F HTTP/1.1\r\n\r\n");
        assert_eq!(from_request(&h).unwrap().unwrap().target, "ws://h/");
        assert!(from_request(&head("GET / HTTP/1.1\r\n\r\n"))
            .unwrap()
            .is_none());
        assert!(from_request(&head("GET /?token=abc HTTP/1.1\r\n\r\n")).is_err());
    }
}
