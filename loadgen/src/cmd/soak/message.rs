//! The soak message and its per-session checker. Every message carries its
//! session id, a sequence number, its payload length and a checksum over
//! all of it, so an echo that is corrupted, belongs to another session, or
//! comes back twice, late or never is classified, never counted as good.
//!
//! Layout (little endian):
//!
//! | bytes  | field                                         |
//! |--------|-----------------------------------------------|
//! | 0..4   | magic `SOAK`                                  |
//! | 4..8   | session id (u32, unique per run)              |
//! | 8..16  | sequence number (u64, per session, from 0)    |
//! | 16..20 | payload length (u32)                          |
//! | 20..28 | FNV-1a 64 of bytes 0..20 and the payload      |
//! | 28..   | payload: splitmix64 stream seeded by id, seq  |

use std::collections::BTreeSet;

pub const MAGIC: [u8; 4] = *b"SOAK";
pub const HEADER_LEN: usize = 28;
/// A gap wider than this is counted lost at once instead of remembered
/// (a later arrival of those messages would then be called a duplicate).
const MAX_REMEMBERED_GAP: u64 = 100_000;

/// Writes message `seq` of session `sid` with `len` payload bytes into `out`.
pub fn build(out: &mut Vec<u8>, sid: u32, seq: u64, len: usize) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&sid.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let mut state = seed(sid, seq);
    while out.len() < HEADER_LEN + len {
        let w = splitmix(&mut state).to_le_bytes();
        let take = (HEADER_LEN + len - out.len()).min(8);
        out.extend_from_slice(&w[..take]);
    }
    let sum = checksum(&out[..20], &out[HEADER_LEN..]);
    out[20..28].copy_from_slice(&sum.to_le_bytes());
}

fn seed(sid: u32, seq: u64) -> u64 {
    ((sid as u64) << 40) ^ seq ^ 0x005E_ED0F_50AC
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn checksum(head: &[u8], payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in head.iter().chain(payload) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Why an echo is not a message of this session.
pub fn parse(msg: &[u8], sid: u32) -> Result<u64, &'static str> {
    if msg.len() < HEADER_LEN {
        return Err("shorter than the header");
    }
    if msg[0..4] != MAGIC {
        return Err("bad magic");
    }
    let len = u32::from_le_bytes(msg[16..20].try_into().expect("4 bytes")) as usize;
    if len != msg.len() - HEADER_LEN {
        return Err("length field does not match the message");
    }
    let sum = u64::from_le_bytes(msg[20..28].try_into().expect("8 bytes"));
    if sum != checksum(&msg[..20], &msg[HEADER_LEN..]) {
        return Err("checksum mismatch");
    }
    if u32::from_le_bytes(msg[4..8].try_into().expect("4 bytes")) != sid {
        return Err("another session's message");
    }
    Ok(u64::from_le_bytes(msg[8..16].try_into().expect("8 bytes")))
}

/// Message counts of one session or many.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MsgCounts {
    pub sent: u64,
    /// Intact echoes, each sequence number once.
    pub received: u64,
    /// Sent, never echoed, on a session the test ended cleanly; or skipped
    /// over by a later echo on any session.
    pub lost: u64,
    pub duplicated: u64,
    /// Arrived after a later sequence number (then not lost).
    pub reordered: u64,
    pub corrupted: u64,
    /// Sent but not echoed when the session was cut (target restart, RST):
    /// in flight, excluded from `lost`.
    pub in_flight_excluded: u64,
}

impl MsgCounts {
    pub fn add(&mut self, o: &MsgCounts) {
        self.sent += o.sent;
        self.received += o.received;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.corrupted += o.corrupted;
        self.in_flight_excluded += o.in_flight_excluded;
    }
}

/// Sequence checking for one session: echoes must come back in order.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Next sequence number expected; everything below is accounted for.
    expected: u64,
    /// Skipped over by a later echo, not (yet) seen.
    missing: BTreeSet<u64>,
    counts: MsgCounts,
    /// The first problem seen, for the report.
    pub first_error: Option<String>,
}

impl Tracker {
    /// Next sequence number expected.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Checks one echo; `sent` is how many messages have been sent so far.
    pub fn on_message(&mut self, msg: &[u8], sid: u32, sent: u64) {
        match parse(msg, sid) {
            Ok(seq) if seq >= sent => self.corrupt(sid, "a sequence number never sent"),
            Ok(seq) => self.on_seq(sid, seq),
            Err(why) => self.corrupt(sid, why),
        }
    }

