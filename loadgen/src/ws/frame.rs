//! RFC 6455 frame headers and masking: parse a header from a byte slice,
//! write one into a buffer, and XOR payloads with a masking key (8 bytes at
//! a time). No I/O and no allocation here.

/// Frame opcodes this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Protocol violations found while parsing a frame header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits set (no extension was negotiated)")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    BadOpcode(u8),
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    #[error("64-bit length with the most significant bit set")]
    LengthMsb,
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("masked frame from the server")]
    MaskedFromServer,
    #[error("unmasked frame from the client")]
    UnmaskedFromClient,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: usize,
    pub header_len: usize,
}

impl FrameHeader {
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

/// Parses a header at the start of `buf`. `Ok(None)`: not enough bytes yet.
/// Frames whose payload exceeds `max_payload` are refused.
pub fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<FrameHeader>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(FrameError::BadOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    let len7 = (b1 & 0x7F) as u64;
    let (len, mut pos) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let l = u64::from_be_bytes(b);
            if l >> 63 != 0 {
                return Err(FrameError::LengthMsb);
            }
            (l, 10)
        }
        l => (l, 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if len > 125 {
            return Err(FrameError::ControlTooLong);
        }
    }
    if len > max_payload as u64 {
        return Err(FrameError::TooLarge {
            len,
            max: max_payload,
        });
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let k = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(k)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        opcode,
        mask,
        payload_len: len as usize,
        header_len: pos,
    }))
}

/// Largest header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

/// Appends a frame header to `out`.
pub fn write_header(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    len: usize,
) {
    let b0 = if fin { 0x80 } else { 0 } | opcode.as_u8();
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    out.push(b0);
    if len < 126 {
        out.push(mbit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mbit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if let Some(k) = mask {
        out.extend_from_slice(&k);
    }
}

/// `dst[i] = src[i] ^ key[i % 4]`; `dst` and `src` have the same length.
#[inline]
pub fn mask_copy(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    debug_assert_eq!(dst.len(), src.len());
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (dc, sc) in (&mut d).zip(&mut s) {
        let v = u64::from_ne_bytes(sc.try_into().expect("chunk of 8")) ^ k8;
        dc.copy_from_slice(&v.to_ne_bytes());
    }
    // Chunks of 8 keep the key phase at 0, so the tail starts at key[0].
    for (i, (db, sb)) in d.into_remainder().iter_mut().zip(s.remainder()).enumerate() {
        *db = sb ^ key[i & 3];
    }
}

/// Masks (or unmasks) `buf` in place.
#[inline]
pub fn mask_in_place(buf: &mut [u8], key: [u8; 4]) {
    let k8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("chunk of 8")) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(src: &[u8], key: [u8; 4]) -> Vec<u8> {
        src.iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect()
    }

    #[test]
    fn masking_matches_the_rfc_definition() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in [0usize, 1, 3, 7, 8, 9, 15, 16, 17, 125, 1000] {
            let src: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut dst = vec![0u8; len];
            mask_copy(&mut dst, &src, key);
            assert_eq!(dst, naive(&src, key), "len {len}");
            let mut inplace = src.clone();
            mask_in_place(&mut inplace, key);
            assert_eq!(inplace, dst);
        }
    }

    #[test]
    fn header_roundtrip_all_length_forms() {
        for len in [0usize, 125, 126, 65535, 65536, 1 << 20] {
            let mut out = Vec::new();
            write_header(&mut out, true, OpCode::Binary, Some([1, 2, 3, 4]), len);
            let h = parse_header(&out, usize::MAX).unwrap().unwrap();
            assert_eq!(h.payload_len, len);
            assert_eq!(h.header_len, out.len());
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
            assert!(h.fin);
            assert_eq!(h.opcode, OpCode::Binary);
            // Every strict prefix is "incomplete", never an error.
            for cut in 0..out.len() {
                assert_eq!(parse_header(&out[..cut], usize::MAX), Ok(None));
            }
        }
    }

    #[test]
    fn rfc_6455_examples() {
        // Unmasked "Hello" and the masked one from section 5.7.
        let h = parse_header(&[0x81, 0x05, 0x48, 0x65], 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!((h.opcode, h.payload_len, h.mask), (OpCode::Text, 5, None));
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let h = parse_header(&masked, 1 << 20).unwrap().unwrap();
        let mut p = masked[h.header_len..].to_vec();
        mask_in_place(&mut p, h.mask.unwrap());
        assert_eq!(p, b"Hello");
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(
            parse_header(&[0xC2, 0x00], 10),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x83, 0x00], 10),
            Err(FrameError::BadOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x09, 0x00], 10),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            parse_header(&[0x89, 126, 0, 200], 1000),
            Err(FrameError::ControlTooLong)
        );
        assert!(matches!(
            parse_header(&[0x82, 126, 0x10, 0x00], 100),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
