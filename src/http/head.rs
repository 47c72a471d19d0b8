//! Request and response heads, parsed with `httparse` into small owned
//! structs once the whole head has arrived, and the one loop that reads a
//! head ([`read_head`]) every side shares.
//!
//! Owns the limits (head size, header count) and the header lookups the relay
//! needs. Must not: do I/O itself (callers hand [`read_head`] their read).

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {0} headers")]
    TooManyHeaders(usize),
    #[error("malformed HTTP: {0}")]
    Malformed(String),
}

impl HeadError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge(_) | HeadError::TooManyHeaders(_) => 431,
            HeadError::Malformed(_) => 400,
        }
    }
}

/// A parsed request head. Header names are lower-cased.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path plus optional `?query`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Length of the head in bytes, including the blank line.
    pub len: usize,
}

impl RequestHead {
    /// Whether the client lets the connection stay open after the answer
    /// (RFC 9112 §9.3): HTTP/1.1 unless it says `Connection: close`,
    /// HTTP/1.0 only when it asks for `Connection: keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        match self.version {
            0 => self.header_has_token("connection", "keep-alive"),
            _ => !self.header_has_token("connection", "close"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// True when any comma-separated value of `name` equals `token`
    /// (case-insensitive), as `Connection: keep-alive, Upgrade` requires.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// A WebSocket upgrade request (RFC 6455 §4.2.1).
    pub fn is_websocket_upgrade(&self) -> bool {
        self.header_has_token("upgrade", "websocket")
            && self.header_has_token("connection", "upgrade")
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub len: usize,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn owned_headers(raw: &[httparse::Header<'_>]) -> Result<Vec<(String, String)>, HeadError> {
    raw.iter()
        .map(|h| {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| HeadError::Malformed(format!("header {} is not UTF-8", h.name)))?;
            Ok((h.name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// Parses a request head from `buf`. `Ok(None)` means incomplete, and is
/// turned into `TooLarge` once `buf` reaches `max_bytes`.
pub fn parse_request_head(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let mut storage = vec![httparse::EMPTY_HEADER; max_headers];
    let mut req = httparse::Request::new(&mut storage);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders(max_headers)),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    let len = match status {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial if buf.len() >= max_bytes => {
            return Err(HeadError::TooLarge(max_bytes))
        }
        httparse::Status::Partial => return Ok(None),
    };
    if len > max_bytes {
        return Err(HeadError::TooLarge(max_bytes));
    }
    // httparse reads only "HTTP/1.x"; both minor versions are answered
    // (an upgrade needs 1.1, which the router says in its 400).
    let version = req.version.unwrap_or(1);
    Ok(Some(RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        headers: owned_headers(req.headers)?,
        version,
        len,
    }))
}

/// Reads a head: checks what `buf` holds with `parse`, and asks `read_more`
/// to append bytes until a whole head is there (or `parse` refuses it, its
/// limits included). `Ok(None)`: the peer closed first (`read_more` read 0).
/// Bytes behind the head stay in `buf`. The front door, the push API and
/// every client side (targets, upstreams, CONNECT proxies, the relay as
/// seen by the tunnel client, loadgen) read their heads with it.
pub async fn read_head<T, E>(
    buf: &mut Vec<u8>,
    mut read_more: impl AsyncFnMut(&mut Vec<u8>) -> Result<usize, E>,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>, E>,
) -> Result<Option<T>, E> {
    loop {
        if !buf.is_empty() {
            if let Some(head) = parse(buf)? {
                return Ok(Some(head));
            }
        }
        if read_more(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Most headers a target's upgrade response may carry.
const MAX_RESPONSE_HEADERS: usize = 64;
/// Largest target response head.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Parses a response head from `buf`. `Ok(None)` means incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(ResponseHead {
            status: resp.code.unwrap_or(0),
            headers: owned_headers(resp.headers)?,
            len,
        })),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            Err(HeadError::TooLarge(MAX_RESPONSE_HEAD))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            Err(HeadError::TooManyHeaders(MAX_RESPONSE_HEADERS))
        }
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /?token=a HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\nrest";

    #[test]
    fn parses_upgrade_and_reports_length() {
        let h = parse_request_head(UPGRADE, 8192, 100).unwrap().unwrap();
        assert_eq!(h.method, "GET");
        assert_eq!(h.path(), "/");
        assert_eq!(h.query(), Some("token=a"));
        assert!(h.is_websocket_upgrade());
        assert_eq!(&UPGRADE[h.len..], b"rest");
        assert_eq!(h.header("sec-websocket-key"), Some("k"));
    }

    #[test]
    fn partial_head_waits_then_hits_the_size_limit() {
        let partial = b"GET / HTTP/1.1\r\nHost: x\r\n";
        assert!(parse_request_head(partial, 8192, 100).unwrap().is_none());
        let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 600]].concat();
        assert_eq!(
            parse_request_head(&big, 512, 100).unwrap_err(),
            HeadError::TooLarge(512)
        );
    }

    #[test]
    fn too_many_headers_and_garbage() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            req.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_request_head(&req, 1 << 20, 100).unwrap_err().status(),
            431
        );
        let e = parse_request_head(b"\x16\x03\x01\x00garbage\r\n\r\n", 8192, 100).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(parse_request_head(b"GET / HTTP/2.0\r\n\r\n", 8192, 100).is_err());
    }

