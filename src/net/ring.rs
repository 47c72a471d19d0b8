//! A shard's provided-buffer ring, for `forward = "ring"`: one set of
//! receive buffers that the kernel hands to a posted (multishot) receive
//! only when its data arrives (io_uring `IORING_REGISTER_PBUF_RING`,
//! through the vendored monoio's `buf_ring`). An idle session's receives
//! hold no buffer.
//!
//! Sizing (docs/performance.md "Choosing the forward mode"): two buffers
//! per session the shard may hold (one per direction in flight), at most
//! `RING_BYTES` of buffers and at least `MIN_ENTRIES`, a power of two.
//! Buffers beyond what is in flight cost address space, not memory: pages
//! are touched as the kernel first fills them.
//!
//! Must not: lock or allocate per receive. Shard-local.

use std::cell::Cell;
use std::io;

use monoio::buf_ring::BufRing;

/// Buffer memory per shard the ring may map.
const RING_BYTES: usize = 4 * 1024 * 1024;
/// Fewest buffers a ring gets, whatever their size.
const MIN_ENTRIES: usize = 16;
/// The kernel's limit on a ring's entries.
const MAX_ENTRIES: usize = 32768;
/// The shard's only buffer group.
const GROUP: u16 = 0;

/// The ring, or why there is none, and what it counts for `/metrics`.
pub struct RecvRing {
    ring: Option<BufRing>,
    /// Receives that found every buffer in use and read through the copy
    /// pool instead (a counted event, never a stall).
    pub empty: Cell<u64>,
}

impl RecvRing {
    /// Registers a ring for `sessions` sessions of `buffer_size` buffers on
    /// the current io_uring. Fails without io_uring (the epoll driver, a
    /// kernel before 5.19); the shard then has `none()` and ring mode
    /// forwards as `copy`.
    pub fn register(buffer_size: usize, sessions: usize) -> io::Result<RecvRing> {
        let entries = entries_for(buffer_size, sessions);
        let ring = BufRing::register(GROUP, entries as u16, buffer_size as u32)?;
        Ok(RecvRing {
            ring: Some(ring),
            empty: Cell::new(0),
        })
    }

    /// No ring (the tunnel client, tests).
    pub fn none() -> RecvRing {
        RecvRing {
            ring: None,
            empty: Cell::new(0),
        }
    }

    pub fn get(&self) -> Option<&BufRing> {
        self.ring.as_ref()
    }

    /// Buffers held by sessions now (between a receive and its send).
    pub fn lent(&self) -> usize {
        self.ring.as_ref().map_or(0, BufRing::lent)
    }
}

/// Ring entries for `sessions` sessions of `buffer_size`-byte buffers.
pub fn entries_for(buffer_size: usize, sessions: usize) -> usize {
    let by_memory = (RING_BYTES / buffer_size.max(1)).max(MIN_ENTRIES);
    let by_sessions = sessions.saturating_mul(2).max(MIN_ENTRIES);
    let want = by_memory.min(by_sessions).min(MAX_ENTRIES);
    // The largest power of two not above `want` (the kernel needs one).
    1 << (usize::BITS - 1 - want.leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_by_memory_then_sessions_in_powers_of_two() {
        // 4 MiB of 16 KiB buffers.
        assert_eq!(entries_for(16 * 1024, 100_000), 256);
        // Few sessions: two buffers each, rounded down to a power of two.
        assert_eq!(entries_for(16 * 1024, 50), 64);
        // Huge buffers: never fewer than 16.
        assert_eq!(entries_for(16 * 1024 * 1024, 100_000), 16);
        // Tiny buffers: the kernel's cap.
        assert_eq!(entries_for(1, usize::MAX), 32768);
    }
}
