//! Client-side framing state, kept apart from the I/O object so a split
//! connection can read and write concurrently: [`FrameReader`] turns bytes
//! into events (reassembling fragments, surfacing pings, closes), and
//! [`FrameWriter`] masks and (optionally) fragments outgoing messages into a
//! reused buffer. Neither allocates per message once warmed up.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ws_relay_core::ws::decoder::Role;
use ws_relay_core::ws::frame::{apply_mask, opcode, parse_header, push_header, MAX_HEADER_LEN};
use ws_relay_core::ws::message::{Message, MessageReader, Mode, ReadError};

use crate::clock::now_ns;
use crate::rng::Rng;

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
    Protocol(#[from] ReadError),
}

/// One thing received.
#[derive(Debug)]
pub enum Event<'a> {
    /// A complete data message (fragments already joined), with the time
    /// the read that completed it returned.
    Message {
        opcode: u8,
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

/// Incoming side of a client connection: the engine's message reader
/// (server frames, unmasked) over a read buffer that always holds whole
/// frames, so a message that arrives as one frame is handed out uncopied.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    ws: MessageReader,
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
            ws: MessageReader::new(Role::FromServer, Mode::Whole, max_message),
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
        loop {
            if self.start == self.buf.len() {
                self.buf.clear();
                self.start = 0;
            }
            // Wait for the whole frame (within the limit; a larger one goes
            // to the reader, which refuses it).
            let have = self.buf.len() - self.start;
            let need = match parse_header(&self.buf[self.start..]) {
                Ok(None) => Some(MAX_HEADER_LEN),
                Ok(Some(h)) if h.frame_len() > have as u64 => {
                    (h.payload_len <= self.max_message as u64).then(|| h.frame_len() as usize)
                }
                _ => None,
            };
            if let Some(need) = need {
                self.fill(io, need).await?;
                continue;
            }
            let mut pos = self.start;
            let ready = self.ws.advance(&mut self.buf, &mut pos)?;
            self.start = pos;
            let Some(ready) = ready else { continue };
            let arrived_ns = self.last_read_ns;
            return Ok(match self.ws.message(ready, &self.buf) {
                Message::Text(payload) => Event::Message {
                    opcode: opcode::TEXT,
                    payload,
                    arrived_ns,
                },
                Message::Binary(payload) => Event::Message {
                    opcode: opcode::BINARY,
                    payload,
                    arrived_ns,
                },
                Message::Ping(p) => Event::Ping(p),
                Message::Close { code, payload } => Event::Close {
                    code,
                    reason: payload.get(2..).unwrap_or_default(),
                },
                Message::Pong(p) => Event::Pong(p),
                // `Mode::Whole` yields nothing else.
                _ => Event::Pong(&[]),
            });
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
    pub fn push_message(&mut self, opcode: u8, payload: &[u8]) {
        if self.fragment == 0 || payload.len() <= self.fragment {
            self.push_frame(true, opcode, payload);
            return;
        }
        let frames = payload.len().div_ceil(self.fragment);
        for (i, chunk) in payload.chunks(self.fragment).enumerate() {
            let op = if i == 0 { opcode } else { opcode::CONTINUATION };
            self.push_frame(i + 1 == frames, op, chunk);
        }
    }

    /// Queues a control frame (ping, pong).
    pub fn push_control(&mut self, opcode: u8, payload: &[u8]) {
        debug_assert!(opcode & 0x8 != 0 && payload.len() <= 125);
        self.push_frame(true, opcode, payload);
    }

    /// Queues a close frame with a status code.
    pub fn push_close(&mut self, code: u16, reason: &str) {
        let mut p = [0u8; 125];
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        p[..2].copy_from_slice(&code.to_be_bytes());
        p[2..2 + reason.len()].copy_from_slice(reason);
        self.push_frame(true, opcode::CLOSE, &p[..2 + reason.len()]);
    }

    fn push_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let key = self.rng.mask_key();
        push_header(&mut self.buf, fin, opcode, payload.len() as u64, Some(key));
        let start = self.buf.len();
        self.buf.extend_from_slice(payload);
        apply_mask(&mut self.buf[start..], key, 0);
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
    fn server_view(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let h = parse_header(bytes).unwrap().unwrap();
            let end = h.frame_len() as usize;
            let mut p = bytes[h.header_len..end].to_vec();
            apply_mask(&mut p, h.mask.expect("client frames are masked"), 0);
            out.push((h.fin, h.opcode, p));
            bytes = &bytes[end..];
        }
        out
    }

    #[test]
    fn fragments_and_masks() {
        let mut w = FrameWriter::new(4);
        w.push_message(opcode::BINARY, b"abcdefghij");
        let frames = server_view(&w.buf);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (false, opcode::BINARY, b"abcd".to_vec()));
        assert_eq!(frames[1], (false, opcode::CONTINUATION, b"efgh".to_vec()));
        assert_eq!(frames[2], (true, opcode::CONTINUATION, b"ij".to_vec()));
    }

    #[test]
    fn reader_joins_fragments_and_surfaces_control_frames() {
        let mut wire = Vec::new();
        push_header(&mut wire, false, opcode::BINARY, 3, None);
        wire.extend_from_slice(b"abc");
        push_header(&mut wire, true, opcode::PING, 2, None);
        wire.extend_from_slice(b"hi");
        push_header(&mut wire, true, opcode::CONTINUATION, 2, None);
        wire.extend_from_slice(b"de");
        push_header(&mut wire, true, opcode::CLOSE, 2, None);
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
                    assert_eq!((opcode, payload), (opcode::BINARY, &b"abcde"[..]))
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
