//! One connection's bounded queue of shared frames, filled by deliveries on
//! its shard and drained by the connection's own task.
//!
//! Must not: wait when full (the caller is delivering to everyone else), or
//! be touched from another thread (`Rc`/`Cell`, shard-local by design).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::Frame;

pub struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    cap: usize,
    /// The draining task; one waiter only.
    waker: RefCell<Option<Waker>>,
    overflowed: Cell<bool>,
    /// The connection is closing: it takes (and counts) nothing more.
    closed: Cell<bool>,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            cap: cap.max(1),
            waker: RefCell::new(None),
            overflowed: Cell::new(false),
            closed: Cell::new(false),
        }
    }

    /// Queues `frame` (a reference-count bump, no copy). `false` when the
    /// client was already too slow or is now: its queue is then dropped and
    /// it will be closed with 1013.
    pub fn push(&self, frame: &Frame) -> bool {
        if self.overflowed.get() || self.closed.get() {
            return false;
        }
        let mut q = self.queue.borrow_mut();
        if q.len() >= self.cap {
            self.overflowed.set(true);
            *q = VecDeque::new();
            drop(q);
            self.wake();
            return false;
        }
        let was_empty = q.is_empty();
        q.push_back(frame.clone());
        drop(q);
        if was_empty {
            self.wake();
        }
        true
    }

    /// Stops taking frames and drops the queued ones (the connection is
    /// closing; deliveries from now on do not count it).
    pub fn close(&self) {
        self.closed.set(true);
        *self.queue.borrow_mut() = VecDeque::new();
    }

    pub fn pop(&self) -> Option<Frame> {
        let mut q = self.queue.borrow_mut();
        let f = q.pop_front();
        if q.is_empty() && q.capacity() > 16 {
            // A burst grew the ring; an idle client should not keep it.
            *q = VecDeque::new();
        }
        f
    }

    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    pub fn overflowed(&self) -> bool {
        self.overflowed.get()
    }

    /// Ready once a frame is queued or the client overflowed.
    pub fn ready(&self) -> Ready<'_> {
        Ready {
            outbox: self,
            overflow_only: false,
        }
    }

    /// Ready once the client overflowed.
    pub fn overflow(&self) -> Ready<'_> {
        Ready {
            outbox: self,
            overflow_only: true,
        }
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

pub struct Ready<'a> {
    outbox: &'a Outbox,
    overflow_only: bool,
}

impl Future for Ready<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let o = self.outbox;
        if o.overflowed.get() || (!self.overflow_only && !o.queue.borrow().is_empty()) {
            return Poll::Ready(());
        }
        let mut slot = o.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_then_overflowed_and_shared_not_copied() {
        let o = Outbox::new(2);
        let f = Frame::from_static(b"\x81\x01a");
        assert!(o.push(&f) && o.push(&f));
        assert_eq!(o.pop().unwrap().as_ptr(), f.as_ptr(), "same bytes, no copy");
        assert!(o.push(&f));
        assert!(!o.push(&f), "third in a queue of 2 overflows");
        assert!(o.overflowed() && o.is_empty(), "queue dropped on overflow");
        assert!(!o.push(&f));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut o.overflow()).poll(&mut cx).is_ready());
    }

    #[test]
    fn ready_waits_for_a_frame() {
        let o = Outbox::new(4);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut o.ready()).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut o.overflow()).poll(&mut cx).is_pending());
        o.push(&Frame::from_static(b"x"));
        assert!(Pin::new(&mut o.ready()).poll(&mut cx).is_ready());
        assert_eq!(o.len(), 1);
    }
}
