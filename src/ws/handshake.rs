//! The two WebSocket opening handshakes the relay performs: answering the
//! client's upgrade, and upgrading the dialed connection to the target.
//!
//! Owns request/response text and their validation. Must not: negotiate any
//! extension (relayed frames stay byte-compatible only without one).

use tungstenite::handshake::derive_accept_key;

use crate::http::head::{parse_response_head, HeadError, RequestHead};

/// `Sec-WebSocket-Key` of a version-13 upgrade request (RFC 6455 §4.2.1),
/// or `None` when the request is not one a server may accept.
pub fn upgrade_key(head: &RequestHead) -> Option<String> {
    let version_ok = head
        .header("sec-websocket-version")
        .is_some_and(|v| v.trim() == "13");
    let key = head.header("sec-websocket-key")?.trim();
    (version_ok && !key.is_empty()).then(|| key.to_string())
}

/// The `101 Switching Protocols` answer to a client upgrade.
pub fn accept_response(client_key: &str, protocol: Option<&str>) -> Vec<u8> {
    let accept = derive_accept_key(client_key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The upgrade request sent to a target.
pub fn client_request(
    host_header: &str,
    path: &str,
    key: &str,
    protocols: Option<&str>,
) -> Vec<u8> {
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: ws-relay-core\r\n"
    );
    if let Some(p) = protocols {
        out.push_str("Sec-WebSocket-Protocol: ");
        out.push_str(p);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A fresh random `Sec-WebSocket-Key`.
pub fn generate_key() -> String {
    tungstenite::handshake::client::generate_key()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpgradeError {
    #[error("target answered HTTP {0} instead of 101")]
    Status(u16),
    #[error("target's Sec-WebSocket-Accept does not match the key")]
    BadAccept,
    #[error("target's response lacks 'Upgrade: websocket'")]
    NotWebSocket,
    #[error("target negotiated an extension that was not offered")]
    UnexpectedExtension,
    #[error("target chose a subprotocol that was not offered")]
    UnexpectedProtocol,
    #[error("malformed response from target: {0}")]
    Malformed(#[from] HeadError),
}

/// What a successful target upgrade tells the relay.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgraded {
    /// Bytes of the response head; what follows are WebSocket frames.
    pub head_len: usize,
    pub protocol: Option<String>,
}

/// Validates a complete target response head in `buf`. `Ok(None)` means the
/// head is not complete yet.
pub fn check_target_response(
    buf: &[u8],
    key: &str,
    offered_protocols: Option<&str>,
) -> Result<Option<Upgraded>, UpgradeError> {
    let Some(head) = parse_response_head(buf)? else {
        return Ok(None);
    };
    if head.status != 101 {
        return Err(UpgradeError::Status(head.status));
    }
    if !head
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(UpgradeError::NotWebSocket);
    }
    let expected = derive_accept_key(key.as_bytes());
    if head.header("sec-websocket-accept").map(str::trim) != Some(expected.as_str()) {
        return Err(UpgradeError::BadAccept);
    }
    if head
        .header("sec-websocket-extensions")
        .is_some_and(|v| !v.trim().is_empty())
    {
        return Err(UpgradeError::UnexpectedExtension);
    }
    let protocol = head
        .header("sec-websocket-protocol")
        .map(|p| p.trim().to_string());
    if let Some(p) = &protocol {
        let offered = offered_protocols
            .map(|o| o.split(',').any(|x| x.trim() == p))
            .unwrap_or(false);
        if !offered {
            return Err(UpgradeError::UnexpectedProtocol);
        }
    }
    Ok(Some(Upgraded {
        head_len: head.len,
        protocol,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_for(key: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes()
    }

    #[test]
    fn accepts_valid_response_and_keeps_trailing_frames() {
        let key = generate_key();
        let mut buf = response_for(&key, "Sec-WebSocket-Protocol: chat\r\n");
        let head = buf.len();
        buf.extend_from_slice(&[0x81, 0x01, b'x']);
        let up = check_target_response(&buf, &key, Some("chat, other"))
            .unwrap()
            .unwrap();
        assert_eq!(up.head_len, head);
        assert_eq!(up.protocol.as_deref(), Some("chat"));
    }

    #[test]
    fn incomplete_head_needs_more() {
        let key = generate_key();
        let buf = response_for(&key, "");
        assert_eq!(
            check_target_response(&buf[..buf.len() - 2], &key, None),
            Ok(None)
        );
    }

    #[test]
    fn rejects_wrong_accept_status_extension_protocol() {
        let key = generate_key();
        let other = generate_key();
        assert_eq!(
            check_target_response(&response_for(&other, ""), &key, None),
            Err(UpgradeError::BadAccept)
        );
        assert_eq!(
            check_target_response(b"HTTP/1.1 404 Not Found\r\n\r\n", &key, None),
            Err(UpgradeError::Status(404))
        );
        assert_eq!(
            check_target_response(
                &response_for(&key, "Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                &key,
                None
            ),
            Err(UpgradeError::UnexpectedExtension)
        );
        assert_eq!(
            check_target_response(
                &response_for(&key, "Sec-WebSocket-Protocol: x\r\n"),
                &key,
                None
            ),
            Err(UpgradeError::UnexpectedProtocol)
        );
    }

    #[test]
    fn accept_response_matches_rfc_example() {
        let r = String::from_utf8(accept_response("dGhlIHNhbXBsZSBub25jZQ==", None)).unwrap();
        assert!(r.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
