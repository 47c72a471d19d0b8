//! `ring` forwarding: one multishot receive per direction that takes a
//! buffer from the shard's provided-buffer ring each time data arrives
//! (`net::ring`), then the same write, frame tracking and Close injection
//! as `copy`. A buffer goes back to the ring once its bytes are written; a
//! slow reader holds the one being written and at most four queued behind
//! it (the vendored monoio's `MultiRecv` bounds that), and an idle
//! direction holds none. Against `copy` it saves the readiness wake-up's
//! extra `recv(2)` (the completion carries the bytes) and, against a
//! receive posted per chunk, posting it and arming its poll each time.
//!
//! The source must be plain TCP (a TLS source decrypts through its record
//! layer: `copy`); the destination may be either. An empty ring is counted
//! (`RecvRing::empty`) and that read goes through the copy pool: a busy
//! shard slows down to `copy`, it never stalls.
//!
//! Must not: allocate, or hold a buffer across a wait for input.

use std::cell::Cell;
use std::time::Instant;

use monoio::buf_ring::BufRing;

use super::{copy, Direction, PumpEnd};
use crate::endpoint::Endpoint;
use crate::net::pool::BufferPool;
use crate::net::ring::RecvRing;

pub async fn pump(
    src: &Endpoint,
    dst: &Endpoint,
    ring: (&RecvRing, &BufRing),
    pool: &BufferPool,
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> PumpEnd {
    let (counts, ring) = ring;
    let mut rx = match src.stream().recv_multi(ring) {
        Ok(rx) => rx,
        Err(e) => return PumpEnd::ReadError(e),
    };
    loop {
        let buf = match rx.next().await {
            Ok(Some(buf)) => buf,
            Ok(None) => return PumpEnd::Eof,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                counts.empty.set(counts.empty.get() + 1);
                match copy::round(src, dst, pool, dir, clock).await {
                    Some(end) => return end,
                    None => continue,
                }
            }
            Err(e) => return PumpEnd::ReadError(e),
        };
        if let Some(end) = super::deliver(dst, &buf, dir, clock).await {
            return end;
        }
    }
}
