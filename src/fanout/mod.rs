//! Fan-out: the reusable core of every "server pushes to many WebSocket
//! clients" feature: the push hub and the demo app's broadcast.
//!
//! Three pieces, each in its own file:
//! - [`Outbox`] (`outbox.rs`): one client's bounded queue of shared frames.
//!   Enqueueing never waits; a full queue marks the client too slow.
//! - [`ServerWs`] (`conn.rs`): a server-side WebSocket connection after the
//!   101: reads the client's frames (ping/pong/close handled, data messages
//!   handed to the caller), writes what its outbox holds, closes a slow
//!   client with 1013 and everyone with 1001 at shutdown, and slows a
//!   client that sends faster than it reads.
//! - [`Registry`] (`registry.rs`): one shard's index of connections and of
//!   groups (a user's token for the hub), with no lock: it lives on its
//!   shard and is touched only there.
//!
//! Across shards, [`Bus`] sends one [`Delivery`] per shard through the
//! per-core channels (`ShardMsg::Fanout`); each shard hands it to its own
//! registry. A [`Frame`] is `bytes::Bytes`: serialized and framed once,
//! then shared by reference count by every shard and socket it reaches.
//!
//! A new user of this module adds a [`Space`] variant and a registry on the
//! shard for it; nothing else changes. [`Census`] counts each space's
//! connections across the process (the demo's `get_connections`).
//!
//! Must not: block, lock, or copy a frame per recipient.

mod conn;
pub mod delivery;
mod outbox;
mod registry;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use conn::{End, Flow, OnMessage, ServerWs};
pub use delivery::{text_frame, Audience, Delivery, Frame, Space};
pub use outbox::Outbox;
pub use registry::{Membership, Reach, Registry};

use crate::msg::ShardMsg;

/// Every shard's channel: the one way to reach connections on other cores.
#[derive(Clone)]
pub struct Bus {
    shards: Arc<[flume::Sender<ShardMsg>]>,
}

impl Bus {
    pub fn new(shards: Arc<[flume::Sender<ShardMsg>]>) -> Bus {
        Bus { shards }
    }

    /// Shards reached through this bus.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Sends `frame`, the `offset`th of its audience's stream, to every
    /// shard without waiting; each shard's count goes to `counts` when
    /// given. Returns how many shards were asked. One sender per stream
    /// keeps a stream in order on every shard (the channels are FIFO).
    pub fn send_ordered(
        &self,
        space: Space,
        audience: &Audience,
        frame: &Frame,
        offset: u64,
        counts: Option<&flume::Sender<usize>>,
    ) -> usize {
        self.send_skipping(None, space, audience, frame, offset, counts)
    }

    /// Sends `frame` to every shard but `this_shard` without waiting (the
    /// caller delivers there itself, without a channel hop).
    pub fn send_to_others(
        &self,
        this_shard: usize,
        space: Space,
        audience: &Audience,
        frame: &Frame,
    ) {
        self.send_skipping(Some(this_shard), space, audience, frame, 0, None);
    }

    fn send_skipping(
        &self,
        skip: Option<usize>,
        space: Space,
        audience: &Audience,
        frame: &Frame,
        offset: u64,
        counts: Option<&flume::Sender<usize>>,
    ) -> usize {
        let mut asked = 0;
        for (i, tx) in self.shards.iter().enumerate() {
            if skip == Some(i) {
                continue;
            }
            let sent = tx.send(ShardMsg::Fanout(Delivery {
                space,
                audience: audience.clone(),
                frame: frame.clone(),
                offset,
                reply: counts.cloned(),
            }));
            asked += usize::from(sent.is_ok());
        }
        asked
    }

    /// Sends `frame` to every shard but `this_shard` (the caller delivers
    /// there itself, without a channel hop) and sums the connections each
    /// reached. Each shard answers on a channel with room for every answer,
    /// so no shard waits to reply; a shard that is gone counts as 0.
    pub async fn send_counted(
        &self,
        this_shard: usize,
        space: Space,
        audience: &Audience,
        frame: &Frame,
    ) -> usize {
        if self.shards.len() == 1 && this_shard == 0 {
            return 0;
        }
        let (tx, rx) = flume::bounded(self.shards.len());
        let asked = self.send_skipping(Some(this_shard), space, audience, frame, 0, Some(&tx));
        drop(tx);
        let mut total = 0;
        for _ in 0..asked {
            match rx.recv_async().await {
                Ok(n) => total += n,
                Err(_) => break,
            }
        }
        total
    }
}

/// Connections per [`Space`] in the whole process, kept by the registries
/// as connections join and leave (one atomic add each, never per message).
#[derive(Debug, Default)]
pub struct Census([AtomicUsize; Space::COUNT]);

impl Census {
    pub fn count(&self, space: Space) -> usize {
        self.0[space as usize].load(Ordering::Acquire)
    }

    fn add(&self, space: Space) {
        self.0[space as usize].fetch_add(1, Ordering::AcqRel);
    }

    fn sub(&self, space: Space) {
        self.0[space as usize].fetch_sub(1, Ordering::AcqRel);
    }
}
