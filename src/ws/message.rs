//! The one WebSocket message reader: fed bytes (any split), it yields whole
//! messages and control frames, with every rule of RFC 6455 an endpoint owes
//! its peer: reassembly of fragments, control frames interleaved, UTF-8 of
//! text checked across fragments (failing at the first impossible byte),
//! Close codes and reasons checked, a size limit, mask rules per role.
//! Errors carry the Close code that answers them (docs/conformance.md).
//!
//! Sans-I/O, like quinn-proto: bytes in, messages out; the caller owns the
//! socket and answers pings and closes. Used by the relay's first-message
//! auth, the demo app, the hub's client sessions (through `fanout`), the
//! tunnel bridge (`Mode::Stream`) and `loadgen`. Outgoing frames are built
//! with [`super::frame`].
//!
//! A message that arrives as one frame inside one chunk is handed out as a
//! slice of that chunk, not copied. Must not: allocate per message once warm
//! (one assembly buffer, reused), buffer more than one message, or buffer
//! any of an oversized one.

use super::decoder::{DecodeError, Decoder, Event, Role};
use super::frame::opcode;
use super::validate::{check_close, BadClose, Utf8Validator};

/// How data messages are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Whole messages up to the limit; a larger one is an error (Close 1009).
    Whole,
    /// Whole messages up to the limit; a larger one is dropped as it streams
    /// in (never buffered) and reported as [`Message::TooLarge`].
    SkipOversize,
    /// Data frames pass through as pieces of the caller's buffer
    /// ([`Message::DataFrame`], then [`Message::Data`]); control frames still
    /// come whole. No limit: nothing is buffered.
    Stream,
}

/// One thing a peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A whole text message (valid UTF-8).
    Text(&'a [u8]),
    /// A whole binary message.
    Binary(&'a [u8]),
    /// `Mode::SkipOversize`: a message over the limit ended; it was dropped.
    TooLarge,
    /// `Mode::Stream`: a data frame starts (`opcode` is the frame's own).
    DataFrame {
        opcode: u8,
        fin: bool,
        len: u64,
    },
    /// `Mode::Stream`: payload of the current data frame, unmasked in place:
    /// `chunk[start..end]` of the chunk just passed in.
    Data {
        start: usize,
        end: usize,
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid Close frame: its code (none if empty) and whole payload.
    Close {
        code: Option<u16>,
        payload: &'a [u8],
    },
}

/// A message is ready: a token from [`MessageReader::advance`] that keeps
/// no borrow, for [`MessageReader::message`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    Text(Span),
    Binary(Span),
    TooLarge,
    DataFrame { opcode: u8, fin: bool, len: u64 },
    Data { start: usize, end: usize },
    Ping,
    Pong,
    Close(Option<u16>),
}

/// Where a ready message lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// In the caller's chunk, uncopied.
    Chunk(usize, usize),
    /// The first bytes of the reader's own buffer.
    Buf(usize),
}

/// Why the peer's stream is refused; [`ReadError::close_code`] answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] DecodeError),
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    #[error(transparent)]
    BadClose(#[from] BadClose),
    #[error("message larger than {limit} bytes")]
    TooLarge { limit: usize },
}

impl ReadError {
    /// The Close code the peer gets: 1002 protocol error, 1007 invalid
    /// payload data, 1009 message too big.
    pub fn close_code(&self) -> u16 {
        match self {
            ReadError::Frame(_) => 1002,
            ReadError::InvalidUtf8 => 1007,
            ReadError::BadClose(b) => b.close_code(),
            ReadError::TooLarge { .. } => 1009,
        }
    }
}

#[derive(Debug)]
pub struct MessageReader {
    dec: Decoder,
    /// The data message being assembled; past `data_len`, the payload of
    /// the control frame being read.
    buf: Vec<u8>,
    data_len: usize,
    /// Opcode of the data message in progress (text or binary).
    message: Option<u8>,
    /// The current frame: opcode, FIN and payload length.
    frame: (u8, bool, u64),
    /// The current frame is a whole message lying in the caller's chunk,
    /// ending at `*pos` (handed out from there, without a copy).
    in_chunk: bool,
    /// Something was handed out of `buf`: trim it to `data_len` before
    /// reading on.
    trim: bool,
    utf8: Utf8Validator,
    limit: usize,
    mode: Mode,
    /// The message in progress went over the limit: its payload is dropped.
    skipping: bool,
}

impl MessageReader {
    pub fn new(role: Role, mode: Mode, limit: usize) -> MessageReader {
        MessageReader {
            dec: Decoder::new(role),
            buf: Vec::new(),
            data_len: 0,
            message: None,
            frame: (0, true, 0),
            in_chunk: false,
            trim: false,
            utf8: Utf8Validator::new(),
            limit,
            mode,
            skipping: false,
        }
    }

