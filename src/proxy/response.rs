//! The upstream's answer to a forwarded upgrade: a 101 that starts the
//! session, or any other response, returned to the client as it came
//! (status, headers, body) with `Connection: close`.
//!
//! Owns response-head reading and body framing (length, chunked, to close).
//! Must not: change a 101 beyond the one documented protocol echo, or read
//! past the body of a non-101 answer.

use std::time::Instant;

use crate::endpoint::Endpoint;
use crate::http::head::{parse_response_head, read_head, HeadError, ResponseHead};

/// Why the upstream gave no usable answer (the next upstream is tried).
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("reading the upstream's answer: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream's answer is not HTTP: {0}")]
    Head(#[from] HeadError),
}

/// A complete response head and the bytes that followed it.
pub struct Answer {
    pub head: ResponseHead,
    /// Everything read so far: the head, then `buf[head.len..]`.
    pub buf: Vec<u8>,
}

impl Answer {
    pub fn is_upgrade(&self) -> bool {
        self.head.status == 101
            && self
                .head
                .header("upgrade")
                .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }

    pub fn negotiated_extensions(&self) -> bool {
        self.head
            .header("sec-websocket-extensions")
            .is_some_and(|v| !v.trim().is_empty())
    }
}

/// Reads until a whole response head has arrived.
pub async fn read_answer(upstream: &Endpoint) -> Result<Answer, AnswerError> {
    let mut buf = Vec::with_capacity(1024);
    let head = read_head(
        &mut buf,
        async |b: &mut Vec<u8>| Ok::<_, AnswerError>(upstream.recv_some(b, 2048).await?),
        |b| Ok(parse_response_head(b)?),
    )
    .await?;
    match head {
        Some(head) => Ok(Answer { head, buf }),
        None => Err(AnswerError::Closed),
    }
}

/// The 101 head as the upstream sent it, plus `Sec-WebSocket-Protocol:
/// echo` when the upstream chose no protocol and the relay must name the
/// client's credential entry (see `request::UpstreamRequest`).
pub fn upgrade_head(answer: &Answer, echo: Option<&str>) -> Vec<u8> {
    let head = &answer.buf[..answer.head.len];
    match echo {
        Some(p) if answer.head.header("sec-websocket-protocol").is_none() => {
            let mut out = head[..head.len() - 2].to_vec();
            out.extend_from_slice(format!("Sec-WebSocket-Protocol: {p}\r\n\r\n").as_bytes());
            out
        }
        _ => head.to_vec(),
    }
}

/// How a non-101 body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    None,
    Length(u64),
    Chunked,
    Close,
}

fn body_end(head: &ResponseHead) -> BodyEnd {
    if matches!(head.status, 100..=199 | 204 | 304) {
        return BodyEnd::None;
    }
    let chunked = head
        .headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .any(|(_, v)| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return BodyEnd::Chunked;
    }
    match head.header("content-length").map(|v| v.parse::<u64>()) {
        Some(Ok(n)) => BodyEnd::Length(n),
        _ => BodyEnd::Close,
    }
}

