//! One shard's index of fan-out connections: a slab of outboxes and a map
//! from group name to the slots in it.
//!
//! Lives on its shard and is touched only there, so there is no lock. Must
//! not: hold a borrow across an await, or allocate per delivered frame.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::{Audience, Frame, Outbox};

struct Entry {
    outbox: Rc<Outbox>,
    group: Option<Rc<str>>,
}

#[derive(Default)]
pub struct Registry {
    slots: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    groups: RefCell<HashMap<Rc<str>, Vec<usize>>>,
    live: Cell<usize>,
}

impl Registry {
    /// Adds a connection (in no group); it leaves when the guard drops.
    pub fn join(&self, outbox: Rc<Outbox>) -> Membership<'_> {
        let entry = Some(Entry {
            outbox,
            group: None,
        });
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(i) => {
                slots[i] = entry;
                i
            }
            None => {
                slots.push(entry);
                slots.len() - 1
            }
        };
        self.live.set(self.live.get() + 1);
        Membership {
            registry: self,
            slot,
        }
    }

    /// Connections on this shard.
    pub fn len(&self) -> usize {
        self.live.get()
    }

    pub fn is_empty(&self) -> bool {
        self.live.get() == 0
    }

    /// Connections of `group` on this shard.
    pub fn group_len(&self, group: &str) -> usize {
        self.groups.borrow().get(group).map_or(0, Vec::len)
    }

    /// Queues `frame` for the audience; returns how many connections took it
    /// (a client that overflows here is not counted and will be closed).
    pub fn deliver(&self, audience: &Audience, frame: &Frame) -> usize {
        let slots = self.slots.borrow();
        let push = |i: &usize| slots[*i].as_ref().is_some_and(|e| e.outbox.push(frame));
        match audience {
            Audience::All => slots
                .iter()
                .flatten()
                .filter(|e| e.outbox.push(frame))
                .count(),
            Audience::Group(g) => match self.groups.borrow().get(&**g) {
                Some(members) => members.iter().filter(|i| push(i)).count(),
                None => 0,
            },
        }
    }

    fn set_group(&self, slot: usize, group: Option<&str>) {
        let mut slots = self.slots.borrow_mut();
        let Some(entry) = slots[slot].as_mut() else {
            return;
        };
        if entry.group.as_deref() == group {
            return;
        }
        let mut groups = self.groups.borrow_mut();
        if let Some(old) = entry.group.take() {
            remove_member(&mut groups, &old, slot);
        }
        if let Some(name) = group {
            // Reuse the map's key so a group's name is stored once.
            let key = match groups.get_key_value(name) {
                Some((k, _)) => k.clone(),
                None => Rc::from(name),
            };
            groups.entry(key.clone()).or_default().push(slot);
            entry.group = Some(key);
        }
    }

    fn leave(&self, slot: usize) {
        let entry = self.slots.borrow_mut()[slot].take();
        if let Some(Entry { group: Some(g), .. }) = &entry {
            remove_member(&mut self.groups.borrow_mut(), g, slot);
        }
        self.free.borrow_mut().push(slot);
        self.live.set(self.live.get() - 1);
    }
}

fn remove_member(groups: &mut HashMap<Rc<str>, Vec<usize>>, group: &str, slot: usize) {
    if let Some(members) = groups.get_mut(group) {
        if let Some(pos) = members.iter().position(|&s| s == slot) {
            members.swap_remove(pos);
        }
        if members.is_empty() {
            groups.remove(group);
        }
    }
}

/// A connection's place in a [`Registry`]; leaving is dropping it.
pub struct Membership<'a> {
    registry: &'a Registry,
    slot: usize,
}

impl Membership<'_> {
    /// Moves the connection to `group` (`None`: in no group, broadcasts only).
    pub fn set_group(&self, group: Option<&str>) {
        self.registry.set_group(self.slot, group);
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.registry.leave(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(g: &str) -> Audience {
        Audience::Group(g.into())
    }

    #[test]
    fn groups_move_and_leave() {
        let reg = Registry::default();
        let (a, b) = (Rc::new(Outbox::new(8)), Rc::new(Outbox::new(8)));
        let ma = reg.join(a.clone());
        let mb = reg.join(b.clone());
        let f = Frame::from_static(b"x");
        ma.set_group(Some("u1"));
        mb.set_group(Some("u1"));
        assert_eq!(reg.deliver(&group("u1"), &f), 2);
        mb.set_group(Some("u2"));
        assert_eq!(reg.deliver(&group("u1"), &f), 1);
        assert_eq!(reg.deliver(&group("u2"), &f), 1);
        assert_eq!(reg.deliver(&Audience::All, &f), 2);
        assert_eq!((a.len(), b.len()), (3, 3));
        drop(ma);
        assert_eq!(reg.group_len("u1"), 0);
        assert_eq!(reg.deliver(&group("u1"), &f), 0);
        assert_eq!(reg.len(), 1);
        let c = Rc::new(Outbox::new(8));
        let _mc = reg.join(c.clone());
        assert_eq!(reg.slots.borrow().len(), 2, "slot reused");
        assert_eq!(reg.deliver(&Audience::All, &f), 2);
        mb.set_group(None);
        assert_eq!(reg.deliver(&group("u2"), &f), 0);
    }

    #[test]
    fn overflowing_client_is_not_counted() {
        let reg = Registry::default();
        let slow = Rc::new(Outbox::new(1));
        let fast = Rc::new(Outbox::new(8));
        let _s = reg.join(slow.clone());
        let _f = reg.join(fast.clone());
        let f = Frame::from_static(b"x");
        assert_eq!(reg.deliver(&Audience::All, &f), 2);
        assert_eq!(reg.deliver(&Audience::All, &f), 1);
        assert!(slow.overflowed() && !fast.overflowed());
    }
}
