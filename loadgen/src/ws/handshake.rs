//! The HTTP/1.1 upgrade of RFC 6455, both sides: the client request and
//! response check, the server's request parse and 101 answer, the
//! `Sec-WebSocket-Accept` computation, and reading a request/response head
//! off a monoio stream (bounded in size).

use base64::Engine as _;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use sha1::{Digest, Sha1};

use super::url::WsUrl;
use crate::rng::Rng;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEADERS: usize = 64;

/// Handshake failures.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("I/O error during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed during the HTTP handshake")]
    Eof,
    #[error("HTTP head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("malformed HTTP head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("upgrade refused: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("bad upgrade response: {0}")]
    BadResponse(&'static str),
}

/// `Sec-WebSocket-Accept` for a given `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh random `Sec-WebSocket-Key`.
pub fn new_key(rng: &mut Rng) -> String {
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce);
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// Appends a client upgrade request for `url` to `out`.
pub fn write_request(out: &mut Vec<u8>, url: &WsUrl, key: &str, extra: &[(&str, &str)]) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: loadgen/{}\r\n",
        url.path,
        url.host_header(),
        key,
        env!("CARGO_PKG_VERSION"),
    );
    for (name, value) in extra {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Finds the end of an HTTP head (`\r\n\r\n`); returns the head length.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Reads from `io` into `buf` (appending) until it holds a complete HTTP
/// head; returns the head length. Bytes after the head stay in `buf`.
pub async fn read_head<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, HandshakeError> {
    let parse = |b: &[u8]| match head_end(b) {
        Some(n) => Ok(Some(n)),
        None if b.len() >= limit => Err(HandshakeError::HeadTooLarge(limit)),
        None => Ok(None),
    };
    let read = async |b: &mut Vec<u8>| read_more(io, b, 4096).await;
    ws_relay_core::http::head::read_head(buf, read, parse)
        .await?
        .ok_or(HandshakeError::Eof)
}

/// One read appending at least into `min_spare` bytes of spare capacity.
/// Returns the number of bytes read; end of stream is an error.
pub async fn read_more<R: AsyncReadRent>(
    io: &mut R,
    buf: &mut Vec<u8>,
    min_spare: usize,
) -> Result<usize, HandshakeError> {
    if buf.capacity() - buf.len() < min_spare {
        buf.reserve(min_spare);
    }
    let owned = std::mem::take(buf);
    let (len, cap) = (owned.len(), owned.capacity());
    let (res, slice) = io.read(owned.slice_mut(len..cap)).await;
    *buf = slice.into_inner();
    match res {
        Ok(0) => Err(HandshakeError::Eof),
        Ok(n) => Ok(n),
        Err(e) => Err(HandshakeError::Io(e)),
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub content_length: Option<usize>,
}

/// Checks a response head (exactly `head`, as measured by [`head_end`]).
/// On 101 verifies the upgrade and the accept key.
pub fn check_response(head: &[u8], key: &str) -> Result<ResponseHead, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head)?;
    let status = resp.code.ok_or(HandshakeError::BadResponse("no status"))?;
    let content_length = find(resp.headers, "content-length")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok());
    if status == 101 {
        let upgrade = find(resp.headers, "upgrade").unwrap_or_default();
        if !upgrade.eq_ignore_ascii_case(b"websocket") {
            return Err(HandshakeError::BadResponse(
                "101 without Upgrade: websocket",
            ));
        }
        let accept = find(resp.headers, "sec-websocket-accept").unwrap_or_default();
        if accept != accept_key(key.as_bytes()).as_bytes() {
            return Err(HandshakeError::BadResponse("wrong Sec-WebSocket-Accept"));
        }
        if find(resp.headers, "sec-websocket-extensions").is_some() {
            return Err(HandshakeError::BadResponse(
                "server negotiated an extension we did not offer",
            ));
        }
    }
    Ok(ResponseHead {
        status,
        content_length,
    })
}

fn find<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// What a server learned from a request head.
#[derive(Debug)]
pub enum Request {
    /// A WebSocket upgrade; carries the client's key.
    Upgrade { path: String, key: String },
    /// A plain GET (health checks and the like).
    Get { path: String },
    /// Anything else.
    Other,
}

/// Parses a request head (exactly `head`).
pub fn parse_request(head: &[u8]) -> Result<Request, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head)?;
    let path = req.path.unwrap_or("/").to_string();
    if req.method != Some("GET") {
        return Ok(Request::Other);
    }
    let upgrade = find(req.headers, "upgrade").unwrap_or_default();
    match find(req.headers, "sec-websocket-key") {
        Some(key) if upgrade.eq_ignore_ascii_case(b"websocket") => Ok(Request::Upgrade {
            path,
            key: String::from_utf8_lossy(key).into_owned(),
        }),
        _ => Ok(Request::Get { path }),
    }
}

/// Appends a `101 Switching Protocols` answer.
pub fn write_switching(out: &mut Vec<u8>, client_key: &str) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(client_key.as_bytes())
    );
}

/// Appends a small complete HTTP response with a body.
pub fn write_simple(out: &mut Vec<u8>, status: u16, reason: &str, content_type: &str, body: &str) {
    use std::io::Write as _;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn request_response_roundtrip() {
        let url = WsUrl::parse("ws://127.0.0.1:9/p?q=1").unwrap();
        let mut req = Vec::new();
        write_request(&mut req, &url, "abc==", &[("X-Relay-Target", "ws://x/")]);
        let n = head_end(&req).unwrap();
        match parse_request(&req[..n]).unwrap() {
            Request::Upgrade { path, key } => {
                assert_eq!((path.as_str(), key.as_str()), ("/p?q=1", "abc=="))
            }
            other => panic!("{other:?}"),
        }
        let mut resp = Vec::new();
        write_switching(&mut resp, "abc==");
        let head = check_response(&resp, "abc==").unwrap();
        assert_eq!(head.status, 101);
        assert!(check_response(&resp, "other==").is_err());
    }
}
