//! Client-side framing state, kept apart from the I/O object so a split
//! connection can read and write concurrently: [`FrameReader`] turns bytes
//! into events (reassembling fragments, surfacing pings, closes), and
//! [`FrameWriter`] masks and (optionally) fragments outgoing messages into a
//! reused buffer. Neither allocates per message once warmed up.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::clock::now_ns;
use crate::rng::Rng;
use crate::ws::frame::{self, mask_in_place, parse_header, write_header, FrameError, OpCode};

const INITIAL_BUF: usize = 64 * 1024;
const MIN_READ: usize = 4096;

/// Errors while reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed by the peer without a close frame")]
    Eof,
    #[error("protocol violation: {0}")]
    Frame(#[from] FrameError),
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    #[error("message larger than {0} bytes")]
    MessageTooLarge(usize),
}

/// One thing received.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete data message (fragments already joined), with the time
    /// the read that completed it returned.
    Message {
        opcode: OpCode,
        payload: &'a [u8],
        arrived_ns: u64,
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    Close {
        code: Option<u16>,
        reason: &'a [u8],
    },
}

/// Incoming side of a client connection (server frames are never masked).
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    msg: Vec<u8>,
    msg_opcode: Option<OpCode>,
    msg_delivered: bool,
    max_message: usize,
    last_read_ns: u64,
}

impl FrameReader {
    /// `initial`: bytes that arrived with the handshake response.
    pub fn new(mut initial: Vec<u8>, max_message: usize) -> Self {
        if initial.capacity() < INITIAL_BUF {
            initial.reserve(INITIAL_BUF - initial.len());
        }
        Self {
            buf: initial,
            start: 0,
            msg: Vec::new(),
            msg_opcode: None,
            msg_delivered: false,
            max_message,
            last_read_ns: now_ns(),
        }
    }

    /// When the read that delivered the most recent bytes completed: the
    /// arrival time of every message parsed from them.
    pub fn last_read_ns(&self) -> u64 {
        self.last_read_ns
    }

    /// Reads until one event is complete.
    pub async fn next<R: AsyncReadRent>(&mut self, io: &mut R) -> Result<Event<'_>, WsError> {
        if self.msg_delivered {
            self.msg.clear();
            self.msg_delivered = false;
        }
        loop {
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            let header = parse_header(&self.buf[self.start..], self.max_message)?;
            let h = match header {
                Some(h) if self.buf.len() - self.start >= h.frame_len() => h,
                Some(h) => {
                    self.fill(io, h.frame_len()).await?;
                    continue;
                }
                None => {
                    self.fill(io, frame::MAX_HEADER).await?;
                    continue;
                }
            };
            if h.mask.is_some() {
                return Err(FrameError::MaskedFromServer.into());
            }
            let p0 = self.start + h.header_len;
            let p1 = p0 + h.payload_len;
            self.start = p1;
            match h.opcode {
                OpCode::Ping => return Ok(Event::Ping(&self.buf[p0..p1])),
                OpCode::Pong => return Ok(Event::Pong(&self.buf[p0..p1])),
                OpCode::Close => {
                    let p = &self.buf[p0..p1];
                    let code = (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
                    let reason = if p.len() > 2 { &p[2..] } else { &[][..] };
                    return Ok(Event::Close { code, reason });
                }
                OpCode::Text | OpCode::Binary => {
                    if self.msg_opcode.is_some() {
                        return Err(WsError::Protocol("data frame inside a fragmented message"));
                    }
                    if h.fin {
                        return Ok(Event::Message {
                            opcode: h.opcode,
                            payload: &self.buf[p0..p1],
                            arrived_ns: self.last_read_ns,
                        });
                    }
                    self.msg_opcode = Some(h.opcode);
                    self.msg.extend_from_slice(&self.buf[p0..p1]);
                }
                OpCode::Continuation => {
                    let Some(opcode) = self.msg_opcode else {
                        return Err(WsError::Protocol("continuation frame without a message"));
                    };
                    if self.msg.len() + h.payload_len > self.max_message {
                        return Err(WsError::MessageTooLarge(self.max_message));
                    }
                    self.msg.extend_from_slice(&self.buf[p0..p1]);
                    if h.fin {
                        self.msg_opcode = None;
                        self.msg_delivered = true;
                        return Ok(Event::Message {
                            opcode,
                            payload: &self.msg,
                            arrived_ns: self.last_read_ns,
                        });
                    }
                }
            }
        }
    }

