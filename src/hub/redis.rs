//! The hub thread's Redis link: the delayed-push sorted set and its
//! atomic claim, history (docs/hub.md "Recovery": per stream a meta hash
//! with the epoch and last offset, and a Redis Stream of the messages whose
//! entry ids are their offsets, appended and published by one script that
//! the shards run, `shard_link.rs`), recovery reads and presence, all on the
//! hub thread with `redis-rs`.
//!
//! Reconnects by itself and logs each transition (lost, restored). Must not:
//! log the Redis URL (it may carry a password), or run on a shard.

use std::time::{Duration, Instant};

use redis::{Client, Connection, Script, Value};
use tracing::{debug, info, warn};

use super::message::{now_ms, Push};
use super::request::{Assigned, EngineMsg};
use super::stream::{EpochSource, Recovered, Want};
use crate::config::HubConfig;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Least time between reconnect attempts while Redis is away; requests in
/// between get 503 at once instead of each waiting for a connect.
const RETRY: Duration = Duration::from_millis(200);
/// How often an instance says it is alive (presence). An instance silent
/// for [`ALIVE`] is left out of presence answers; its hash expires after
/// [`PRESENCE_TTL`].
pub const HEARTBEAT: Duration = Duration::from_secs(1);
const ALIVE: Duration = Duration::from_secs(5);
const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// Gives a message the next offset of its stream and appends it, then
/// publishes it: one atomic step (a script runs alone), so every instance
/// hears a stream in offset order and nothing is live that is not kept.
/// A stream without meta (new, expired, or Redis restarted empty) starts a
/// new epoch from the caller's fresh candidate.
const APPEND_FN: &str = r#"
local function append(meta, stream, m, cand, size, ttl, channel)
  local e = redis.call('HGET', meta, 'e')
  if not e then
    e = cand
    redis.call('DEL', stream)
    redis.call('HSET', meta, 'e', e)
  end
  local o = redis.call('HINCRBY', meta, 'o', 1)
  local out = string.sub(m, 1, -2) .. ',"offset":' .. o .. ',"epoch":"' .. e .. '"}'
  redis.call('XADD', stream, 'MAXLEN', size, '0-' .. o, 'm', out)
  redis.call('EXPIRE', meta, ttl)
  redis.call('EXPIRE', stream, ttl)
  redis.call('PUBLISH', channel, out)
  return {o, e}
end
"#;

/// KEYS: meta, stream. ARGV: channel, push JSON, epoch candidate, size, TTL.
const PUBLISH_LUA: &str =
    "return append(KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[1])";

/// The append-and-publish script a shard runs per push (`shard_link.rs`).
pub fn publish_script() -> String {
    format!("{APPEND_FN}{PUBLISH_LUA}")
}

/// The `EVALSHA` that appends `push` to its stream and publishes it.
pub fn append_cmd(
    cfg: &HubConfig,
    sha: &str,
    push: &Push,
    stream: &str,
    epoch_candidate: String,
) -> redis::Cmd {
    let (meta, entries) = stream_keys(&cfg.redis_prefix, stream);
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(sha)
        .arg(2)
        .arg(meta)
        .arg(entries)
        .arg(names(&cfg.redis_prefix).0)
        .arg(to_json(push))
        .arg(epoch_candidate)
        .arg(cfg.history_size)
        .arg(cfg.history_ttl_secs);
    cmd
}

/// Claims due members and publishes them, atomically: no two instances can
/// claim the same member, and a claimed member is already published. With
/// history (ARGV[4] > 0) each goes through `append`, stamped with Redis's
/// time: its `ts` is the last field of the JSON, `null` until it fires.
const CLAIM_LUA: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local size = tonumber(ARGV[4])
for i, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  if size > 0 then
    local user = cjson.decode(m)['user']
    local name = 'broadcast'
    if type(user) == 'string' then name = 'user:' .. user end
    if string.sub(m, -10) == '"ts":null}' then
      local t = redis.call('TIME')
      m = string.sub(m, 1, -11) .. '"ts":' .. (t[1] * 1000 + math.floor(t[2] / 1000)) .. '}'
    end
    append(ARGV[6] .. ':meta:' .. name, ARGV[6] .. ':stream:' .. name, m, ARGV[7] .. i, size, ARGV[5], ARGV[2])
  else
    redis.call('PUBLISH', ARGV[2], m)
  end
