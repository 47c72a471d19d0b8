//! `copy` forwarding: wait for readiness, borrow a pooled buffer, move what
//! is there, give the buffer back. An idle direction holds no buffer. Works
//! for plain and TLS endpoints alike.
//!
//! Must not: allocate, or parse payload bytes (frame headers only, through
//! the direction's tracker, after the bytes are fully written).
//!
//! A TLS 1.2 destination nearing its cipher's record limit ends the pump at
//! the next frame boundary (`PumpEnd::RecordLimit`), so the session can end
//! with a Close rather than a bare error when the limit is hit.

use std::cell::Cell;
use std::time::Instant;

use super::{Direction, PumpEnd};
use crate::endpoint::Endpoint;
use crate::net::pool::BufferPool;

pub async fn pump(
    src: &Endpoint,
    dst: &Endpoint,
    pool: &BufferPool,
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> PumpEnd {
    loop {
        if let Some(end) = round(src, dst, pool, dir, clock).await {
            return end;
        }
    }
}

/// One readiness round: wait until `src` is readable, then move what is
/// there until it drains. `None` when the pump goes on. Also the `ring`
/// pump's way through when its ring is empty.
pub async fn round(
    src: &Endpoint,
    dst: &Endpoint,
    pool: &BufferPool,
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> Option<PumpEnd> {
    if let Err(e) = src.readable().await {
        return Some(PumpEnd::ReadError(e));
    }
    let mut buf = pool.borrow();
    loop {
        let n = match src.try_read(&mut buf) {
            Ok(Some(0)) => return Some(PumpEnd::Eof),
            Ok(Some(n)) => n,
            Ok(None) => return None,
            Err(e) => return Some(PumpEnd::ReadError(e)),
        };
        if let Some(end) = super::deliver(dst, &buf[..n], dir, clock).await {
            return Some(end);
        }
        // A short read means the socket is drained: go back to waiting
        // for readiness without a wasted EAGAIN.
        if n < buf.len() {
            return None;
        }
    }
}
