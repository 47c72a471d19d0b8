//! The streaming frame decoder every WebSocket reader in the engine sits on:
//! fed bytes in whatever pieces reads produce, it yields each frame's header,
//! its payload as ranges of the caller's buffer (unmasked in place), and the
//! frame's end. Sans-I/O: no socket, no allocation, no payload buffering.
//!
//! Three roles. `FromClient` and `FromServer` judge a peer's stream (mask
//! rules, continuation order) for the readers in [`super::message`].
//! `Passthrough` is the relay's data path: headers only, payload bytes never
//! touched, message order not judged (that is the peers' business), so the
//! relay knows where frames begin (may it inject a Close?) and whether a
//! Close went by. Must not: look at payload in `Passthrough`, or keep more
//! than one frame header of state.

use super::frame::{apply_mask, opcode, parse_header, FrameError, FrameHeader, MAX_HEADER_LEN};

/// Whose frames a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A client's frames: masked, unmasked here.
    FromClient,
    /// A server's frames: unmasked.
    FromServer,
    /// A relayed stream: headers followed, order not judged. `observe`
    /// leaves the payload untouched; `next` unmasks what is masked (for an
    /// observer reading either side's frames, such as a test's tap).
    Passthrough,
}

/// Why a peer's stream is not acceptable (answered with Close 1002).
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

/// One thing found in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A frame starts; its payload follows as `Payload` pieces, then `End`.
    Header(FrameHeader),
    /// Payload bytes of the current frame, unmasked: `chunk[start..end]`.
    Payload { start: usize, end: usize },
    /// The current frame's payload is complete.
    End,
}

/// A payload piece before unmasking, with the mask phase it starts at.
enum Step {
    Event(Event),
    Payload { start: usize, end: usize, phase: u8 },
}

#[derive(Debug, Clone)]
pub struct Decoder {
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    header: [u8; MAX_HEADER_LEN],
    header_have: u8,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame seen so far, mod 4 (the mask phase).
    phase: u8,
    /// A header was reported and its `End` not yet.
    frame_open: bool,
    /// Between a non-final data frame and its final continuation.
    in_message: bool,
    saw_close: bool,
    /// The stream stopped parsing; nothing more is decoded.
    lost: bool,
    role: Role,
    /// An extension was negotiated: RSV bits are its business.
    allow_reserved: bool,
}

impl Decoder {
    pub fn new(role: Role) -> Decoder {
        Decoder {
            remaining: 0,
            header: [0; MAX_HEADER_LEN],
            header_have: 0,
            mask: None,
            phase: 0,
            frame_open: false,
            in_message: false,
            saw_close: false,
            lost: false,
            role,
            allow_reserved: false,
        }
    }

    /// The relay's view of a forwarded stream.
    pub fn passthrough() -> Decoder {
        Decoder::new(Role::Passthrough)
    }

    /// Reserved bits are legal: the ends negotiated an extension (such as
    /// `permessage-deflate`, which sets RSV1).
    pub fn allowing_reserved_bits(mut self) -> Decoder {
        self.allow_reserved = true;
        self
    }

    /// Decodes from `chunk[*pos..]`, unmasking payload in place, and returns
    /// the next event, or `None` when the chunk is used up. Call until `None`
    /// or an error; after an error the decoder yields nothing more.
    pub fn next(
        &mut self,
        chunk: &mut [u8],
        pos: &mut usize,
    ) -> Result<Option<Event>, DecodeError> {
        match self.step(chunk, pos)? {
            None => Ok(None),
            Some(Step::Event(e)) => Ok(Some(e)),
            Some(Step::Payload { start, end, phase }) => {
                if let Some(m) = self.mask {
                    apply_mask(&mut chunk[start..end], m, usize::from(phase));
                }
                Ok(Some(Event::Payload { start, end }))
            }
        }
    }

    /// Follows `bytes` without touching them (the relay's data path): a few
    /// comparisons per frame, none per payload byte.
    pub fn observe(&mut self, bytes: &[u8]) {
        let mut pos = 0;
        while !self.lost && pos < bytes.len() {
            if self.remaining > 0 {
                let skip = self.remaining.min((bytes.len() - pos) as u64);
                self.remaining -= skip;
                pos += skip as usize;
                continue;
            }
            // `header` sets `remaining` for the frame it finds.
            if !matches!(self.header(bytes, &mut pos), Ok(Some(_))) {
                return;
            }
        }
    }

