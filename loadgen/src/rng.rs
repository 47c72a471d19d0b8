//! A small non-cryptographic PRNG (xorshift64*) for WebSocket masking keys
//! and handshake nonces. A load generator needs unpredictability only in the
//! RFC 6455 sense (masks differ per frame), not secrecy.

use std::sync::atomic::{AtomicU64, Ordering};

static SEED_COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// xorshift64* generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeds from the clock, the thread and a process-wide counter.
    pub fn new() -> Self {
        let salt = SEED_COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut s = crate::clock::now_ns() ^ salt ^ (std::process::id() as u64).rotate_left(32);
        if s == 0 {
            s = 0xDEAD_BEEF;
        }
        Self(s)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[inline]
    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let v = self.next_u64().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}
