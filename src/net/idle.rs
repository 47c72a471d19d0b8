//! The idle timeout's clock: sessions stamp a `Cell<Instant>` whenever a
//! byte moves, and `idle_watch` completes once the stamp is `idle` old.
//! One timer per session, re-armed only when it fires early.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Completes when no byte moved either way for `idle` (never if `None`).
pub async fn idle_watch(clock: &Cell<Instant>, idle: Option<Duration>) {
    let Some(idle) = idle else {
        return std::future::pending().await;
    };
    loop {
        let due = clock.get() + idle;
        if Instant::now() >= due {
            return;
        }
        monoio::time::sleep_until(due.into()).await;
    }
}
