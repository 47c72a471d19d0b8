//! A scrape, end to end: the shard that got `GET /metrics` sends a
//! [`ScrapeRequest`] to the control plane's scrape thread, which asks every
//! shard over its per-core channel (`ShardMsg::Scrape`), waits a bounded time
//! for the snapshots, encodes them, and answers with the text.
//!
//! Must not: block a shard (shards only copy counters and await the answer),
//! or wait for a shard without a deadline (a stuck shard is reported as
//! missing, not a hung scrape).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::warn;

use super::encode::{encode, ControlValues};
use super::snapshot::ShardSnapshot;
use crate::msg::ShardMsg;

/// How long a scrape waits for the shards.
const SHARD_WAIT: Duration = Duration::from_secs(2);

/// A shard asks for the encoded text; the answer comes back on `reply`.
pub struct ScrapeRequest {
    pub reply: flume::Sender<String>,
}

/// Counters the control plane itself owns (touched per reload, never on a
/// shard's data path).
#[derive(Debug, Default)]
pub struct ControlCounters {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

impl ControlCounters {
    pub fn reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The push hub's history and recovery figures, kept by the hub (its
/// thread per append, its clients per recovery; never per delivered frame).
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Streams with history kept, and the bytes of their messages (this
    /// instance's memory; with Redis, the hub keeps none and these stay 0).
    pub streams: AtomicU64,
    pub history_bytes: AtomicU64,
    pub recovered: AtomicU64,
    pub not_recovered: AtomicU64,
    pub replayed: AtomicU64,
}

impl HubCounters {
    fn values(&self) -> [u64; 5] {
        [
            &self.streams,
            &self.history_bytes,
            &self.recovered,
            &self.not_recovered,
            &self.replayed,
        ]
        .map(|a| a.load(Ordering::Relaxed))
    }
}

/// Asks every shard for its counters (waiting at most `SHARD_WAIT`) and
/// encodes them with the control plane's. Blocks: the control plane's
/// housekeeping thread calls it, never a shard.
pub fn scrape(
    shards: &[flume::Sender<ShardMsg>],
    control: &ControlCounters,
    hub: Option<&HubCounters>,
) -> String {
    let (tx, rx) = flume::bounded(shards.len());
    let mut asked = 0;
    for s in shards {
        asked += usize::from(s.send(ShardMsg::Scrape { reply: tx.clone() }).is_ok());
    }
    drop(tx);
    let until = Instant::now() + SHARD_WAIT;
    let mut got: Vec<ShardSnapshot> = Vec::with_capacity(asked);
    while got.len() < asked {
        match rx.recv_deadline(until) {
            Ok(s) => got.push(s),
            Err(_) => break,
        }
    }
    got.sort_by_key(|s| s.shard);
    let missing = (shards.len() - got.len()) as u64;
    if missing > 0 {
        warn!(
            missing,
            "metrics scrape: some shards did not answer in time"
        );
    }
    let values = ControlValues {
        reloads_ok: control.reloads_ok.load(Ordering::Relaxed),
        reloads_failed: control.reloads_failed.load(Ordering::Relaxed),
        shards_missing: missing,
        shards: shards.len() as u64,
        hub: hub.map(HubCounters::values),
    };
    encode(got, values)
}

/// Shard side: asks the scrape thread and awaits the text (`None` if the
/// control plane is gone or too slow).
pub async fn request(to: &flume::Sender<ScrapeRequest>) -> Option<String> {
    let (reply, answer) = flume::bounded(1);
    // try_send: a full queue (a scrape flood) is a 503, never a blocked shard.
    to.try_send(ScrapeRequest { reply }).ok()?;
    let wait = SHARD_WAIT + Duration::from_secs(1);
    monoio::time::timeout(wait, answer.recv_async())
        .await
        .ok()?
        .ok()
}