end
return #due
"#;

/// KEYS: meta, stream. ARGV: since, epoch. Returns {epoch ('' = no
/// stream), top, 1 if recoverable else 0, the missed messages…}, read in
/// one atomic step with the position it reports.
const RECOVER_LUA: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
local top = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if not e then return {'', 0, 0} end
local since = tonumber(ARGV[1])
if e ~= ARGV[2] or since > top then return {e, top, 0} end
if since == top then return {e, top, 1} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.sub(first[1][1], 3)) > since + 1 then return {e, top, 0} end
local out = {e, top, 1}
for _, x in ipairs(redis.call('XRANGE', KEYS[2], '0-' .. (since + 1), '+')) do
  out[#out + 1] = x[2][2]
end
return out
"#;

pub struct RedisLink {
    client: Result<Client, String>,
    conn: Option<Connection>,
    /// The scripts are loaded on the current connection (`EVALSHA` works).
    loaded: bool,
    /// This instance's presence must be written whole (a new connection:
    /// Redis may have restarted empty).
    presence_stale: bool,
    channel: String,
    zset: String,
    prefix: String,
    claim: Script,
    recover: Script,
    /// (history_size, history_ttl_secs) when history is on.
    history: Option<(usize, u64)>,
    /// This instance's id (its presence hash is named after it).
    instance: String,
    epochs: EpochSource,
    /// Last state logged, so each transition is logged once.
    up: Option<bool>,
    next_try: Instant,
}

pub fn names(prefix: &str) -> (String, String) {
    (format!("{prefix}:push"), format!("{prefix}:delayed"))
}

/// A stream's meta hash (epoch, last offset) and its Redis Stream of
/// messages, whose entry ids are `0-<offset>`.
fn stream_keys(prefix: &str, stream: &str) -> (String, String) {
    (
        format!("{prefix}:meta:{stream}"),
        format!("{prefix}:stream:{stream}"),
    )
}

/// A request waiting for its part of a pipelined reply.
enum Waiting {
    Done(flume::Sender<Result<(), String>>),
}

impl RedisLink {
    pub fn new(url: String, cfg: &HubConfig, instance: &str) -> RedisLink {
        let (channel, zset) = names(&cfg.redis_prefix);
        RedisLink {
            client: Client::open(url).map_err(|e| e.to_string()),
            conn: None,
            loaded: false,
            presence_stale: true,
            channel,
            zset,
            prefix: cfg.redis_prefix.clone(),
            claim: Script::new(&format!("{APPEND_FN}{CLAIM_LUA}")),
            recover: Script::new(RECOVER_LUA),
            history: (cfg.history_size > 0).then_some((cfg.history_size, cfg.history_ttl_secs)),
            epochs: EpochSource::new(),
            instance: instance.to_string(),
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
                    self.loaded = false;
                    self.presence_stale = true;
                }
                Err(e) => {
                    self.lost(&e);
                    return Err(format!("redis unavailable: {e}"));
                }
            }
        }
        if !self.loaded {
            // EVALSHA in a pipeline cannot fall back to EVAL by itself: load
            // the scripts once per connection (a restarted Redis is a new one).
            let c = self.conn.as_mut().ok_or("redis unavailable")?;
            let loaded = self.claim.prepare_invoke().load(c);
            if let Err(e) = loaded {
                let e = e.to_string();
                self.lost(&e);
                return Err(format!("redis unavailable: {e}"));
            }
            self.loaded = true;
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

    /// Schedules and writes presence for a batch in one round trip, then
    /// serves its recoveries; every request is told the outcome.
    pub fn submit(&mut self, batch: Vec<EngineMsg>) {
        let mut pipe = redis::pipe();
        let mut waiting = Vec::with_capacity(batch.len());
        let mut recoveries = Vec::new();
        let mut lookups = Vec::new();
        let mut writes = false;
        for m in batch {
            match m {
                EngineMsg::Schedule { push, delay, reply } => {
                    let due = now_ms() + delay.as_millis() as u64;
                    pipe.zadd(&self.zset, to_json(&push), due);
                    waiting.push(Waiting::Done(reply));
                }
                EngineMsg::Append { reply, .. } => {
                    // With Redis a shard appends on its own connection.
                    let _ = reply.send(Err("appends go through the shard's redis link".into()));
                }
                EngineMsg::Recover { wants, reply } => recoveries.push((wants, reply)),
                EngineMsg::PresenceChanged { user, count } => {
                    // Fire and forget: a lost write is rewritten whole on
                    // the next connection (`heartbeat`).
                    let key = self.presence_key(&self.instance);
                    if count == 0 {
                        pipe.hdel(key, user).ignore();
                    } else {
                        pipe.hset(key, user, count).ignore();
                    }
                    writes = true;
                }
                EngineMsg::Presence { user, reply } => lookups.push((user, reply)),
                EngineMsg::Shutdown => {}
            }
        }
        if !waiting.is_empty() || writes {
            self.answer(pipe, waiting);
        }
        for (wants, reply) in recoveries {
            let _ = reply.send(self.recover(&wants));
        }
        for (user, reply) in lookups {
            let _ = reply.send(self.presence_of(&user));
        }
    }

    fn presence_key(&self, instance: &str) -> String {
        format!("{}:presence:{instance}", self.prefix)
    }

    /// Says this instance is alive, keeps its presence hash from expiring,
    /// forgets long-dead instances, and after a reconnect writes the whole
    /// presence again (`snapshot`).
    pub fn heartbeat(&mut self, instance: &str, snapshot: impl FnOnce() -> Vec<(String, usize)>) {
        let key = self.presence_key(instance);
        let instances = format!("{}:instances", self.prefix);
        let now = now_ms();
        let mut pipe = redis::pipe();
        if self.presence_stale {
            pipe.del(&key).ignore();
            let all = snapshot();
            if !all.is_empty() {
                pipe.hset_multiple(&key, &all).ignore();
            }
        }
        pipe.zadd(&instances, instance, now)
            .ignore()
            .expire(&key, PRESENCE_TTL.as_secs() as i64)
            .ignore()
            .zrembyscore(&instances, "-inf", now.saturating_sub(60_000))
            .ignore();
        let Ok(c) = self.conn() else { return };
        match pipe.query::<()>(c) {
            Ok(()) => self.presence_stale = false,
            Err(e) => self.lost(&e.to_string()),
        }
    }

    /// `user`'s connections on every other instance heard from lately.
    fn presence_of(&mut self, user: &str) -> Result<Vec<(String, usize)>, String> {
        let instances_key = format!("{}:instances", self.prefix);
        let since = now_ms().saturating_sub(ALIVE.as_millis() as u64);
        let me = self.instance.clone();
        let keys: Vec<(String, String)> = {
            let c = self.conn()?;
            let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(&instances_key)
                .arg(since)
                .arg("+inf")
                .query(c)
                .map_err(|e| e.to_string())?;
            ids.into_iter()
                .filter(|id| *id != me)
                .map(|id| (self.presence_key(&id), id))
                .collect()
        };
        let mut pipe = redis::pipe();
        for (key, _) in &keys {
            pipe.hget(key, user);
        }
        let c = self.conn()?;
        let counts: Vec<Option<usize>> = pipe.query(c).map_err(|e| e.to_string())?;
        Ok(keys
            .into_iter()
            .zip(counts)
            .filter_map(|((_, id), n)| n.filter(|n| *n > 0).map(|n| (id, n)))
            .collect())
    }

    fn answer(&mut self, pipe: redis::Pipeline, waiting: Vec<Waiting>) {
        let result = match self.conn() {
            Err(e) => Err(e),
            Ok(c) => pipe.query::<Vec<Value>>(c).map_err(|e| e.to_string()),
        };
        let replies = match result {
            Ok(r) if r.len() == waiting.len() => r,
            Ok(_) => {
                self.lost("a pipelined reply did not match its requests");
                Vec::new()
            }
            Err(e) => {
                if self.conn.is_some() {
                    self.lost(&e);
                }
                Vec::new()
            }
        };
        let failed = || format!("redis unavailable: {}", "no reply");
        let mut replies = replies.into_iter();
        for w in waiting {
            let got = replies.next();
            match w {
                Waiting::Done(r) => {
                    let _ = r.send(got.map(|_| ()).ok_or_else(failed));
                }
            }
        }
    }

    /// Reads what each want missed (one script call per stream).
    fn recover(&mut self, wants: &[Want]) -> Result<Vec<Recovered>, String> {
        let (prefix, script) = (self.prefix.clone(), self.recover.clone());
        let mut out = Vec::with_capacity(wants.len());
        for w in wants {
            let (meta, entries) = stream_keys(&prefix, &w.stream);
            let c = self.conn()?;
            let got = script
                .key(meta)
                .key(entries)
                .arg(w.since)
                .arg(&w.epoch)
                .invoke::<Vec<Value>>(c);
            match got {
                Ok(v) => out.push(recovered(w, v)?),
                Err(e) => {
                    let e = e.to_string();
                    self.lost(&e);
                    return Err(format!("redis unavailable: {e}"));
                }
            }
        }
        Ok(out)
    }

    /// Claims (and thereby publishes) every delayed push that is due.
    pub fn claim_due(&mut self) {
        let (zset, channel, prefix) =
            (self.zset.clone(), self.channel.clone(), self.prefix.clone());
        let (size, ttl) = self.history.unwrap_or((0, 0));
        let epoch = self.epochs.fresh();
        let script = self.claim.clone();
        let Ok(c) = self.conn() else { return };
        let claimed = script
            .key(zset)
            .arg(now_ms())
            .arg(channel)
            .arg(256)
            .arg(size)
            .arg(ttl)
            .arg(prefix)
            .arg(format!("{epoch}-"))
            .invoke::<i64>(c);
        match claimed {
            Ok(0) => {}
            Ok(n) => debug!(claimed = n, "hub: delayed pushes due, published"),
            Err(e) => self.lost(&e.to_string()),
        }
    }
}

/// The publish script's `{offset, epoch}`.
pub fn assigned(v: Value, stream: String) -> Result<Assigned, String> {
    let bad = || "redis: unexpected reply to the append script".to_string();
    let Value::Array(items) = v else {
        return Err(bad());
    };
    match items.as_slice() {
        [Value::Int(o), e] => Ok(Assigned {
            stream,
            offset: u64::try_from(*o).map_err(|_| bad())?,
            epoch: redis::from_redis_value(e).map_err(|_| bad())?,
            shards: None,
        }),
        _ => Err(bad()),
    }
}

/// The recover script's reply, the missed messages framed.
fn recovered(w: &Want, v: Vec<Value>) -> Result<Recovered, String> {
    let bad = || "redis: unexpected reply to the recover script".to_string();
    let mut it = v.into_iter();
    let epoch: String = it
        .next()
        .and_then(|e| redis::from_redis_value(&e).ok())
        .ok_or_else(bad)?;
    let top = match it.next() {
        Some(Value::Int(t)) => u64::try_from(t).map_err(|_| bad())?,
        _ => return Err(bad()),
    };
    let ok = matches!(it.next(), Some(Value::Int(1)));
    let mut frames = Vec::with_capacity(it.len());
    for m in it {
        let bytes: Vec<u8> = redis::from_redis_value(&m).map_err(|_| bad())?;
        let push: Push = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        frames.push(push.frame(now_ms()));
    }
    Ok(Recovered {
        kind: w.kind,
        recovered: ok && !epoch.is_empty(),
        top,
        epoch,
        frames,
    })
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

pub fn to_json(push: &Push) -> String {
    serde_json::to_string(push).unwrap_or_default()
}
