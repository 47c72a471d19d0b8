//! The engine's two shard-local wake-ups (not `Send`; one thread):
//!
//! - [`Event`]: fire-once, many waiters. "Stop accepting" and "close every
//!   session now". Waiters register their waker once (a monoio task's waker
//!   is stable), so polling a waiting `select!` branch on every message
//!   costs one `Cell` read.
//! - [`Notify`]: re-armable, one waiter, and a notification before the wait
//!   is remembered. Two futures of one task, or two tasks of one thread,
//!   telling each other "look again": the tunnel bridge's pumps, a fan-out
//!   outbox and its writer, loadgen's sessions.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Fire-once, many waiters.
#[derive(Default)]
pub struct Event {
    fired: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Event {
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait<'_> {
        Wait {
            event: self,
            slot: None,
        }
    }

    fn register(&self, waker: &Waker) -> usize {
        let mut slots = self.slots.borrow_mut();
        match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = Some(waker.clone());
                i
            }
            None => {
                slots.push(Some(waker.clone()));
                slots.len() - 1
            }
        }
    }

    fn refresh(&self, slot: usize, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        match &mut slots[slot] {
            Some(w) if w.will_wake(waker) => {}
            s => *s = Some(waker.clone()),
        }
    }

    fn release(&self, slot: usize) {
        self.slots.borrow_mut()[slot] = None;
        self.free.borrow_mut().push(slot);
    }
}

pub struct Wait<'a> {
    event: &'a Event,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.fired.get() {
            return Poll::Ready(());
        }
        match self.slot {
            Some(slot) => self.event.refresh(slot, cx.waker()),
            None => self.slot = Some(self.event.register(cx.waker())),
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.event.release(slot);
        }
    }
}

/// Re-armable, one waiter; a notification before the wait is remembered.
#[derive(Default)]
pub struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Ready once notified since the last time it was ready.
    pub fn notified(&self) -> Notified<'_> {
        Notified(self)
    }

    /// Consumes a pending notification, or registers `cx`'s waker for the
    /// next one (for futures that wait on a condition and look again when
    /// told).
    pub fn poll_notified(&self, cx: &Context<'_>) -> Poll<()> {
        if self.set.replace(false) {
            return Poll::Ready(());
        }
        let mut slot = self.waker.borrow_mut();
        match &*slot {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify")
            .field("set", &self.set.get())
            .finish()
    }
}

/// Future of [`Notify::notified`].
pub struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_notified(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_wakes_and_slots_are_reused() {
        let ev = Event::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut a = Box::pin(ev.wait());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert!(a.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ev.slots.borrow().len(), 1);
        drop(a);
        let mut b = Box::pin(ev.wait());
        assert!(b.as_mut().poll(&mut cx).is_pending());
        assert_eq!(ev.slots.borrow().len(), 1, "slot reused");
        ev.fire();
        assert!(b.as_mut().poll(&mut cx).is_ready());
        let mut late = Box::pin(ev.wait());
        assert!(
            late.as_mut().poll(&mut cx).is_ready(),
            "waits after fire are ready at once"
        );
    }

    #[test]
    fn notify_is_remembered_once_and_rearms() {
        let n = Notify::default();
        let mut cx = Context::from_waker(Waker::noop());
        n.notify();
        assert!(Box::pin(n.notified()).as_mut().poll(&mut cx).is_ready());
        let mut again = Box::pin(n.notified());
        assert!(again.as_mut().poll(&mut cx).is_pending(), "consumed");
        n.notify();
        assert!(again.as_mut().poll(&mut cx).is_ready(), "re-armed");
    }
}
