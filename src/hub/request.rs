//! What shards (and the presence map) ask the hub thread (`engine.rs`),
//! which hands the Redis ones to its link (`redis.rs`). Plain data.

use super::message::Push;
use super::stream::{Recovered, Want};

/// A request to the hub thread.
pub enum EngineMsg {
    /// History in memory: give `push` its offset, keep it and deliver it;
    /// each shard's count goes to `counts`. (With Redis a shard does this
    /// itself, `shard_link.rs`.)
    Append {
        push: Push,
        counts: flume::Sender<usize>,
        reply: flume::Sender<Result<Assigned, String>>,
    },
    /// History on: read what a reconnecting client missed.
    Recover {
        wants: Vec<Want>,
        reply: flume::Sender<Result<Vec<Recovered>, String>>,
    },
    /// Redis only: this instance's count of `user`'s connections changed.
    PresenceChanged {
        user: String,
        count: usize,
    },
    /// Redis only: `user`'s connections on every other live instance.
    Presence {
        user: String,
        reply: flume::Sender<Result<Vec<(String, usize)>, String>>,
    },
    /// Deliver `push` after `delay`.
    Schedule {
        push: Push,
        delay: std::time::Duration,
        reply: flume::Sender<Result<(), String>>,
    },
    Shutdown,
}

/// Where an appended push landed (the push API's answer).
#[derive(Debug, Clone)]
pub struct Assigned {
    pub stream: String,
    pub offset: u64,
    pub epoch: String,
    /// Shards whose counts will arrive on the request's `counts` channel;
    /// `None` with Redis, where each instance's subscriber delivers and
    /// nobody counts.
    pub shards: Option<usize>,
}