    /// Reads from `chunk[*pos..]` (unmasking in place) and returns the next
    /// message, or `None` when the chunk is used up. `*pos` stops right after
    /// the frame that completed a message, so bytes behind it stay unread.
    /// After an error nothing more is read.
    pub fn next<'a>(
        &'a mut self,
        chunk: &'a mut [u8],
        pos: &mut usize,
    ) -> Result<Option<Message<'a>>, ReadError> {
        let ready = self.advance(chunk, pos)?;
        Ok(ready.map(|r| self.message(r, chunk)))
    }

    /// [`MessageReader::next`] in two steps, for a caller that reads more
    /// into the same buffer when nothing is ready: `advance` keeps no borrow,
    /// [`MessageReader::message`] then shows what is ready.
    pub fn advance(
        &mut self,
        chunk: &mut [u8],
        pos: &mut usize,
    ) -> Result<Option<Ready>, ReadError> {
        if std::mem::take(&mut self.trim) {
            self.buf.truncate(self.data_len);
        }
        loop {
            let Some(event) = self.dec.next(chunk, pos)? else {
                return Ok(None);
            };
            let (op, fin, len) = self.frame;
            let control = op & 0x8 != 0;
            match event {
                Event::Header(h) => {
                    self.frame = (h.opcode, h.fin, h.payload_len);
                    if h.is_control() {
                        continue;
                    }
                    if h.opcode != opcode::CONTINUATION {
                        self.message = Some(h.opcode);
                    }
                    if self.mode == Mode::Stream {
                        return Ok(Some(Ready::DataFrame {
                            opcode: h.opcode,
                            fin: h.fin,
                            len: h.payload_len,
                        }));
                    }
                    self.admit(h.payload_len)?;
                }
                Event::Payload { start, end } => {
                    let bytes = &chunk[start..end];
                    if control {
                        self.buf.extend_from_slice(bytes);
                        continue;
                    }
                    if self.skipping {
                        continue;
                    }
                    if self.message == Some(opcode::TEXT) {
                        self.utf8.feed(bytes).map_err(|_| ReadError::InvalidUtf8)?;
                        if fin && self.dec.payload_done() {
                            // The message ends with this piece: judge it
                            // before a stream hands the piece on (again at
                            // `End`, where it is a no-op).
                            self.utf8.finish().map_err(|_| ReadError::InvalidUtf8)?;
                        }
                    }
                    if self.mode == Mode::Stream {
                        return Ok(Some(Ready::Data { start, end }));
                    }
                    if fin && op != opcode::CONTINUATION && bytes.len() as u64 == len {
                        self.in_chunk = true;
                        continue;
                    }
                    self.buf.extend_from_slice(bytes);
                    self.data_len += bytes.len();
                }
                Event::End if control => {
                    self.trim = true;
                    return Ok(Some(match op {
                        opcode::PING => Ready::Ping,
                        opcode::PONG => Ready::Pong,
                        _ => Ready::Close(check_close(&self.buf[self.data_len..])?),
                    }));
                }
                Event::End if !fin => {}
                Event::End => {
                    let kind = self.message.take();
                    if std::mem::take(&mut self.skipping) {
                        return Ok(Some(Ready::TooLarge));
                    }
                    if kind == Some(opcode::TEXT) {
                        self.utf8.finish().map_err(|_| ReadError::InvalidUtf8)?;
                    }
                    if self.mode == Mode::Stream {
                        continue;
                    }
                    let at = if std::mem::take(&mut self.in_chunk) {
                        Span::Chunk(*pos - len as usize, *pos)
                    } else {
                        self.trim = true;
                        Span::Buf(std::mem::take(&mut self.data_len))
                    };
                    return Ok(Some(match kind {
                        Some(opcode::TEXT) => Ready::Text(at),
                        _ => Ready::Binary(at),
                    }));
                }
            }
        }
    }

    /// What `ready` (from [`MessageReader::advance`] on this `chunk`) holds.
    pub fn message<'a>(&'a self, ready: Ready, chunk: &'a [u8]) -> Message<'a> {
        let span = |at| match at {
            Span::Chunk(start, end) => &chunk[start..end],
            Span::Buf(n) => &self.buf[..n],
        };
        let control = &self.buf[self.data_len..];
        match ready {
            Ready::Text(at) => Message::Text(span(at)),
            Ready::Binary(at) => Message::Binary(span(at)),
            Ready::TooLarge => Message::TooLarge,
            Ready::DataFrame { opcode, fin, len } => Message::DataFrame { opcode, fin, len },
            Ready::Data { start, end } => Message::Data { start, end },
            Ready::Ping => Message::Ping(control),
            Ready::Pong => Message::Pong(control),
            Ready::Close(code) => Message::Close {
                code,
                payload: control,
            },
        }
    }

    /// A data frame of `len` bytes joins the message: within the limit, or
    /// refused, or (`SkipOversize`) the whole message is dropped.
    fn admit(&mut self, len: u64) -> Result<(), ReadError> {
        if self.skipping || (self.data_len as u64).saturating_add(len) <= self.limit as u64 {
            return Ok(());
        }
        if self.mode == Mode::Whole {
            return Err(ReadError::TooLarge { limit: self.limit });
        }
        self.skipping = true;
        self.data_len = 0;
        self.buf.clear();
        let _ = self.utf8.finish();
        Ok(())
    }

    /// Between messages (and frames): nothing of the peer's is held, so the
    /// reader may be dropped and made anew (the hub's idle clients hold none).
    pub fn is_idle(&self) -> bool {
        self.message.is_none() && self.dec.at_frame_boundary()
    }
}

#[cfg(test)]
mod tests;
