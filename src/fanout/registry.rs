//! One shard's index of fan-out connections: a slab of outboxes and a map
//! from group name to the slots in it.
//!
//! Lives on its shard and is touched only there, so there is no lock. Must
//! not: hold a borrow across an await, or allocate per delivered frame.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{Audience, Census, Frame, Outbox, Space};

struct Entry {
    outbox: Rc<Outbox>,
    group: Option<Rc<str>>,
}

pub struct Registry {
    slots: RefCell<Vec<Option<Entry>>>,
    free: RefCell<Vec<usize>>,
    groups: RefCell<HashMap<Rc<str>, Vec<usize>>>,
    live: Cell<usize>,
    space: Space,
    /// Every shard's registry of this space counts here.
    census: Arc<Census>,
}

impl Registry {
    pub fn new(space: Space, census: Arc<Census>) -> Registry {
        Registry {
            slots: RefCell::default(),
            free: RefCell::default(),
            groups: RefCell::default(),
            live: Cell::new(0),
            space,
            census,
        }
    }

    /// Connections of this registry's space on every shard.
    pub fn everywhere(&self) -> usize {
        self.census.count(self.space)
    }

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
        self.census.add(self.space);
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

    /// Queues `frame` for the audience: how many connections took it, and
    /// how many overflowed with it (not counted as taking it; they will be
    /// closed with 1013).
    pub fn deliver(&self, audience: &Audience, frame: &Frame) -> Reach {
        let slots = self.slots.borrow();
        let mut reach = Reach::default();
        let mut push = |e: &Entry| {
            let was_slow = e.outbox.overflowed();
            if e.outbox.push(frame) {
                reach.took += 1;
            } else if !was_slow && e.outbox.overflowed() {
                reach.overflowed += 1;
            }
        };
        match audience {
            Audience::All => slots.iter().flatten().for_each(&mut push),
            Audience::Group(g) => {
                if let Some(members) = self.groups.borrow().get(&**g) {
                    members
                        .iter()
                        .filter_map(|i| slots[*i].as_ref())
                        .for_each(&mut push);
                }
            }
        }
        reach
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
        self.census.sub(self.space);
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

/// What one delivery did on one shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Connections that queued the frame.
    pub took: usize,
    /// Connections whose outbox this frame overflowed.
    pub overflowed: usize,
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
        let reg = Registry::new(Space::Hub, Arc::default());
        let (a, b) = (Rc::new(Outbox::new(8)), Rc::new(Outbox::new(8)));
        let ma = reg.join(a.clone());
        let mb = reg.join(b.clone());
        let f = Frame::from_static(b"x");
        ma.set_group(Some("u1"));
        mb.set_group(Some("u1"));
        assert_eq!(reg.deliver(&group("u1"), &f).took, 2);
        mb.set_group(Some("u2"));
        assert_eq!(reg.deliver(&group("u1"), &f).took, 1);
        assert_eq!(reg.deliver(&group("u2"), &f).took, 1);
        assert_eq!(reg.deliver(&Audience::All, &f).took, 2);
        assert_eq!((a.len(), b.len()), (3, 3));
        drop(ma);
        assert_eq!(reg.group_len("u1"), 0);
        assert_eq!(reg.deliver(&group("u1"), &f).took, 0);
        assert_eq!(reg.len(), 1);
        let c = Rc::new(Outbox::new(8));
        let _mc = reg.join(c.clone());
        assert_eq!(reg.slots.borrow().len(), 2, "slot reused");
        assert_eq!(reg.deliver(&Audience::All, &f).took, 2);
        mb.set_group(None);
        assert_eq!(reg.deliver(&group("u2"), &f).took, 0);
    }

    #[test]
    fn overflowing_client_is_not_counted() {
        let reg = Registry::new(Space::Hub, Arc::default());
        let slow = Rc::new(Outbox::new(1));
        let fast = Rc::new(Outbox::new(8));
        let _s = reg.join(slow.clone());
        let _f = reg.join(fast.clone());
        let f = Frame::from_static(b"x");
        let both = Reach {
            took: 2,
            overflowed: 0,
        };
        assert_eq!(reg.deliver(&Audience::All, &f), both);
        let one_overflows = Reach {
            took: 1,
            overflowed: 1,
        };
        assert_eq!(reg.deliver(&Audience::All, &f), one_overflows);
        assert!(slow.overflowed() && !fast.overflowed());
        let already_slow = Reach {
            took: 1,
            overflowed: 0,
        };
        assert_eq!(reg.deliver(&Audience::All, &f), already_slow);
    }

    #[test]
    fn census_counts_every_registry_of_a_space() {
        let census = Arc::new(Census::default());
        let (a, b) = (
            Registry::new(Space::Demo, census.clone()),
            Registry::new(Space::Demo, census.clone()),
        );
        let hub = Registry::new(Space::Hub, census.clone());
        let _m1 = a.join(Rc::new(Outbox::new(1)));
        let m2 = b.join(Rc::new(Outbox::new(1)));
        let _m3 = hub.join(Rc::new(Outbox::new(1)));
        assert_eq!((a.everywhere(), census.count(Space::Hub)), (2, 1));
        drop(m2);
        assert_eq!(b.everywhere(), 1);
    }
}
