//! Reading a demo client's WebSocket messages: masked frames, fragments
//! reassembled up to `max_message_bytes`, control frames surfaced as they
//! come. An oversized message is skipped as it streams in (never buffered)
//! and reported, so the session can answer an error and carry on.
//!
//! Must not: buffer more than one message, or accept unmasked frames.

use crate::endpoint::Endpoint;
use crate::ws::frame::{apply_mask, opcode, parse_header};

pub enum Incoming {
    Text(Vec<u8>),
    Binary,
    TooLarge,
    Ping(Vec<u8>),
    /// The client's Close payload (code and reason), to echo back.
    Close(Vec<u8>),
    /// TCP ended without a Close frame.
    Eof,
    /// A framing violation: the session closes with 1002.
    Protocol(&'static str),
}

pub struct Reader {
    buf: Vec<u8>,
    message: Vec<u8>,
    /// Opcode of the data message being reassembled, if any.
    in_message: Option<u8>,
    /// Payload bytes still to skip from an oversized frame.
    skip: u64,
    /// The message being reassembled went over the limit.
    oversized: bool,
    limit: usize,
}

impl Reader {
    pub fn new(already: Vec<u8>, limit: usize) -> Reader {
        Reader {
            buf: already,
            message: Vec::new(),
            in_message: None,
            skip: 0,
            oversized: false,
            limit,
        }
    }

    pub async fn next(&mut self, client: &Endpoint) -> Incoming {
        loop {
            if let Some(msg) = self.step() {
                return msg;
            }
            match client.recv_some(&mut self.buf, 4096).await {
                Ok(0) | Err(_) => return Incoming::Eof,
                Ok(_) => {}
            }
        }
    }

    /// Consumes what `buf` holds; `None` means more bytes are needed.
    fn step(&mut self) -> Option<Incoming> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len() as u64) as usize;
                self.buf.drain(..n);
                self.skip -= n as u64;
                if self.skip > 0 {
                    return None;
                }
            }
            let h = match parse_header(&self.buf) {
                Err(_) => return Some(Incoming::Protocol("invalid frame header")),
                Ok(None) => return None,
                Ok(Some(h)) => h,
            };
            let Some(mask) = h.mask else {
                return Some(Incoming::Protocol("client frames must be masked"));
            };
            let data = !h.is_control();
            if data && (h.opcode == opcode::CONTINUATION) != self.in_message.is_some() {
                return Some(Incoming::Protocol("unexpected continuation frame"));
            }
            let too_big = data && (self.message.len() as u64 + h.payload_len > self.limit as u64);
            if too_big || (data && self.oversized) {
                self.buf.drain(..h.header_len);
                self.skip = h.payload_len;
                self.message.clear();
                self.oversized = !h.fin;
                self.in_message = (!h.fin).then_some(h.opcode);
                if h.fin {
                    // The skipped payload may still be arriving; it is
                    // dropped as it comes, without being buffered.
                    return Some(Incoming::TooLarge);
                }
                continue;
            }
            if (self.buf.len() as u64) < h.frame_len() {
                return None;
            }
            let end = h.frame_len() as usize;
            let mut payload: Vec<u8> = self.buf[h.header_len..end].to_vec();
            self.buf.drain(..end);
            apply_mask(&mut payload, mask, 0);
            if let Some(msg) = self.frame(h.opcode, h.fin, payload) {
                return Some(msg);
            }
        }
    }

    fn frame(&mut self, op: u8, fin: bool, payload: Vec<u8>) -> Option<Incoming> {
        match op {
            opcode::PING => Some(Incoming::Ping(payload)),
            opcode::PONG => None,
            opcode::CLOSE => Some(Incoming::Close(payload)),
            _ => {
                let first = self.in_message.unwrap_or(op);
                self.message.extend_from_slice(&payload);
                if !fin {
                    self.in_message = Some(first);
                    return None;
                }
                self.in_message = None;
                let message = std::mem::take(&mut self.message);
                Some(match first {
                    opcode::TEXT => Incoming::Text(message),
                    _ => Incoming::Binary,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::build_frame;

    const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = build_frame(op, payload, MASK);
        if !fin {
            f[0] &= 0x7f;
        }
        f
    }

    #[test]
    fn fragments_control_frames_and_oversize() {
        let mut bytes = frame(false, opcode::TEXT, b"hel");
        bytes.extend(frame(true, opcode::PING, b"p"));
        bytes.extend(frame(true, opcode::CONTINUATION, b"lo"));
        bytes.extend(frame(true, opcode::TEXT, &[b'x'; 300]));
        bytes.extend(frame(true, opcode::BINARY, b"b"));
        bytes.extend(frame(true, opcode::TEXT, b"after"));
        let mut r = Reader::new(bytes, 200);
        assert!(matches!(r.step(), Some(Incoming::Ping(p)) if p == b"p"));
        assert!(matches!(r.step(), Some(Incoming::Text(t)) if t == b"hello"));
        assert!(matches!(r.step(), Some(Incoming::TooLarge)));
        assert!(matches!(r.step(), Some(Incoming::Binary)));
        assert!(matches!(r.step(), Some(Incoming::Text(t)) if t == b"after"));
        assert!(r.step().is_none());
    }

    #[test]
    fn unmasked_and_stray_continuation_are_protocol_errors() {
        let mut r = Reader::new(build_frame(opcode::TEXT, b"x", None), 200);
        assert!(matches!(r.step(), Some(Incoming::Protocol(_))));
        let mut r = Reader::new(frame(true, opcode::CONTINUATION, b"x"), 200);
        assert!(matches!(r.step(), Some(Incoming::Protocol(_))));
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let f = frame(true, opcode::TEXT, b"hello");
        let mut r = Reader::new(f[..4].to_vec(), 200);
        assert!(r.step().is_none());
        r.buf.extend_from_slice(&f[4..]);
        assert!(matches!(r.step(), Some(Incoming::Text(t)) if t == b"hello"));
    }
}