    /// True when a frame of our own may go in: between frames of a stream
    /// that still parses. (Control frames are legal between fragments.)
    pub fn at_frame_boundary(&self) -> bool {
        !self.lost && self.remaining == 0 && self.header_have == 0
    }

    /// The current frame's payload has all been handed out.
    pub fn payload_done(&self) -> bool {
        self.remaining == 0
    }

    /// A Close frame's header went by.
    pub fn saw_close(&self) -> bool {
        self.saw_close
    }

    fn step(&mut self, chunk: &[u8], pos: &mut usize) -> Result<Option<Step>, DecodeError> {
        let avail = chunk.len() - *pos;
        if self.lost {
            return Ok(None);
        }
        if self.remaining > 0 {
            if avail == 0 {
                return Ok(None);
            }
            let take = self.remaining.min(avail as u64) as usize;
            let (start, end) = (*pos, *pos + take);
            let phase = self.phase;
            self.phase = ((usize::from(phase) + take) & 3) as u8;
            self.remaining -= take as u64;
            *pos = end;
            return Ok(Some(Step::Payload { start, end, phase }));
        }
        if self.frame_open {
            self.frame_open = false;
            return Ok(Some(Step::Event(Event::End)));
        }
        if avail == 0 {
            return Ok(None);
        }
        let Some(h) = self.header(chunk, pos)? else {
            return Ok(None);
        };
        self.phase = 0;
        self.frame_open = true;
        Ok(Some(Step::Event(Event::Header(h))))
    }

    /// Reads the next frame header from `chunk[*pos..]` (keeping a partial
    /// one across calls) and judges it; sets `remaining`.
    #[inline(always)]
    fn header(
        &mut self,
        chunk: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, DecodeError> {
        let have = usize::from(self.header_have);
        // The usual case: the whole header is in this chunk. Parse it where
        // it lies; only a header split across reads (or one whose RSV bits
        // must be masked off) goes through the copy below.
        if have == 0 && !self.allow_reserved {
            match parse_header(&chunk[*pos..]) {
                Ok(Some(h)) => {
                    *pos += h.header_len;
                    return self.accept(h);
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        let take = (MAX_HEADER_LEN - have).min(chunk.len() - *pos);
        self.header[have..have + take].copy_from_slice(&chunk[*pos..*pos + take]);
        if self.allow_reserved {
            // Only our copy: the caller's bytes are untouched.
            self.header[0] &= !0x70;
        }
        let h = match parse_header(&self.header[..have + take]) {
            Ok(Some(h)) => h,
            Ok(None) => {
                self.header_have += take as u8;
                *pos += take;
                return Ok(None);
            }
            Err(e) => return Err(self.fail(e.into())),
        };
        *pos += h.header_len - have;
        self.header_have = 0;
        self.accept(h)
    }

    /// A whole header was read: judge it and start its payload.
    fn accept(&mut self, h: FrameHeader) -> Result<Option<FrameHeader>, DecodeError> {
        if let Err(e) = self.judge(&h) {
            return Err(self.fail(e));
        }
        self.remaining = h.payload_len;
        Ok(Some(h))
    }

    /// Mask and order rules for the role; records what the frame means.
    #[inline(always)]
    fn judge(&mut self, h: &FrameHeader) -> Result<(), DecodeError> {
        if h.opcode == opcode::CLOSE {
            self.saw_close = true;
        }
        // `observe` never unmasks; `next` shows a passthrough observer
        // plain bytes too.
        self.mask = h.mask;
        match (self.role, h.mask) {
            (Role::Passthrough, _) => return Ok(()),
            (Role::FromClient, None) => return Err(DecodeError::Unmasked),
            (Role::FromServer, Some(_)) => return Err(DecodeError::Masked),
            _ => {}
        }
        if !h.is_control() {
            match (h.opcode, self.in_message) {
                (opcode::CONTINUATION, false) => return Err(DecodeError::StrayContinuation),
                (opcode::CONTINUATION, true) => {}
                (_, true) => return Err(DecodeError::NestedMessage),
                (_, false) => {}
            }
            self.in_message = !h.fin;
        }
        Ok(())
    }

    fn fail(&mut self, e: DecodeError) -> DecodeError {
        self.lost = true;
        e
    }
}

#[cfg(test)]
mod tests;
