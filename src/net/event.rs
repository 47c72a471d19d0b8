//! A shard-local, fire-once event: many waiters, one `fire`.
//!
//! Used for "stop accepting" and "close every session now". Waiters register
//! their waker once (a monoio task's waker is stable), so polling a waiting
//! `select!` branch on every message costs one `Cell` read. Not `Send`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

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
}
