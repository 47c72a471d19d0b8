//! One connection's bounded queue of shared frames, filled by deliveries on
//! its shard and drained by the connection's own task.
//!
//! Draining is vectored: every frame queued when the task runs goes out in
//! one `sendmsg`. On loopback nearly all of a delivery's cost is the kernel's
//! per-send work (the profile in docs/hub.md "Fan-out"), so a client that fell
//! a few pushes behind catches up with one syscall, not one per push.
//!
//! Must not: wait when full (the caller is delivering to everyone else), be
//! touched from another thread (`Rc`/`Cell`, shard-local by design), or drop
//! a frame that is partly on the wire (a Close must not land inside it).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;

use super::Frame;
use crate::net::event::Notify;

/// Most frames one vectored send takes (`IoSlice`s on the caller's stack).
const BATCH: usize = 64;

/// What [`Outbox::send_queued`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued went out.
    Empty,
    /// The socket is full; wait for writability and call again.
    Blocked,
}

pub struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    /// Bytes of the front frame already sent by a short vectored send.
    head_sent: Cell<usize>,
    cap: usize,
    /// Room beyond `cap` for recovered history still queued: shrinks as
    /// frames go out, so a replay of any length does not read as slowness.
    backlog: Cell<usize>,
    /// Tells the draining task (one waiter) to look again.
    wake: Notify,
    overflowed: Cell<bool>,
    /// The connection is closing: it takes (and counts) nothing more.
    closed: Cell<bool>,
    /// Set by [`Outbox::end_with`]: the Close the feature asked for instead
    /// of 1013.
    ending: Cell<Option<(u16, &'static str)>>,
}

impl Outbox {
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            queue: RefCell::new(VecDeque::new()),
            head_sent: Cell::new(0),
            cap: cap.max(1),
            backlog: Cell::new(0),
            wake: Notify::default(),
            overflowed: Cell::new(false),
            closed: Cell::new(false),
            ending: Cell::new(None),
        }
    }

    /// Queues `frame` (a reference-count bump, no copy). `false` when the
    /// client was already too slow or is now: its queue is then dropped and
    /// it will be closed with 1013.
    pub fn push(&self, frame: &Frame) -> bool {
        if self.overflowed.get() || self.closed.get() {
            return false;
        }
        if self.queue.borrow().len() >= self.cap + self.backlog.get() {
            self.overflow_now();
            return false;
        }
        self.enqueue(frame);
        true
    }

    /// Marks the client too slow: its queue is dropped (but a frame half on
    /// the wire) and it will be closed with 1013.
    pub fn overflow_now(&self) {
        self.overflowed.set(true);
        self.backlog.set(0);
        let mut q = self.queue.borrow_mut();
        if self.head_sent.get() > 0 {
            // Half on the wire: it must finish before the 1013 Close.
            q.truncate(1);
        } else {
            *q = VecDeque::new();
        }
        drop(q);
        self.wake();
    }

    /// Ends the connection with the feature's own Close (`code`, `reason`):
    /// it takes nothing more, what is queued is dropped (but a frame half on
    /// the wire), and the Close follows.
    pub fn end_with(&self, code: u16, reason: &'static str) {
        if self.overflowed.get() || self.closed.get() {
            return;
        }
        self.ending.set(Some((code, reason)));
        self.overflow_now();
    }

    /// The Close asked for by [`Outbox::end_with`], if any.
    pub fn ending(&self) -> Option<(u16, &'static str)> {
        self.ending.get()
    }

    /// Queues recovered history beyond the cap (it is bounded by the
    /// stream's history size, and the client asked for it).
    pub fn push_backlog(&self, frames: impl Iterator<Item = Frame>) {
        if self.overflowed.get() || self.closed.get() {
            return;
        }
        let mut q = self.queue.borrow_mut();
        let was_empty = q.is_empty();
        let before = q.len();
        q.extend(frames);
        self.backlog.set(self.backlog.get() + (q.len() - before));
        let any = q.len() > before;
        drop(q);
        if was_empty && any {
            self.wake();
        }
    }

    /// Queues one of the connection's own frames (an answer to the client,
    /// a pong). It never overflows the outbox: the connection handles no
    /// more of its client's messages while the outbox is full (`ServerWs`),
    /// so its own frames take it at most one past full.
    pub fn push_own(&self, frame: &Frame) {
        if !self.overflowed.get() && !self.closed.get() {
            self.enqueue(frame);
        }
    }

    /// Appends `frame` (a reference-count bump) and wakes the draining task
    /// when the queue was empty.
    fn enqueue(&self, frame: &Frame) {
        let mut q = self.queue.borrow_mut();
        let was_empty = q.is_empty();
        q.push_back(frame.clone());
        drop(q);
        if was_empty {
            self.wake();
        }
    }

    /// At capacity: the next delivery overflows it.
    pub fn is_full(&self) -> bool {
        self.queue.borrow().len() >= self.cap + self.backlog.get()
    }

    /// Stops taking frames and drops the queued ones (the connection is
    /// closing; deliveries from now on do not count it).
    pub fn close(&self) {
        self.closed.set(true);
        self.head_sent.set(0);
        self.backlog.set(0);
        *self.queue.borrow_mut() = VecDeque::new();
    }

    /// The next whole frame (for writers that cannot send vectored: TLS).
    /// Not to be mixed with [`Outbox::send_queued`] on one connection.
    pub fn pop(&self) -> Option<Frame> {
        debug_assert_eq!(self.head_sent.get(), 0, "pop after a short send");
        let mut q = self.queue.borrow_mut();
        let f = q.pop_front();
        if f.is_some() {
            self.backlog.set(self.backlog.get().saturating_sub(1));
        }
        shrink_if_idle(&mut q);
        f
    }

    /// Sends what is queued through `send` (one non-blocking vectored send:
    /// `Ok(None)` = would block), up to [`BATCH`] frames per call, and pops
    /// every frame that went out whole. Never waits.
    pub fn send_queued(
        &self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<Option<usize>>,
    ) -> io::Result<Flushed> {
        let mut q = self.queue.borrow_mut();
        loop {
            if q.is_empty() {
                shrink_if_idle(&mut q);
                return Ok(Flushed::Empty);
            }
            let mut iov = [IoSlice::new(&[]); BATCH];
            let mut asked = 0;
            let mut n = 0;
            for (slot, frame) in iov.iter_mut().zip(q.iter()) {
                let rest = if n == 0 {
                    &frame[self.head_sent.get()..]
                } else {
                    frame
                };
                *slot = IoSlice::new(rest);
                asked += rest.len();
                n += 1;
            }
            let Some(sent) = send(&iov[..n])? else {
                return Ok(Flushed::Blocked);
            };
            let mut done = self.head_sent.get() + sent;
            while q.front().is_some_and(|f| done >= f.len()) {
                done -= q.front().map_or(0, Bytes::len);
                q.pop_front();
                self.backlog.set(self.backlog.get().saturating_sub(1));
            }
            self.head_sent.set(done);
            if sent < asked {
                // A short send means the socket buffer is full now.
                return Ok(Flushed::Blocked);
            }
        }
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
        self.wake.notify();
    }
}

