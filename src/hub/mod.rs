//! The push hub (docs/hub.md "Push hub"): WebSocket clients grouped by user token,
//! an HTTP push API with delayed pushes, and scale-out through Redis.
//!
//! - `client.rs`: a client session on `ws_path` (token, identify).
//! - `push.rs`: `POST push_path` with keep-alive.
//! - `message.rs`: the seed's body and token rules, the client message.
//! - `engine.rs`: the hub's own thread: delayed pushes (memory or Redis),
//!   history in memory, and through `redis.rs` (blocking `redis-rs`) what
//!   is rare: delayed pushes, recovery reads, presence.
//! - `shard_link.rs`: each shard's own Redis connections (commands,
//!   pipelined; the subscription), read with `resp.rs`.
//! - `stream.rs`: offsets, epochs, memory history; `jwt.rs`: tokens;
//!   `presence.rs`: counts per user and the limit.
//!
//! Delivery itself is [`crate::fanout`]: one frame per push, shared by every
//! shard and socket. How `delivered` is counted: the accepting shard queues
//! the frame on its own connections directly and sends it to every other
//! shard with a reply channel (room for every answer); each shard answers with the number of its connections that queued it; the
//! handler sums the answers. With Redis the count is this instance's only:
//! other instances deliver what they receive from the channel without
//! reporting back.
//!
//! Must not: run Redis or any blocking call on a shard, or log the API key.

mod client;
pub mod engine;
pub mod jwt;
pub mod message;
pub mod presence;
mod push;
mod redis;
pub mod request;
pub mod resp;
mod shard_link;
pub mod stream;

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ring::digest::{digest, SHA256};
use subtle::ConstantTimeEq;

pub use client::run as run_client;
pub use push::serve as serve_push;

use crate::config::HubConfig;
use crate::fanout::{Bus, Registry};
use engine::Engine;
use jwt::Verifier;
use request::EngineMsg;

/// Process-wide hub state, shared by shards and the hub thread. Touched per
/// push (the engine channel) or per slow client, never per delivered frame.
pub struct HubShared {
    pub cfg: HubConfig,
    /// Random per process: marks pushes this instance already delivered.
    pub instance: String,
    key_digest: [u8; 32],
    pub engine: flume::Sender<EngineMsg>,
    pub slow_closed: AtomicU64,
    /// History and recovery figures for `/metrics`.
    pub counters: Arc<crate::metrics::HubCounters>,
    /// `[hub.jwt]`'s keys, replaced on reload. Read once per connection or
    /// token refresh, never per message.
    jwt: Mutex<Option<Arc<Verifier>>>,
    /// Connections per user on this instance, and the per-user limit.
    pub presence: presence::Presence,
    /// Where each shard's own Redis connections go (`redis_url`).
    redis_target: Option<shard_link::Target>,
    /// Shards subscribed to the Redis channel now (logged when all are).
    pub subscribed: std::sync::atomic::AtomicUsize,
}

impl HubShared {
    /// Constant-time check of a presented API key (digests first, so the
    /// key's length does not leak through timing either).
    pub fn key_matches(&self, presented: &str) -> bool {
        let d = digest(&SHA256, presented.as_bytes());
        bool::from(d.as_ref().ct_eq(&self.key_digest))
    }

    pub fn redis(&self) -> bool {
        self.cfg.redis_url.is_some()
    }

