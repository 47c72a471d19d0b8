//! The payload rules of RFC 6455 that frame headers cannot check: text
//! messages must be UTF-8 (validated incrementally, fragment by fragment,
//! failing at the first byte that can no longer start or continue a valid
//! sequence), and a Close payload must carry a valid status code and a
//! UTF-8 reason. Pure functions over byte slices: no I/O, and no allocation
//! (the validator carries at most 3 bytes between fragments).

/// The bytes can never become valid UTF-8, whatever follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid UTF-8")]
pub struct InvalidUtf8;

/// Incremental UTF-8 validation of one message split across frames.
///
/// A codepoint may straddle a frame boundary, so the (valid) start of an
/// incomplete sequence at the end of one fragment is carried over to the
/// next. `std::str::from_utf8` does the work: its `error_len()` is `None`
/// exactly when the input ends inside a sequence that is valid so far, and
/// it checks the second byte's range per lead byte (overlongs, surrogates,
/// above U+10FFFF), so "invalid" is reported as soon as it is certain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Validator {
    carry: [u8; 4],
    carry_len: u8,
}

/// Sequence length announced by a lead byte the validator has accepted.
fn seq_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

impl Utf8Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes of the message.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            // Complete the carried sequence with as few new bytes as it needs:
            // validating more here would only repeat the work below.
            let have = self.carry_len as usize;
            let take = (seq_len(self.carry[0]) - have).min(bytes.len());
            let mut seq = self.carry;
            seq[have..have + take].copy_from_slice(&bytes[..take]);
            let n = have + take;
            match std::str::from_utf8(&seq[..n]) {
                Ok(_) => {
                    self.carry_len = 0;
                    bytes = &bytes[take..];
                }
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {
                    // Still incomplete: `bytes` was too short to finish it.
                    self.carry = seq;
                    self.carry_len = n as u8;
                    return Ok(());
                }
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // At most 3 bytes: a longer valid prefix would be complete.
                let tail = &bytes[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// The message ended: a sequence still open is invalid. Resets the
    /// validator for the next message either way.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let open = self.carry_len > 0;
        self.carry_len = 0;
        if open {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

/// Whether a peer may send `code` in a Close frame (RFC 6455 §7.4).
/// 1004 is reserved, 1005, 1006 and 1015 must never be sent on the wire,
/// and the rest of 1000-2999 belongs to the protocol: only the registered
/// codes are valid (1012-1014 were registered with IANA after the RFC;
/// the relay itself sends 1013 and 1014). 3000-4999 are for libraries and
/// applications.
pub fn close_code_valid(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Why a Close payload is refused, with the close code that answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadClose {
    #[error("close payload of 1 byte")]
    OneByte,
    #[error("invalid close code {0}")]
    Code(u16),
    #[error("close reason is not UTF-8")]
    Reason,
}

impl BadClose {
    /// 1007 for a bad reason (invalid payload data), 1002 otherwise.
    pub fn close_code(self) -> u16 {
        match self {
            Self::Reason => 1007,
            Self::OneByte | Self::Code(_) => 1002,
        }
    }
}

/// Checks an (unmasked) Close payload: empty, or a valid code followed by a
/// UTF-8 reason. Returns the code, if any.
pub fn check_close(payload: &[u8]) -> Result<Option<u16>, BadClose> {
    match payload {
        [] => Ok(None),
        [_] => Err(BadClose::OneByte),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !close_code_valid(code) {
                return Err(BadClose::Code(code));
            }
            std::str::from_utf8(reason).map_err(|_| BadClose::Reason)?;
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `msg` cut at every position in `cuts`, then finishes.
    fn split_verdict(msg: &[u8], cuts: &[usize]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        let mut from = 0;
        for &c in cuts.iter().chain(std::iter::once(&msg.len())) {
            let r = v.feed(&msg[from..c]);
            if r.is_err() {
                v.finish().ok();
                return r;
            }
            from = c;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_from_utf8_at_every_split() {
        let samples: &[&[u8]] = &[
            b"",
            b"hello",
            "κόσμε".as_bytes(),
            "a\u{7FF}b\u{800}c\u{FFFF}d\u{10000}e\u{10FFFF}".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\xff",
            b"abc\xe2\x82",
            b"\xf0\x9f\x98",
            b"\xe2\x82\xac\x80",
        ];
        for s in samples {
            let whole = std::str::from_utf8(s).is_ok();
            // Every single cut and every pair of cuts.
            for i in 0..=s.len() {
                assert_eq!(split_verdict(s, &[i]).is_ok(), whole, "{s:x?} cut {i}");
                for j in i..=s.len() {
                    assert_eq!(split_verdict(s, &[i, j]).is_ok(), whole, "{s:x?} {i},{j}");
                }
            }
            // One byte per fragment.
            let each: Vec<usize> = (1..s.len()).collect();
            assert_eq!(split_verdict(s, &each).is_ok(), whole, "{s:x?} bytewise");
        }
    }

    #[test]
    fn fails_fast_on_the_first_impossible_byte() {
        let mut v = Utf8Validator::new();
        // A codepoint split 1 + 1 + 1 bytes across frames is fine so far.
        assert_eq!(v.feed(b"ok \xe2"), Ok(()));
        assert_eq!(v.feed(b"\x82"), Ok(()));
        assert_eq!(v.feed(b"\xac more"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
        // U+110000 is refused at its second byte, before the rest arrives.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"abc\xf4"), Ok(()));
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        // A surrogate, likewise.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed\xa0"), Err(InvalidUtf8));
        // An incomplete sequence at the end of the message.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xf0\x9f\x98"), Ok(()));
        assert_eq!(v.finish(), Err(InvalidUtf8));
        // ... and the validator is clean for the next message.
        assert_eq!(v.feed(b"next"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }

    #[test]
    fn close_codes_per_rfc_6455() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1010, 1011, 1013, 1014, 3000, 4999,
        ] {
            assert!(close_code_valid(ok), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!close_code_valid(bad), "{bad}");
        }
    }

    #[test]
    fn close_payloads() {
        assert_eq!(check_close(b""), Ok(None));
        assert_eq!(check_close(&[0x03]), Err(BadClose::OneByte));
        assert_eq!(check_close(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(check_close(b"\x03\xe8bye \xce\xba"), Ok(Some(1000)));
        assert_eq!(check_close(&[0x03, 0xED]), Err(BadClose::Code(1005)));
        assert_eq!(check_close(b"\x03\xe8\xff"), Err(BadClose::Reason));
        assert_eq!(BadClose::Reason.close_code(), 1007);
        assert_eq!(BadClose::OneByte.close_code(), 1002);
        assert_eq!(BadClose::Code(999).close_code(), 1002);
    }
}
