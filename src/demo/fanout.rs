//! The demo app's fan-out: each demo connection's bounded [`Outbox`], the
//! shard's registry of them, and broadcast to every shard over the per-core
//! channels (`ShardMsg::DemoBroadcast`), with each frame built once and
//! shared (`Arc<[u8]>`) by every recipient.
//!
//! NOTE: deliberately small. The push hub (issue 11) builds the general
//! server-side session with a bounded queue of shared frames, a per-shard
//! registry and cross-shard broadcast; at merge this file is to be unified
//! with the hub's fan-out and removed.
//!
//! Must not: wait on a recipient (a full queue closes that one with 1013 and
//! never delays the others), lock, or copy a broadcast frame per recipient.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};

use tracing::info;

use crate::ctx::ShardCtx;
use crate::metrics::SessionKind;
use crate::msg::ShardMsg;
use crate::ws::frame::{close_code, close_frame};

/// A frame waiting to be written: shared by all recipients, or this
/// connection's own (responses, pongs).
pub enum Frame {
    Shared(Arc<[u8]>),
    Own(Vec<u8>),
}

impl Frame {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Frame::Shared(b) => b,
            Frame::Own(b) => b,
        }
    }
}

/// What the writer gets next.
pub enum Next {
    Frame(Frame),
    /// The last frame (a Close); everything still queued is dropped.
    Final(Vec<u8>),
}

/// One connection's bounded queue. Single-threaded (one shard).
pub struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    max: usize,
    last: RefCell<Option<Vec<u8>>>,
    finishing: Cell<bool>,
    writer: Cell<Option<Waker>>,
    reader: Cell<Option<Waker>>,
    /// The session, waiting to give a stalled final write a deadline.
    watcher: Cell<Option<Waker>>,
}

impl Outbox {
    pub fn new(max: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::with_capacity(max.min(16))),
            max,
            last: RefCell::new(None),
            finishing: Cell::new(false),
            writer: Cell::new(None),
            reader: Cell::new(None),
            watcher: Cell::new(None),
        }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Queues a broadcast frame; `false` when the queue was full, in which
    /// case the connection is being closed with 1013.
    fn deliver(&self, frame: &Arc<[u8]>) -> bool {
        if self.finishing.get() {
            return true;
        }
        if self.queue.borrow().len() >= self.max {
            let close = close_frame(close_code::TRY_AGAIN_LATER, "too slow: queue full", None);
            self.finish(close);
            return false;
        }
        self.queue
            .borrow_mut()
            .push_back(Frame::Shared(frame.clone()));
        self.wake_writer();
        true
    }

    /// Queues one of the connection's own frames. Callers wait for
    /// [`Outbox::room`] first, so a client that sends without reading is
    /// slowed down rather than queued without bound.
    pub fn push_own(&self, frame: Vec<u8>) {
        if !self.finishing.get() {
            self.queue.borrow_mut().push_back(Frame::Own(frame));
            self.wake_writer();
        }
    }

    /// Ends the connection with `close` after the frame being written.
    pub fn finish(&self, close: Vec<u8>) {
        if !self.finishing.replace(true) {
            *self.last.borrow_mut() = Some(close);
            self.queue.borrow_mut().clear();
            self.wake_writer();
            for slot in [&self.reader, &self.watcher] {
                if let Some(w) = slot.take() {
                    w.wake();
                }
            }
        }
    }

    /// Completes once [`Outbox::finish`] was called.
    pub async fn finishing(&self) {
        poll_fn(|cx| {
            if self.finishing.get() {
                return Poll::Ready(());
            }
            self.watcher.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    pub fn is_finishing(&self) -> bool {
        self.finishing.get()
    }

    /// Waits until the queue has room (or the connection is finishing).
    pub async fn room(&self) {
        poll_fn(|cx| {
            if self.finishing.get() || self.queue.borrow().len() < self.max {
                return Poll::Ready(());
            }
            self.reader.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// The next frame to write; wakes the reader when room frees up.
    pub async fn next(&self) -> Next {
        poll_fn(|cx| {
            if let Some(close) = self.last.borrow_mut().take() {
                return Poll::Ready(Next::Final(close));
            }
            if let Some(f) = self.queue.borrow_mut().pop_front() {
                if let Some(w) = self.reader.take() {
                    w.wake();
                }
                return Poll::Ready(Next::Frame(f));
            }
            self.writer.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// A shard's demo connections.
#[derive(Default)]
pub struct Registry {
    conns: RefCell<Vec<(u64, Rc<Outbox>)>>,
    next_id: Cell<u64>,
}

/// Membership in the registry (and the process-wide count) while it lives.
pub struct Member<'a> {
    shard: &'a ShardCtx,
    registry: &'a Registry,
    id: u64,
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        let mut conns = self.registry.conns.borrow_mut();
        if let Some(i) = conns.iter().position(|(id, _)| *id == self.id) {
            conns.swap_remove(i);
        }
        self.shard
            .shared
            .demo_connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds a connection's outbox to its shard's registry.
pub fn join<'a>(shard: &'a ShardCtx, registry: &'a Registry, outbox: Rc<Outbox>) -> Member<'a> {
    let id = registry.next_id.get();
    registry.next_id.set(id + 1);
    registry.conns.borrow_mut().push((id, outbox));
    shard.shared.demo_connections.fetch_add(1, Ordering::AcqRel);
    Member {
        shard,
        registry,
        id,
    }
}

/// Demo connections open in the whole process.
pub fn connections(shard: &ShardCtx) -> usize {
    shard.shared.demo_connections.load(Ordering::Acquire)
}

/// Sends one framed broadcast to every demo connection on every shard.
pub fn broadcast(shard: &ShardCtx, registry: &Registry, frame: Arc<[u8]>) {
    for (i, peer) in shard.peers.iter().enumerate() {
        if i != shard.id {
            let _ = peer.send(ShardMsg::DemoBroadcast(frame.clone()));
        }
    }
    deliver_local(shard, registry, &frame);
}

/// Queues `frame` for this shard's demo connections (from the shard's
/// message loop, or the sender's own shard).
pub fn deliver_local(shard: &ShardCtx, registry: &Registry, frame: &Arc<[u8]>) {
    // Delivery only queues and wakes (wakers run later), so nothing can
    // join or leave the registry while it is borrowed here.
    let mut slow = 0;
    for (_, outbox) in registry.conns.borrow().iter() {
        slow += u64::from(!outbox.deliver(frame));
    }
    for _ in 0..slow {
        shard.metrics.slow_consumer(SessionKind::Demo);
        info!(
            shard = shard.id,
            "demo client too slow (queue full): closing with 1013"
        );
    }
}