    /// One read, making room for a frame of `need` bytes from `start`.
    async fn fill<R: AsyncReadRent>(&mut self, io: &mut R, need: usize) -> Result<(), WsError> {
        let pending = self.buf.len() - self.start;
        let cap = self.buf.capacity();
        if self.start > 0 && (cap - self.start < need || cap - self.buf.len() < MIN_READ) {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(pending);
            self.start = 0;
        }
        let want = need.max(pending + MIN_READ);
        if self.buf.capacity() < self.start + want {
            self.buf.reserve(self.start + want - self.buf.len());
        }
        let owned = std::mem::take(&mut self.buf);
        let (len, cap) = (owned.len(), owned.capacity());
        let (res, slice) = io.read(owned.slice_mut(len..cap)).await;
        self.buf = slice.into_inner();
        self.last_read_ns = now_ns();
        match res {
            Ok(0) => Err(WsError::Eof),
            Ok(_) => Ok(()),
            Err(e) => Err(WsError::Io(e)),
        }
    }
}

/// Outgoing side of a client connection: every frame masked with a fresh key.
#[derive(Debug)]
pub struct FrameWriter {
    buf: Vec<u8>,
    rng: Rng,
    /// Largest payload per frame; 0 = never fragment.
    fragment: usize,
}

impl FrameWriter {
    pub fn new(fragment: usize) -> Self {
        Self {
            buf: Vec::with_capacity(INITIAL_BUF),
            rng: Rng::new(),
            fragment,
        }
    }

    /// Bytes queued and not yet flushed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Queues one data message (split into frames of `fragment` bytes if set).
    pub fn push_message(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.fragment == 0 || payload.len() <= self.fragment {
            self.push_frame(true, opcode, payload);
            return;
        }
        let frames = payload.len().div_ceil(self.fragment);
        for (i, chunk) in payload.chunks(self.fragment).enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            self.push_frame(i + 1 == frames, op, chunk);
        }
    }

    /// Queues a control frame (ping, pong).
    pub fn push_control(&mut self, opcode: OpCode, payload: &[u8]) {
        debug_assert!(opcode.is_control() && payload.len() <= 125);
        self.push_frame(true, opcode, payload);
    }

    /// Queues a close frame with a status code.
    pub fn push_close(&mut self, code: u16, reason: &str) {
        let mut p = [0u8; 125];
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        p[..2].copy_from_slice(&code.to_be_bytes());
        p[2..2 + reason.len()].copy_from_slice(reason);
        self.push_frame(true, OpCode::Close, &p[..2 + reason.len()]);
    }

    fn push_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        let key = self.rng.mask_key();
        write_header(&mut self.buf, fin, opcode, Some(key), payload.len());
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        mask_in_place(&mut self.buf[start..], key);
    }

    /// Writes everything queued.
    pub async fn flush<W: AsyncWriteRent>(&mut self, io: &mut W) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let owned = std::mem::take(&mut self.buf);
        let (res, mut owned) = io.write_all(owned).await;
        owned.clear();
        self.buf = owned;
        res.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks client frames as a server would, returning (fin, opcode, payload).
    fn server_view(mut bytes: &[u8]) -> Vec<(bool, OpCode, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let h = parse_header(bytes, usize::MAX).unwrap().unwrap();
            let mut p = bytes[h.header_len..h.frame_len()].to_vec();
            mask_in_place(&mut p, h.mask.expect("client frames are masked"));
            out.push((h.fin, h.opcode, p));
            bytes = &bytes[h.frame_len()..];
        }
        out
    }

    #[test]
    fn fragments_and_masks() {
        let mut w = FrameWriter::new(4);
        w.push_message(OpCode::Binary, b"abcdefghij");
        let frames = server_view(&w.buf);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (false, OpCode::Binary, b"abcd".to_vec()));
        assert_eq!(frames[1], (false, OpCode::Continuation, b"efgh".to_vec()));
        assert_eq!(frames[2], (true, OpCode::Continuation, b"ij".to_vec()));
    }

    #[test]
    fn reader_joins_fragments_and_surfaces_control_frames() {
        let mut wire = Vec::new();
        write_header(&mut wire, false, OpCode::Binary, None, 3);
        wire.extend_from_slice(b"abc");
        write_header(&mut wire, true, OpCode::Ping, None, 2);
        wire.extend_from_slice(b"hi");
        write_header(&mut wire, true, OpCode::Continuation, None, 2);
        wire.extend_from_slice(b"de");
        write_header(&mut wire, true, OpCode::Close, None, 2);
        wire.extend_from_slice(&1000u16.to_be_bytes());
        let mut r = FrameReader::new(wire, 1 << 20);
        let mut empty: &[u8] = &[];
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(
                r.next(&mut empty).await.unwrap(),
                Event::Ping(b"hi")
            ));
            match r.next(&mut empty).await.unwrap() {
                Event::Message {
                    opcode, payload, ..
                } => {
                    assert_eq!((opcode, payload), (OpCode::Binary, &b"abcde"[..]))
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                r.next(&mut empty).await.unwrap(),
                Event::Close {
                    code: Some(1000),
                    ..
                }
            ));
            assert!(matches!(r.next(&mut empty).await, Err(WsError::Eof)));
        });
    }
}