/// The head re-sent to the client: the upstream's, with its connection
/// headers replaced by `Connection: close` (this connection ends after it).
pub fn closing_head(head: &ResponseHead, raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(&raw[..head.len]);
    let mut out = String::with_capacity(head.len + 20);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Copies a non-101 answer to the client: head, then the body up to its
/// end, bounded by `deadline`. Returns bytes sent.
pub async fn relay_refusal(
    answer: Answer,
    upstream: &Endpoint,
    client: &Endpoint,
    deadline: Instant,
) -> std::io::Result<u64> {
    let head = closing_head(&answer.head, &answer.buf);
    client.write_all(&head).await?;
    let mut sent = head.len() as u64;
    let mut end = body_end(&answer.head);
    let mut chunks = ChunkedEnd::default();
    let mut pending = answer.buf[answer.head.len..].to_vec();
    let copy = async {
        loop {
            let take = match end {
                BodyEnd::None => 0,
                BodyEnd::Length(n) => n.min(pending.len() as u64) as usize,
                BodyEnd::Chunked => chunks.feed(&pending),
                BodyEnd::Close => pending.len(),
            };
            client.write_all(&pending[..take]).await?;
            sent += take as u64;
            let done = match &mut end {
                BodyEnd::None => true,
                BodyEnd::Length(n) => {
                    *n -= take as u64;
                    *n == 0
                }
                BodyEnd::Chunked => chunks.done(),
                BodyEnd::Close => false,
            };
            if done {
                return Ok::<_, std::io::Error>(());
            }
            pending.clear();
            if upstream.recv_some(&mut pending, 16 * 1024).await? == 0 {
                return Ok(());
            }
        }
    };
    let _ = monoio::time::timeout_at(deadline.into(), copy).await;
    Ok(sent)
}

/// Finds where a chunked body ends (RFC 9112 §7.1), fed in pieces.
#[derive(Debug, Default)]
struct ChunkedEnd {
    state: Chunk,
    size: u64,
    done: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    #[default]
    Size,
    /// After the size digits: extensions until LF.
    SizeLine,
    Data,
    DataCr,
    DataLf,
    /// Trailer section: `at_line_start` tells an empty line.
    Trailer {
        at_line_start: bool,
    },
}

impl ChunkedEnd {
    /// Consumes `bytes`; returns how many belong to the body (all of them
    /// unless the body ends inside).
    fn feed(&mut self, bytes: &[u8]) -> usize {
        for (i, &b) in bytes.iter().enumerate() {
            if self.done {
                return i;
            }
            self.state = match (self.state, b) {
                (Chunk::Size, b) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or(0) as u64;
                    self.size = self.size.saturating_mul(16).saturating_add(digit);
                    Chunk::Size
                }
                (Chunk::Size | Chunk::SizeLine, b'\n') if self.size == 0 => Chunk::Trailer {
                    at_line_start: true,
                },
                (Chunk::Size | Chunk::SizeLine, b'\n') => Chunk::Data,
                (Chunk::Size | Chunk::SizeLine, _) => Chunk::SizeLine,
                (Chunk::Data, _) => {
                    self.size -= 1;
                    if self.size == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data
                    }
                }
                (Chunk::DataCr, b'\r') => Chunk::DataLf,
                (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::Size,
                (Chunk::DataCr | Chunk::DataLf, _) => Chunk::DataLf,
                (Chunk::Trailer { at_line_start }, b'\n') => {
                    if at_line_start {
                        self.done = true;
                    }
                    Chunk::Trailer {
                        at_line_start: true,
                    }
                }
                (Chunk::Trailer { at_line_start }, b'\r') => Chunk::Trailer { at_line_start },
                (Chunk::Trailer { .. }, _) => Chunk::Trailer {
                    at_line_start: false,
                },
            };
        }
        bytes.len()
    }

    fn done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_response_head;

    #[test]
    fn chunked_end_is_found_across_any_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nX-T: 1\r\n\r\n";
        let mut stream = body.to_vec();
        stream.extend_from_slice(b"NEXT RESPONSE");
        for split in 0..stream.len() {
            let mut c = ChunkedEnd::default();
            let a = c.feed(&stream[..split]);
            let b = if c.done() {
                0
            } else {
                c.feed(&stream[split..])
            };
            assert!(c.done(), "split {split}");
            assert_eq!(a + b, body.len(), "split {split}");
        }
        let mut c = ChunkedEnd::default();
        assert_eq!(c.feed(b"0\r\n\r\n"), 5);
        assert!(c.done());
    }

    #[test]
    fn body_framing_and_closing_head() {
        let raw = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\nnope";
        let head = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(body_end(&head), BodyEnd::Length(4));
        let out = String::from_utf8(closing_head(&head, raw)).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-App: 1\r\nConnection: close\r\n\r\n"
        );
        let h = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(body_end(&h), BodyEnd::None);
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(body_end(&h), BodyEnd::Chunked);
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(body_end(&h), BodyEnd::Close);
    }
}