/// A burst grew the ring; an idle client should not keep it.
fn shrink_if_idle(q: &mut VecDeque<Frame>) {
    if q.is_empty() && q.capacity() > 16 {
        *q = VecDeque::new();
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
        loop {
            if o.overflowed.get() || (!self.overflow_only && !o.queue.borrow().is_empty()) {
                return Poll::Ready(());
            }
            // A notification for a frame already taken: look again.
            if o.wake.poll_notified(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

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

    /// A stand-in socket that takes at most `room` bytes per call.
    fn sink<'a>(
        out: &'a mut Vec<u8>,
        room: &'a mut usize,
    ) -> impl FnMut(&[IoSlice<'_>]) -> io::Result<Option<usize>> + 'a {
        move |iov| {
            if *room == 0 {
                return Ok(None);
            }
            let mut took = 0;
            for s in iov {
                let n = s.len().min(*room - took);
                out.extend_from_slice(&s[..n]);
                took += n;
            }
            *room -= took;
            Ok(Some(took))
        }
    }

    #[test]
    fn vectored_send_takes_every_frame_and_resumes_mid_frame() {
        let o = Outbox::new(8);
        for f in [&b"aaaa"[..], b"bb", b"cccccc"] {
            o.push(&Frame::copy_from_slice(f));
        }
        let (mut out, mut room) = (Vec::new(), 5);
        assert_eq!(
            o.send_queued(sink(&mut out, &mut room)).unwrap(),
            Flushed::Blocked
        );
        assert_eq!(out, b"aaaab", "one call took a frame and a half");
        assert_eq!(o.len(), 2, "the half-sent frame stays queued");
        let mut room = 100;
        assert_eq!(
            o.send_queued(sink(&mut out, &mut room)).unwrap(),
            Flushed::Empty
        );
        assert_eq!(
            out, b"aaaabbcccccc",
            "resumed inside the frame, nothing doubled"
        );
        assert!(o.is_empty());
    }

    #[test]
    fn overflow_keeps_a_frame_that_is_half_on_the_wire() {
        let o = Outbox::new(2);
        o.push(&Frame::from_static(b"1234"));
        o.push(&Frame::from_static(b"5678"));
        let (mut out, mut room) = (Vec::new(), 2);
        assert_eq!(
            o.send_queued(sink(&mut out, &mut room)).unwrap(),
            Flushed::Blocked
        );
        assert!(!o.push(&Frame::from_static(b"x")), "third in a queue of 2");
        assert!(o.overflowed());
        let mut room = 100;
        assert_eq!(
            o.send_queued(sink(&mut out, &mut room)).unwrap(),
            Flushed::Empty
        );
        assert_eq!(
            out, b"1234",
            "the started frame finishes; the rest is dropped"
        );
    }

    #[test]
    fn more_frames_than_one_batch_all_go() {
        let o = Outbox::new(1000);
        for i in 0..(BATCH * 2 + 3) {
            o.push(&Frame::from(vec![i as u8]));
        }
        let (mut out, mut room) = (Vec::new(), usize::MAX);
        assert_eq!(
            o.send_queued(sink(&mut out, &mut room)).unwrap(),
            Flushed::Empty
        );
        assert_eq!(
            out,
            (0..(BATCH * 2 + 3)).map(|i| i as u8).collect::<Vec<_>>()
        );
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
