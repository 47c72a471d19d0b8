//! Client frames → stream bytes, for `tcp://` targets: a streaming decoder
//! that unmasks data payloads in place, in whatever pieces they arrive, and
//! reports control frames whole.
//!
//! Owns the client side of RFC 6455 framing (masking required, fragmented
//! messages, control frames ≤ 125 bytes). Must not: allocate, or buffer a
//! data payload (bytes leave as soon as they are unmasked).

use crate::ws::frame::{apply_mask, opcode, parse_header, FrameError, MAX_HEADER_LEN};

/// Why the client's stream is not acceptable (answered with Close 1002).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("client frame is not masked")]
    Unmasked,
    #[error("server frame is masked")]
    Masked,
    #[error("continuation frame outside a fragmented message")]
    StrayContinuation,
    #[error("new data frame inside a fragmented message")]
    NestedMessage,
}

/// One thing found in a chunk of client bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Unmasked payload bytes of a data frame: `chunk[start..end]`.
    Data {
        start: usize,
        end: usize,
    },
    Ping,
    Pong,
    /// A Close frame with its code (1005 when it carried none).
    Close(u16),
}

#[derive(Debug)]
pub struct Decoder {
    header: [u8; MAX_HEADER_LEN],
    header_have: usize,
    /// Payload bytes left in the current frame.
    remaining: u64,
    mask: [u8; 4],
    /// Payload bytes of the current frame already unmasked.
    offset: usize,
    /// The current frame is a control frame (payload collected below).
    control: Option<u8>,
    control_buf: [u8; 125],
    control_have: usize,
    /// Between a non-final data frame and its final continuation.
    in_message: bool,
    /// Decoding a client's frames (masked) rather than a server's.
    from_client: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            header: [0; MAX_HEADER_LEN],
            header_have: 0,
            remaining: 0,
            mask: [0; 4],
            offset: 0,
            control: None,
            control_buf: [0; 125],
            control_have: 0,
            in_message: false,
            from_client: true,
        }
    }
}

impl Decoder {
    /// A decoder for frames a server sends (unmasked), for the tunnel client.
    pub fn for_server_frames() -> Decoder {
        Decoder {
            from_client: false,
            ..Decoder::default()
        }
    }

    /// The last complete control frame's payload (a Ping's, to echo).
    pub fn control_payload(&self) -> &[u8] {
        &self.control_buf[..self.control_have]
    }

    /// Decodes from `chunk[*pos..]`, unmasking data in place, and returns the
    /// next piece, or `None` when the chunk is used up. Call until `None`.
    pub fn next(
        &mut self,
        chunk: &mut [u8],
        pos: &mut usize,
    ) -> Result<Option<Piece>, DecodeError> {
        loop {
            if self.remaining > 0 {
                let avail = chunk.len() - *pos;
                if avail == 0 {
                    return Ok(None);
                }
                let take = self.remaining.min(avail as u64) as usize;
                let (start, end) = (*pos, *pos + take);
                if self.from_client {
                    apply_mask(&mut chunk[start..end], self.mask, self.offset);
                }
                self.offset += take;
                self.remaining -= take as u64;
                *pos = end;
                match self.control {
                    None => return Ok(Some(Piece::Data { start, end })),
                    Some(op) => {
                        let have = self.control_have;
                        self.control_buf[have..have + take].copy_from_slice(&chunk[start..end]);
                        self.control_have += take;
                        if self.remaining == 0 {
                            return Ok(Some(self.finish_control(op)));
                        }
                    }
                }
                continue;
            }
            let avail = chunk.len() - *pos;
            if avail == 0 {
                return Ok(None);
            }
            let take = (MAX_HEADER_LEN - self.header_have).min(avail);
            let have = self.header_have;
            self.header[have..have + take].copy_from_slice(&chunk[*pos..*pos + take]);
            let Some(h) = parse_header(&self.header[..have + take])? else {
                self.header_have += take;
                *pos += take;
                continue;
            };
            *pos += h.header_len - have;
            self.header_have = 0;
            self.mask = match (h.mask, self.from_client) {
                (Some(m), true) => m,
                (None, false) => [0; 4],
                (None, true) => return Err(DecodeError::Unmasked),
                (Some(_), false) => return Err(DecodeError::Masked),
            };
            self.offset = 0;
            self.remaining = h.payload_len;
            if h.is_control() {
                self.control = Some(h.opcode);
                self.control_have = 0;
                if h.payload_len == 0 {
                    return Ok(Some(self.finish_control(h.opcode)));
                }
                continue;
            }
            self.control = None;
            match (h.opcode, self.in_message) {
                (opcode::CONTINUATION, false) => return Err(DecodeError::StrayContinuation),
                (opcode::CONTINUATION, true) => {}
                (_, true) => return Err(DecodeError::NestedMessage),
                (_, false) => {}
            }
            self.in_message = !h.fin;
        }
    }

