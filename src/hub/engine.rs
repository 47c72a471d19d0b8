//! The hub's own thread: delayed pushes and everything that talks to Redis.
//!
//! Without Redis, delayed pushes wait in a heap in memory and are lost at
//! shutdown (the count is logged). With Redis, they wait in a sorted set
//! scored by due time (ms since the epoch); every instance polls it and a
//! Lua script claims due members and publishes them in one atomic step, so
//! exactly one instance takes each and nothing is lost between claim and
//! publish. Pushes that fell due while every instance was down are claimed
//! by the first instance that comes back, late, for whoever is connected.
//!
//! With history on (`[hub] history_size`), this thread is also where a
//! push gets its offset: in memory it appends to [`MemoryHistory`] and hands
//! the frame to every shard in the same step, so each stream reaches every
//! shard in order and nothing is live that is not in history; with Redis a
//! script does both (`redis.rs`).
//!
//! Must not: run on a shard (Redis calls block), or hold a push in memory
//! when Redis is configured.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::message::{now_ms, Push};
use super::redis::{self as link, RedisLink};
use super::request::{Assigned, EngineMsg};
use super::stream::{name_of, MemoryHistory};
use super::HubShared;
use crate::fanout::{Bus, Space};

/// How often each instance looks for due delayed pushes in Redis.
pub const CLAIM_INTERVAL: Duration = Duration::from_millis(20);

/// The running hub thread.
pub struct Engine {
    tx: flume::Sender<EngineMsg>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    pub fn start(shared: Arc<HubShared>, rx: flume::Receiver<EngineMsg>, bus: Bus) -> Engine {
        let tx = shared.engine.clone();
        let thread = std::thread::Builder::new()
            .name("hub".into())
            .spawn(move || run(shared, rx, bus))
            .ok();
        Engine { tx, thread }
    }

    /// Stops the thread; it logs what became of pending delayed pushes.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(EngineMsg::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    push: Push,
}

impl PartialEq for Delayed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Delayed {
    // Reversed: BinaryHeap is a max-heap, the earliest due must be on top.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

fn run(shared: Arc<HubShared>, rx: flume::Receiver<EngineMsg>, bus: Bus) {
    match shared.cfg.redis_url.clone() {
        None => run_memory(&shared, rx, bus),
        Some(url) => run_redis(
            &shared,
            rx,
            RedisLink::new(url, &shared.cfg, &shared.instance),
        ),
    }
}

/// How often memory history forgets streams past their TTL.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Memory history, when on, and what it needs to deliver.
struct Streams<'a> {
    history: Option<MemoryHistory>,
    shared: &'a HubShared,
    bus: &'a Bus,
}

impl Streams<'_> {
    /// Delivers `push` now: with history, at its offset and kept.
    fn deliver(&mut self, mut push: Push, counts: Option<&flume::Sender<usize>>) -> Assigned {
        let audience = push.audience();
        let Some(h) = self.history.as_mut() else {
            let frame = push.frame(now_ms());
            let shards = self
                .bus
                .send_ordered(Space::Hub, &audience, &frame, 0, counts);
            return Assigned {
                stream: String::new(),
                offset: 0,
                epoch: String::new(),
                shards: Some(shards),
            };
        };
        let (frame, offset) = h.append(&mut push, Instant::now(), now_ms());
        let shards = self
            .bus
            .send_ordered(Space::Hub, &audience, &frame, offset, counts);
        self.publish_usage();
        Assigned {
            stream: name_of(push.user.as_deref()),
            offset,
            epoch: push.epoch.unwrap_or_default(),
            shards: Some(shards),
        }
    }

    fn sweep(&mut self) {
        if let Some(h) = self.history.as_mut() {
            h.sweep(Instant::now());
            self.publish_usage();
        }
    }

    fn publish_usage(&self) {
        if let Some(h) = &self.history {
            let (streams, bytes) = h.usage();
            let c = &self.shared.counters;
            c.streams
                .store(streams as u64, std::sync::atomic::Ordering::Relaxed);
            c.history_bytes
                .store(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn run_memory(shared: &HubShared, rx: flume::Receiver<EngineMsg>, bus: Bus) {
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    let cfg = &shared.cfg;
    let mut streams = Streams {
        history: (cfg.history_size > 0).then(|| {
            MemoryHistory::new(cfg.history_size, Duration::from_secs(cfg.history_ttl_secs))
        }),
        shared,
        bus: &bus,
    };
    let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
    loop {
        let wait = heap
            .peek()
            .map_or(SWEEP_INTERVAL, |d: &Delayed| {
                d.due.saturating_duration_since(Instant::now())
            })
            .min(next_sweep.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(EngineMsg::Schedule { push, delay, reply }) => {
                seq += 1;
                heap.push(Delayed {
                    due: Instant::now() + delay,
                    seq,
                    push,
                });
                let _ = reply.send(Ok(()));
            }
            Ok(EngineMsg::Append {
                push,
                counts,
                reply,
            }) => {
                let _ = reply.send(Ok(streams.deliver(push, Some(&counts))));
            }
            Ok(EngineMsg::PresenceChanged { .. }) => {}
            Ok(EngineMsg::Presence { reply, .. }) => {
                let _ = reply.send(Ok(Vec::new()));
            }
            Ok(EngineMsg::Recover { wants, reply }) => {
                let read = match &streams.history {
                    Some(h) => Ok(wants.iter().map(|w| h.read(w)).collect()),
                    None => Err("history is off".into()),
                };
                let _ = reply.send(read);
            }
            Ok(EngineMsg::Shutdown) | Err(flume::RecvTimeoutError::Disconnected) => break,
            Err(flume::RecvTimeoutError::Timeout) => {}
        }
        while heap.peek().is_some_and(|d| d.due <= Instant::now()) {
            if let Some(d) = heap.pop() {
                streams.deliver(d.push, None);
            }
        }
        if Instant::now() >= next_sweep {
            streams.sweep();
            next_sweep = Instant::now() + SWEEP_INTERVAL;
        }
    }
    if heap.is_empty() {
        info!("hub stopped: no delayed pushes pending");
    } else {
        warn!(
            dropped = heap.len(),
            "hub stopped: delayed pushes dropped (in memory; set hub.redis_url to keep them)"
        );
    }
}

fn run_redis(shared: &HubShared, rx: flume::Receiver<EngineMsg>, mut redis: RedisLink) {
    let mut next_claim = Instant::now();
    let mut next_beat = Instant::now();
    loop {
        let wait = next_claim
            .min(next_beat)
            .saturating_duration_since(Instant::now());
        let mut batch = Vec::new();
        match rx.recv_timeout(wait) {
            Ok(EngineMsg::Shutdown) | Err(flume::RecvTimeoutError::Disconnected) => break,
            Ok(m) => batch.push(m),
            Err(flume::RecvTimeoutError::Timeout) => {}
        }
        // Whatever else is waiting goes in the same round trip.
        let mut stop = false;
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(EngineMsg::Shutdown) => {
                    stop = true;
                    break;
                }
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            redis.submit(batch);
        }
        if stop {
            break;
        }
        if Instant::now() >= next_claim {
            redis.claim_due();
            next_claim = Instant::now() + CLAIM_INTERVAL;
        }
        if Instant::now() >= next_beat {
            redis.heartbeat(&shared.instance, || shared.presence.snapshot());
            next_beat = Instant::now() + link::HEARTBEAT;
        }
    }
    info!(
        slow_closed = shared
            .slow_closed
            .load(std::sync::atomic::Ordering::Relaxed),
        "hub stopped: delayed pushes stay in Redis for the other instances or the next start"
    );
}