    fn on_seq(&mut self, sid: u32, seq: u64) {
        use std::cmp::Ordering::*;
        match seq.cmp(&self.expected) {
            Equal => {
                self.counts.received += 1;
                self.expected += 1;
            }
            Greater => {
                let gap = seq - self.expected;
                if gap > MAX_REMEMBERED_GAP {
                    self.counts.lost += gap;
                } else {
                    self.missing.extend(self.expected..seq);
                }
                let expected = self.expected;
                self.note(|| format!("session {sid}: seq {seq} while {expected} expected"));
                self.counts.received += 1;
                self.expected = seq + 1;
            }
            Less if self.missing.remove(&seq) => {
                self.counts.received += 1;
                self.counts.reordered += 1;
                self.note(|| format!("session {sid}: seq {seq} arrived out of order"));
            }
            Less => {
                self.counts.duplicated += 1;
                self.note(|| format!("session {sid}: seq {seq} arrived twice"));
            }
        }
    }

    /// A damaged echo takes the slot of the next expected message (its own
    /// sequence number cannot be trusted), so one flipped bit is one
    /// corrupted message, not a corruption plus a loss.
    fn corrupt(&mut self, sid: u32, why: &'static str) {
        self.counts.corrupted += 1;
        self.expected += 1;
        self.note(|| format!("session {sid}: corrupted echo: {why}"));
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Final counts. `clean`: the test ended the session (everything sent
    /// should have come back); otherwise the unanswered tail was in flight.
    pub fn finish(&self, sent: u64, clean: bool) -> MsgCounts {
        let mut c = self.counts;
        c.sent = sent;
        c.lost += self.missing.len() as u64;
        let tail = sent.saturating_sub(self.expected);
        if clean {
            c.lost += tail;
        } else {
            c.in_flight_excluded += tail;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(sid: u32, seq: u64, len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        build(&mut v, sid, seq, len);
        v
    }

    #[test]
    fn roundtrip_and_every_flipped_bit_is_caught() {
        for len in [0usize, 1, 7, 8, 9, 300] {
            let m = msg(7, 42, len);
            assert_eq!(m.len(), HEADER_LEN + len);
            assert_eq!(parse(&m, 7), Ok(42));
            assert_eq!(parse(&m, 8), Err("another session's message"));
            for bit in 0..m.len() * 8 {
                let mut bad = m.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(parse(&bad, 7).is_err(), "len {len} bit {bit}");
            }
        }
        assert_ne!(msg(1, 1, 64)[HEADER_LEN..], msg(1, 2, 64)[HEADER_LEN..]);
    }

    #[test]
    fn classifies_gaps_reorders_duplicates_and_corruption() {
        let mut t = Tracker::default();
        for seq in [0, 1, 3, 2, 2, 4] {
            t.on_message(&msg(1, seq, 10), 1, 10);
        }
        t.on_message(&msg(1, 9, 10), 1, 10); // 5..9 skipped
        let mut bad = msg(1, 10, 10);
        bad[30] ^= 4;
        t.on_message(&bad, 1, 12);
        let c = t.finish(12, true);
        assert_eq!(c.sent, 12);
        assert_eq!(c.received, 6);
        assert_eq!(c.reordered, 1);
        assert_eq!(c.duplicated, 1);
        assert_eq!(c.corrupted, 1);
        // 5, 6, 7, 8 skipped and 11 never echoed.
        assert_eq!(c.lost, 5);
        assert_eq!(
            t.first_error.as_deref(),
            Some("session 1: seq 3 while 2 expected")
        );
    }

    #[test]
    fn the_tail_of_a_cut_session_is_in_flight_not_lost() {
        let mut t = Tracker::default();
        for seq in 0..5 {
            t.on_message(&msg(3, seq, 0), 3, 8);
        }
        let c = t.finish(8, false);
        assert_eq!((c.received, c.lost, c.in_flight_excluded), (5, 0, 3));
        assert_eq!(
            (c.lost, c.duplicated, c.reordered, c.corrupted),
            (0, 0, 0, 0)
        );
        assert_eq!(t.finish(8, true).lost, 3);
    }
}