    #[test]
    fn http_1_0_is_read_and_keeps_alive_only_when_asked() {
        let h = parse_request_head(b"GET /health HTTP/1.0\r\n\r\n", 8192, 100)
            .unwrap()
            .unwrap();
        assert_eq!(h.version, 0);
        assert!(!h.keeps_alive());
        let h = parse_request_head(
            b"POST /p HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            8192,
            100,
        )
        .unwrap()
        .unwrap();
        assert!(h.keeps_alive());
        let h = parse_request_head(UPGRADE, 8192, 100).unwrap().unwrap();
        assert_eq!(h.version, 1);
        assert!(h.keeps_alive());
        let h = parse_request_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 8192, 100)
            .unwrap()
            .unwrap();
        assert!(!h.keeps_alive());
    }

    #[test]
    fn response_head() {
        let r = parse_response_head(b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 101);
        assert_eq!(r.header("upgrade"), Some("websocket"));
        assert!(parse_response_head(b"HTTP/1.1 101").unwrap().is_none());
    }

    #[test]
    fn read_head_asks_for_more_keeps_the_rest_and_sees_eof() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let pieces = [&UPGRADE[..7], &UPGRADE[7..40], &UPGRADE[40..]];
        let (mut buf, mut reads) = (Vec::new(), 0);
        let head = rt.block_on(read_head(
            &mut buf,
            async |b: &mut Vec<u8>| {
                let p = pieces.get(reads).copied().unwrap_or_default();
                reads += 1;
                b.extend_from_slice(p);
                Ok::<_, HeadError>(p.len())
            },
            |b| parse_request_head(b, 8192, 100),
        ));
        let head = head.unwrap().unwrap();
        assert_eq!((reads, &buf[head.len..]), (3, &b"rest"[..]));
        // What `buf` already holds is parsed before any read.
        let again = rt.block_on(read_head(
            &mut buf,
            async |_: &mut Vec<u8>| -> Result<usize, HeadError> { panic!("no read needed") },
            |b| parse_request_head(b, 8192, 100),
        ));
        assert!(again.unwrap().is_some());
        // EOF before a whole head; a refused head stops at once.
        let mut partial = b"GET / HTTP/1.1\r\n".to_vec();
        let eof = rt.block_on(read_head(
            &mut partial,
            async |_: &mut Vec<u8>| Ok::<_, HeadError>(0),
            |b| parse_request_head(b, 8192, 100),
        ));
        assert!(eof.unwrap().is_none());
        let mut big = vec![b'a'; 64];
        let refused = rt.block_on(read_head(
            &mut big,
            async |_: &mut Vec<u8>| Ok::<_, HeadError>(0),
            |b| parse_request_head(b, 32, 100),
        ));
        assert!(refused.is_err());
    }
}
