//! The hub's Redis link: publishing, the delayed-push sorted set and its
//! atomic claim, and the subscriber thread that delivers what any instance
//! published.
//!
//! Reconnects by itself and logs each transition (lost, restored). Must not:
//! log the Redis URL (it may carry a password), or run on a shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Client, Connection, Script};
use tracing::{debug, info, warn};

use super::message::{now_ms, EngineMsg, Push};
use super::HubShared;
use crate::fanout::{Bus, Space};

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between reconnect attempts while Redis is away; requests in
/// between get 503 at once instead of each waiting for a connect.
const RETRY: Duration = Duration::from_millis(200);

/// Claims due members and publishes them, atomically: no two instances can
/// claim the same member, and a claimed member is already published.
const CLAIM_LUA: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('PUBLISH', ARGV[2], m)
end
return #due
";

pub struct RedisLink {
    client: Result<Client, String>,
    conn: Option<Connection>,
    channel: String,
    zset: String,
    claim: Script,
    /// Last state logged, so each transition is logged once.
    up: Option<bool>,
    next_try: Instant,
}

pub fn names(prefix: &str) -> (String, String) {
    (format!("{prefix}:push"), format!("{prefix}:delayed"))
}

impl RedisLink {
    pub fn new(url: String, prefix: &str) -> RedisLink {
        let (channel, zset) = names(prefix);
        RedisLink {
            client: Client::open(url).map_err(|e| e.to_string()),
            conn: None,
            channel,
            zset,
            claim: Script::new(CLAIM_LUA),
            up: None,
            next_try: Instant::now(),
        }
    }

    fn conn(&mut self) -> Result<&mut Connection, String> {
        if self.conn.is_none() {
            if Instant::now() < self.next_try {
                return Err("redis unavailable (reconnecting)".into());
            }
            self.next_try = Instant::now() + RETRY;
            match connect(&self.client) {
                Ok(c) => {
                    if self.up != Some(true) {
                        info!("hub: redis connection up (publisher)");
                    }
                    self.up = Some(true);
                    self.conn = Some(c);
                }
                Err(e) => {
                    self.lost(&e);
                    return Err(format!("redis unavailable: {e}"));
                }
            }
        }
        self.conn.as_mut().ok_or_else(|| "redis unavailable".into())
    }

    fn lost(&mut self, why: &str) {
        self.conn = None;
        if self.up != Some(false) {
            warn!("hub: redis connection lost (publisher): {why}; push requests get 503 until it is back");
        }
        self.up = Some(false);
    }

    /// Publishes and schedules a batch in one round trip; every request is
    /// told the outcome.
    pub fn submit(&mut self, batch: Vec<EngineMsg>) {
        let mut pipe = redis::pipe();
        let mut replies = Vec::with_capacity(batch.len());
        for m in batch {
            match m {
                EngineMsg::Publish { push, reply } => {
                    pipe.publish(&self.channel, to_json(&push)).ignore();
                    replies.push(reply);
                }
                EngineMsg::Schedule { push, delay, reply } => {
                    let due = now_ms() + delay.as_millis() as u64;
                    pipe.zadd(&self.zset, to_json(&push), due).ignore();
                    replies.push(reply);
                }
                EngineMsg::Append { reply, .. } => {
                    let _ = reply.send(Err("history is not kept in Redis yet".into()));
                }
                EngineMsg::Recover { reply, .. } => {
                    let _ = reply.send(Err("history is not kept in Redis yet".into()));
                }
                EngineMsg::Shutdown => {}
            }
        }
        let result = match self.conn() {
            Err(e) => Err(e),
            Ok(c) => pipe.query::<()>(c).map_err(|e| e.to_string()),
        };
        if let Err(e) = &result {
            if self.conn.is_some() {
                self.lost(e);
            }
        }
        let answer = result.map_err(|e| format!("redis unavailable: {e}"));
        for r in replies {
            let _ = r.send(answer.clone());
        }
    }

    /// Claims (and thereby publishes) every delayed push that is due.
    pub fn claim_due(&mut self) {
        let (zset, channel) = (self.zset.clone(), self.channel.clone());
        let script = self.claim.clone();
        let Ok(c) = self.conn() else { return };
        let claimed = script
            .key(zset)
            .arg(now_ms())
            .arg(channel)
            .arg(256)
            .invoke::<i64>(c);
        match claimed {
            Ok(0) => {}
            Ok(n) => debug!(claimed = n, "hub: delayed pushes due, published"),
            Err(e) => self.lost(&e.to_string()),
        }
    }
}

fn connect(client: &Result<Client, String>) -> Result<Connection, String> {
    let client = client.as_ref().map_err(Clone::clone)?;
    let c = client
        .get_connection_with_timeout(CONNECT_TIMEOUT)
        .map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    c.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(c)
}

fn to_json(push: &Push) -> String {
    serde_json::to_string(push).unwrap_or_default()
}

/// Starts the thread that subscribes to the channel and delivers every push
/// it hears (except this instance's own, already delivered) to all shards.
pub fn spawn_subscriber(url: String, shared: Arc<HubShared>, bus: Bus) {
    let _ = std::thread::Builder::new()
        .name("hub-redis-sub".into())
        .spawn(move || subscribe_forever(url, &shared, &bus));
}

fn subscribe_forever(url: String, shared: &HubShared, bus: &Bus) {
    let client = Client::open(url).map_err(|e| e.to_string());
    let (channel, _) = names(&shared.cfg.redis_prefix);
    let mut up: Option<bool> = None;
    loop {
        let err = match connect(&client) {
            Err(e) => e,
            Ok(mut c) => {
                let mut ps = c.as_pubsub();
                match ps.subscribe(&channel) {
                    Err(e) => e.to_string(),
                    Ok(()) => {
                        if up != Some(true) {
                            info!(%channel, "hub: redis subscriber up, subscribed");
                        }
                        up = Some(true);
                        let _ = ps.set_read_timeout(None);
                        loop {
                            match ps.get_message() {
                                Ok(msg) => deliver(shared, bus, msg.get_payload_bytes()),
                                Err(e) => break e.to_string(),
                            }
                        }
                    }
                }
            }
        };
        if up != Some(false) {
            warn!("hub: redis subscriber lost: {err}; reconnecting");
        }
        up = Some(false);
        std::thread::sleep(RETRY);
    }
}

fn deliver(shared: &HubShared, bus: &Bus, payload: &[u8]) {
    let push: Push = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => {
            warn!("hub: ignoring a malformed message on the redis channel: {e}");
            return;
        }
    };
    if push.origin == shared.instance {
        return;
    }
    let frame = push.frame(now_ms());
    bus.send(Space::Hub, &push.audience(), &frame);
}
