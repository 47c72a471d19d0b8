//! A delay line: chunks of bytes stamped with a due time, written out when
//! due. Used by the echo server's `--delay-ms` (a distant target) and by the
//! delay proxy (a fixed one-way delay each direction). The queue is bounded
//! in bytes, so a slow consumer slows the producer instead of growing memory.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::clock::PreciseTimer;
use ws_relay_core::net::event::Notify;

/// Recycled buffers kept per line.
const FREE_LIST: usize = 64;

/// A bounded FIFO of `(due_ns, bytes)` shared by a producer and a consumer
/// future on the same thread.
#[derive(Debug)]
pub struct DelayLine {
    queue: RefCell<VecDeque<(u64, Vec<u8>)>>,
    queued_bytes: Cell<usize>,
    limit: usize,
    closed: Cell<bool>,
    has_data: Notify,
    has_room: Notify,
    free: RefCell<Vec<Vec<u8>>>,
}

impl DelayLine {
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            limit: limit_bytes,
            closed: Cell::new(false),
            has_data: Notify::default(),
            has_room: Notify::default(),
            free: RefCell::new(Vec::new()),
        }
    }

    /// An empty buffer, recycled when possible.
    pub fn buffer(&self) -> Vec<u8> {
        self.free.borrow_mut().pop().unwrap_or_default()
    }

    /// Returns a buffer to the free list.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        buf.clear();
        let mut free = self.free.borrow_mut();
        if free.len() < FREE_LIST {
            free.push(buf);
        }
    }

    /// Queues `data` to be written at `due_ns`; waits while the line is full.
    /// Data pushed after [`close`](Self::close) is dropped.
    pub async fn push(&self, due_ns: u64, data: Vec<u8>) {
        while self.queued_bytes.get() >= self.limit && !self.closed.get() {
            self.has_room.notified().await;
        }
        if self.closed.get() {
            self.recycle(data);
            return;
        }
        self.queued_bytes.set(self.queued_bytes.get() + data.len());
        self.queue.borrow_mut().push_back((due_ns, data));
        self.has_data.notify();
    }

    /// No more data will come (or the consumer gave up).
    pub fn close(&self) {
        self.closed.set(true);
        self.has_data.notify();
        self.has_room.notify();
    }

    /// Next chunk, or None once closed and empty.
    pub async fn pop(&self) -> Option<(u64, Vec<u8>)> {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            if let Some((due, data)) = next {
                self.queued_bytes.set(self.queued_bytes.get() - data.len());
                self.has_room.notify();
                return Some((due, data));
            }
            if self.closed.get() {
                return None;
            }
            self.has_data.notified().await;
        }
    }
}

/// Consumer: writes each chunk to `io` when it is due, until the line is
/// closed and empty. On a write error the line is closed so the producer
/// stops too.
pub async fn drain<W: AsyncWriteRent>(line: &DelayLine, io: &mut W) -> std::io::Result<()> {
    let mut timer = PreciseTimer::new()?;
    while let Some((due, buf)) = line.pop().await {
        timer.sleep_until(due).await?;
        let (res, buf) = io.write_all(buf).await;
        line.recycle(buf);
        if let Err(e) = res {
            line.close();
            return Err(e);
        }
    }
    Ok(())
}
