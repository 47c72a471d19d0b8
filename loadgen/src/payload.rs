//! The measured message: every payload carries its connection id, a
//! sequence number, the actual and the intended send time, a header
//! checksum and a filler that depends on the sequence number, so that every
//! echo can be checked: a lost, duplicated, reordered or corrupted message
//! is always detected and classified, never silently counted.
//!
//! Layout (little endian), `size >= HEADER_LEN`:
//!
//! | bytes  | field                                              |
//! |--------|----------------------------------------------------|
//! | 0..4   | magic `LGN1`                                       |
//! | 4..8   | connection id (u32)                                |
//! | 8..16  | sequence number (u64, per connection, from 0)      |
//! | 16..24 | send time, `CLOCK_MONOTONIC` ns                    |
//! | 24..32 | intended send time (rate mode; else = send time)   |
//! | 32..40 | checksum of bytes 0..32                            |
//! | 40..   | filler: byte `i` = `(i + seq) mod 256`             |

pub const MAGIC: [u8; 4] = *b"LGN1";
pub const HEADER_LEN: usize = 40;

/// Builds payloads into a reused buffer.
#[derive(Debug)]
pub struct PayloadBuilder {
    buf: Vec<u8>,
    /// `pattern[k] = k mod 256`, long enough for any filler offset.
    pattern: Vec<u8>,
    conn: u32,
}

impl PayloadBuilder {
    /// `size` must be at least [`HEADER_LEN`].
    pub fn new(conn: u32, size: usize) -> Self {
        assert!(size >= HEADER_LEN, "payload size below {HEADER_LEN}");
        Self {
            buf: vec![0; size],
            pattern: pattern(size),
            conn,
        }
    }

    /// Payload size in bytes.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The payload for `seq`, valid until the next call.
    pub fn build(&mut self, seq: u64, sent_ns: u64, intended_ns: u64) -> &[u8] {
        let b = &mut self.buf;
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.conn.to_le_bytes());
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..24].copy_from_slice(&sent_ns.to_le_bytes());
        b[24..32].copy_from_slice(&intended_ns.to_le_bytes());
        let sum = checksum(&b[0..32]);
        b[32..40].copy_from_slice(&sum.to_le_bytes());
        let off = (seq & 0xFF) as usize;
        let n = b.len() - HEADER_LEN;
        b[HEADER_LEN..].copy_from_slice(&self.pattern[off..off + n]);
        &self.buf
    }
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size + 256).map(|k| k as u8).collect()
}

/// FNV-1a over 8-byte words, finished with a splitmix step.
fn checksum(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in b.chunks_exact(8) {
        h ^= u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A verified echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub seq: u64,
    pub sent_ns: u64,
    pub intended_ns: u64,
}

/// What checking one echo found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next expected message, intact.
    Ok(Echo),
    /// Intact, but `lost` messages before it never arrived.
    Gap { echo: Echo, lost: u64 },
    /// Intact, but already seen (a duplicate, or a late reordered one).
    Duplicate { seq: u64 },
    /// Damaged. It is assumed to take the slot of the next expected message
    /// (its own sequence number cannot be trusted), so one flipped byte
    /// counts as exactly one corrupted message.
    Corrupt { reason: &'static str, lost: u64 },
    /// Intact but not ours: another connection's id, or a sequence number
    /// that was never sent.
    Unexpected { reason: &'static str },
}

/// Per-connection echo checker: sequence numbers must come back in order.
#[derive(Debug)]
pub struct Checker {
    conn: u32,
    size: usize,
    pattern: Vec<u8>,
    /// Next sequence number expected; everything below is accounted for.
    expected: u64,
}

impl Checker {
    pub fn new(conn: u32, size: usize) -> Self {
        Self {
            conn,
            size,
            pattern: pattern(size),
            expected: 0,
        }
    }

    /// Sequence numbers below this are delivered, lost or corrupted.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks one echo. `sent` is how many messages were sent so far.
    pub fn check(&mut self, p: &[u8], sent: u64) -> Verdict {
        if p.len() != self.size {
            self.expected += 1;
            return Verdict::Corrupt {
                reason: "wrong length",
                lost: 0,
            };
        }
        if p[0..4] != MAGIC || checksum(&p[0..32]) != u64_at(p, 32) {
            self.expected += 1;
            return Verdict::Corrupt {
                reason: "header checksum mismatch",
                lost: 0,
            };
        }
        let conn = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
        let seq = u64_at(p, 8);
        if conn != self.conn {
            return Verdict::Unexpected {
                reason: "another connection's message",
            };
        }
        if seq >= sent {
            return Verdict::Unexpected {
                reason: "sequence number never sent",
            };
        }
        let off = (seq & 0xFF) as usize;
        if p[HEADER_LEN..] != self.pattern[off..off + self.size - HEADER_LEN] {
            let lost = seq.saturating_sub(self.expected);
            self.expected = self.expected.max(seq + 1);
            return Verdict::Corrupt {
                reason: "payload mismatch",
                lost,
            };
        }
        let echo = Echo {
            seq,
            sent_ns: u64_at(p, 16),
            intended_ns: u64_at(p, 24),
        };
        if seq < self.expected {
            return Verdict::Duplicate { seq };
        }
        let lost = seq - self.expected;
        self.expected = seq + 1;
        if lost == 0 {
            Verdict::Ok(echo)
        } else {
            Verdict::Gap { echo, lost }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(b: &mut PayloadBuilder, seq: u64) -> Vec<u8> {
        b.build(seq, 1000 + seq, 2000 + seq).to_vec()
    }

    #[test]
    fn in_order_echoes_pass() {
        let mut b = PayloadBuilder::new(7, 64);
        let mut c = Checker::new(7, 64);
        for seq in 0..600 {
            let m = msg(&mut b, seq);
            assert_eq!(
                c.check(&m, seq + 1),
                Verdict::Ok(Echo {
                    seq,
                    sent_ns: 1000 + seq,
                    intended_ns: 2000 + seq
                })
            );
        }
    }

    #[test]
    fn every_single_byte_flip_is_corruption() {
        let mut b = PayloadBuilder::new(1, 80);
        let good = msg(&mut b, 5);
        for i in 0..good.len() {
            for bit in [0x01u8, 0x80] {
                let mut c = Checker::new(1, 80);
                c.expected = 5;
                let mut bad = good.clone();
                bad[i] ^= bit;
                assert!(
                    matches!(c.check(&bad, 10), Verdict::Corrupt { .. }),
                    "flip at byte {i} not detected"
                );
                assert_eq!(c.expected(), 6, "corruption takes one slot");
            }
        }
    }

    #[test]
    fn gaps_duplicates_and_strangers() {
        let mut b = PayloadBuilder::new(1, 40);
        let mut c = Checker::new(1, 40);
        assert!(matches!(c.check(&msg(&mut b, 0), 10), Verdict::Ok(_)));
        assert!(matches!(
            c.check(&msg(&mut b, 3), 10),
            Verdict::Gap { lost: 2, .. }
        ));
        assert_eq!(c.check(&msg(&mut b, 3), 10), Verdict::Duplicate { seq: 3 });
        assert!(matches!(
            c.check(&msg(&mut b, 9), 5),
            Verdict::Unexpected { .. }
        ));
        let mut other = PayloadBuilder::new(2, 40);
        assert!(matches!(
            c.check(&msg(&mut other, 4), 10),
            Verdict::Unexpected { .. }
        ));
        assert!(matches!(
            c.check(&msg(&mut b, 4)[..39], 10),
            Verdict::Corrupt { .. }
        ));
    }
}