    fn finish_control(&mut self, op: u8) -> Piece {
        self.control = None;
        match op {
            opcode::PING => Piece::Ping,
            opcode::PONG => Piece::Pong,
            _ => {
                let p = self.control_payload();
                let code = match p {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 1005,
                };
                Piece::Close(code)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame::build_frame;

    const MASK: [u8; 4] = [1, 2, 3, 4];

    fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = build_frame(op, payload, Some(MASK));
        if !fin {
            f[0] &= 0x7f;
        }
        f
    }

    /// Decodes `stream` cut at `cuts`; returns (data bytes, control pieces).
    fn decode(stream: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, Vec<String>), DecodeError> {
        let mut d = Decoder::default();
        let mut data = Vec::new();
        let mut ctl = Vec::new();
        let mut bounds = vec![0];
        bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
        bounds.push(stream.len());
        bounds.dedup();
        for w in bounds.windows(2) {
            let mut chunk = stream[w[0]..w[1]].to_vec();
            let mut pos = 0;
            while let Some(p) = d.next(&mut chunk, &mut pos)? {
                match p {
                    Piece::Data { start, end } => data.extend_from_slice(&chunk[start..end]),
                    Piece::Ping => ctl.push(format!("ping {:?}", d.control_payload())),
                    Piece::Pong => ctl.push("pong".into()),
                    Piece::Close(c) => ctl.push(format!("close {c}")),
                }
            }
        }
        Ok((data, ctl))
    }

    #[test]
    fn data_and_controls_survive_every_split() {
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut stream = frame(true, opcode::BINARY, b"hello ");
        stream.extend(frame(false, opcode::BINARY, b"frag"));
        stream.extend(frame(true, opcode::PING, b"p!"));
        stream.extend(frame(false, opcode::CONTINUATION, b"ment"));
        stream.extend(frame(true, opcode::CONTINUATION, b"ed "));
        stream.extend(frame(true, opcode::BINARY, &big));
        stream.extend(frame(true, opcode::PONG, b""));
        stream.extend(frame(true, opcode::CLOSE, &1000u16.to_be_bytes()));
        let mut want = b"hello fragmented ".to_vec();
        want.extend_from_slice(&big);
        let ctl = vec!["ping [112, 33]", "pong", "close 1000"];
        for cut in (0..stream.len()).step_by(97).chain(0..40) {
            let (data, c) = decode(&stream, &[cut, cut + 1, cut + 3]).unwrap();
            assert!(data == want, "cut {cut}");
            assert_eq!(c, ctl, "cut {cut}");
        }
    }

    #[test]
    fn protocol_errors() {
        let unmasked = build_frame(opcode::BINARY, b"x", None);
        assert_eq!(decode(&unmasked, &[]).unwrap_err(), DecodeError::Unmasked);
        let stray = frame(true, opcode::CONTINUATION, b"x");
        assert_eq!(
            decode(&stray, &[]).unwrap_err(),
            DecodeError::StrayContinuation
        );
        let mut nested = frame(false, opcode::BINARY, b"a");
        nested.extend(frame(true, opcode::TEXT, b"b"));
        assert_eq!(
            decode(&nested, &[]).unwrap_err(),
            DecodeError::NestedMessage
        );
        let mut rsv = frame(true, opcode::BINARY, b"x");
        rsv[0] |= 0x40;
        assert!(matches!(
            decode(&rsv, &[]).unwrap_err(),
            DecodeError::Frame(_)
        ));
        let empty_close = frame(true, opcode::CLOSE, b"");
        assert_eq!(decode(&empty_close, &[]).unwrap().1, vec!["close 1005"]);
        let mut d = Decoder::for_server_frames();
        let mut server = build_frame(opcode::BINARY, b"plain", None);
        let mut pos = 0;
        assert_eq!(
            d.next(&mut server, &mut pos),
            Ok(Some(Piece::Data { start: 2, end: 7 }))
        );
        assert_eq!(&server[2..7], b"plain");
        let mut masked = frame(true, opcode::BINARY, b"x");
        let mut pos = 0;
        let e = Decoder::for_server_frames().next(&mut masked, &mut pos);
        assert_eq!(e, Err(DecodeError::Masked));
    }
}