    /// The token verifier when `[hub.jwt]` is set.
    pub fn jwt(&self) -> Option<Arc<Verifier>> {
        self.jwt.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads `[hub.jwt]`'s key files (reload). On error the old keys stay.
    pub fn reload_jwt(&self, cfg: Option<&crate::config::JwtConfig>) -> Result<(), String> {
        let next = cfg.map(Verifier::load).transpose()?.map(Arc::new);
        *self.jwt.lock().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// History on: pushes get offsets and reconnecting clients recover.
    pub fn history(&self) -> bool {
        self.cfg.history_size > 0
    }

    /// Counts a client closed for being slow; returns the running total.
    pub fn count_slow(&self) -> u64 {
        self.slow_closed.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A shard's part of the hub.
pub struct ShardHub {
    pub shard_id: usize,
    pub shared: Arc<HubShared>,
    pub registry: Registry,
    pub bus: Bus,
    /// This shard's Redis command connection (`shard_link.rs`).
    redis: Option<Rc<shard_link::Commands>>,
    /// The append script's SHA1 for `EVALSHA`.
    append_sha: String,
    /// Fresh epoch candidates for streams this shard starts in Redis.
    epochs: std::cell::RefCell<stream::EpochSource>,
}

impl ShardHub {
    /// The hub's part of a shard; with Redis, starts the shard's own
    /// command connection and subscription (call on the shard's runtime).
    pub fn start(
        shard_id: usize,
        shared: Arc<HubShared>,
        registry: Registry,
        bus: Bus,
    ) -> Rc<ShardHub> {
        let script = redis::publish_script();
        let append_sha = ::redis::Script::new(&script).get_hash().to_string();
        let target = shared.redis_target.clone();
        let commands = target
            .clone()
            .map(|t| Rc::new(shard_link::Commands::new(t, vec![script])));
        let hub = Rc::new(ShardHub {
            shard_id,
            shared,
            registry,
            bus,
            redis: commands.clone(),
            append_sha,
            epochs: std::cell::RefCell::new(stream::EpochSource::new()),
        });
        if let (Some(target), Some(commands)) = (target, commands) {
            let dns = Rc::new(crate::net::dns::DnsCache::new(
                std::time::Duration::from_secs(30),
            ));
            monoio::spawn(commands.run(dns.clone()));
            monoio::spawn(shard_link::subscribe(hub.clone(), target, dns));
        }
        hub
    }

    /// Delivers on this shard directly, on the others over their channels;
    /// returns the connections reached in this process.
    pub async fn send_counted(
        &self,
        audience: &crate::fanout::Audience,
        frame: &crate::fanout::Frame,
    ) -> usize {
        let here = self.registry.deliver(audience, frame).took;
        let space = crate::fanout::Space::Hub;
        here + self
            .bus
            .send_counted(self.shard_id, space, audience, frame)
            .await
    }
}

/// The hub before shards exist: shards get [`Hub::shared`], the hub thread
/// starts once every shard's channel is known.
pub struct Hub {
    pub shared: Arc<HubShared>,
    rx: flume::Receiver<EngineMsg>,
}

impl Hub {
    /// Fails when `[hub.jwt]`'s key files cannot be read (the error names
    /// the file, never a key).
    pub fn new(cfg: &HubConfig) -> Result<Hub, String> {
        let (tx, rx) = flume::unbounded();
        let mut key_digest = [0u8; 32];
        key_digest.copy_from_slice(digest(&SHA256, cfg.api_key.as_bytes()).as_ref());
        let shared = Arc::new(HubShared {
            cfg: cfg.clone(),
            instance: random_id(),
            key_digest,
            engine: tx.clone(),
            slow_closed: AtomicU64::new(0),
            counters: Arc::default(),
            jwt: Mutex::new(None),
            presence: presence::Presence::new(
                cfg.max_connections_per_user,
                cfg.redis_url.is_some().then(|| tx.clone()),
            ),
            redis_target: cfg
                .redis_url
                .as_deref()
                .map(shard_link::Target::parse)
                .transpose()?,
            subscribed: std::sync::atomic::AtomicUsize::new(0),
        });
        shared.reload_jwt(cfg.jwt.as_ref())?;
        Ok(Hub { shared, rx })
    }

    /// Starts the hub thread (and the Redis subscriber, with Redis).
    pub fn start(self, bus: Bus) -> Engine {
        Engine::start(self.shared, self.rx, bus)
    }
}

/// 128 random bits, hex.
pub fn random_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 16];
    if SystemRandom::new().fill(&mut b).is_err() {
        // No OS randomness: fall back to time and a counter (ids need only
        // be unique, not secret).
        static N: AtomicU64 = AtomicU64::new(0);
        let t = message::now_ms() as u128;
        b = ((t << 64) | u128::from(N.fetch_add(1, Ordering::Relaxed))).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
