//! One shard's index of fan-out connections: a slab of outboxes and a map
//! from group name to the slots in it.
//!
//! Ordered deliveries (the hub's streams, docs/hub.md "Recovery") carry an
//! offset per lane (the group's stream, the broadcast stream). A connection
//! that is recovering history is *held*: what is delivered to it waits
//! beside its outbox until the history is queued, then whatever the history
//! already covered (offset at or below the lane's floor) is dropped and the
//! rest follows, so nothing is lost or doubled across the switch. A lane
//! whose offsets jump (a publication missed, say by a Redis subscriber that
//! reconnected) or restart (a new epoch) ends the connection with
//! [`RESYNC`]: the client cannot see the hole, but can reconnect from the
//! last offset it has and recover it.
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
    /// Per lane ([`lane`]): ordered frames at or below this offset are
    /// already queued from history. Cleared by the first frame above it,
    /// since a lane's frames arrive in order.
    floors: [u64; 2],
    /// Per lane: the last ordered offset queued (0: none yet); the next
    /// must be one more.
    last: [u64; 2],
    /// While recovering: (lane, offset, frame) delivered meanwhile, and the
    /// most it may hold before the connection counts as too slow.
    held: Option<Held>,
}

/// Deliveries kept aside while a connection recovers, and their cap.
struct Held {
    frames: Vec<(usize, u64, Frame)>,
    cap: usize,
}

/// The Close that tells a client its stream skipped or restarted: reconnect
/// with the last offset and epoch you have (docs/hub.md "Recovery").
pub const RESYNC: (u16, &str) = (4010, "missed messages: reconnect with since and epoch");

/// The lane of an audience: a group's stream (0) or the broadcast one (1).
pub fn lane(audience: &Audience) -> usize {
    match audience {
        Audience::Group(_) => 0,
        Audience::All => 1,
    }
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
            floors: [0; 2],
            last: [0; 2],
            held: None,
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
        self.deliver_at(audience, frame, 0)
    }

    /// [`Registry::deliver`] for the `offset`th frame of the audience's
    /// stream (0 = unordered): held connections keep it aside, connections
    /// whose history already covered it skip it.
    pub fn deliver_at(&self, audience: &Audience, frame: &Frame, offset: u64) -> Reach {
        let mut slots = self.slots.borrow_mut();
        let lane = lane(audience);
        let mut reach = Reach::default();
        let mut push = |e: &mut Entry| {
            if offset != 0 && e.floors[lane] != 0 {
                if offset <= e.floors[lane] {
                    return;
                }
                e.floors[lane] = 0;
            }
            if let Some(held) = &mut e.held {
                if held.frames.len() < held.cap {
                    held.frames.push((lane, offset, frame.clone()));
                    reach.took += 1;
                } else if !e.outbox.overflowed() {
                    e.outbox.overflow_now();
                    reach.overflowed += 1;
                }
                return;
            }
            if offset != 0 {
                if e.last[lane] != 0 && offset != e.last[lane] + 1 {
                    e.outbox.end_with(RESYNC.0, RESYNC.1);
                    return;
                }
                e.last[lane] = offset;
            }
            let was_slow = e.outbox.overflowed();
            if e.outbox.push(frame) {
                reach.took += 1;
            } else if !was_slow && e.outbox.overflowed() {
                reach.overflowed += 1;
            }
        };
        match audience {
            Audience::All => slots.iter_mut().flatten().for_each(&mut push),
            Audience::Group(g) => {
                if let Some(members) = self.groups.borrow().get(&**g) {
                    for i in members {
                        if let Some(e) = slots[*i].as_mut() {
                            push(e);
                        }
                    }
                }
            }
        }
        reach
    }

    fn hold(&self, slot: usize, cap: usize) {
        if let Some(e) = self.slots.borrow_mut()[slot].as_mut() {
            e.held.get_or_insert_with(|| Held {
                frames: Vec::new(),
                cap: cap.max(1),
            });
        }
    }

    /// Ends a hold: `backlog` (the history) goes to the outbox, then what
    /// was held above each lane's floor, in arrival order.
    fn release(&self, slot: usize, backlog: Vec<Frame>, floors: [u64; 2]) {
        let mut slots = self.slots.borrow_mut();
        let Some(e) = slots[slot].as_mut() else {
            return;
        };
        let held = e.held.take().map(|h| h.frames).unwrap_or_default();
        // Each lane goes on from the backlog's last offset, or from where it
        // was when it recovered nothing.
        let mut last = [0, 1].map(|l| if floors[l] != 0 { floors[l] } else { e.last[l] });
        let mut whole = true;
        let after: Vec<Frame> = held
            .into_iter()
            .filter(|(lane, offset, _)| {
                if *offset == 0 {
                    return true;
                }
                if *offset <= floors[*lane] {
                    return false;
                }
                whole &= last[*lane] == 0 || *offset == last[*lane] + 1;
                last[*lane] = *offset;
                true
            })
            .map(|(_, _, f)| f)
            .collect();
        e.outbox.push_backlog(backlog.into_iter().chain(after));
        e.floors = floors;
        e.last = last;
        if !whole {
            e.outbox.end_with(RESYNC.0, RESYNC.1);
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
        // Another group is another stream: the old positions mean nothing there.
        entry.floors[0] = 0;
        entry.last[0] = 0;
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

    /// Starts recovering: deliveries wait aside (at most `cap`; one more
    /// and the connection is too slow) until [`Membership::release`].
    pub fn hold(&self, cap: usize) {
        self.registry.hold(self.slot, cap);
    }

    /// Queues `backlog` (recovered history), then the held deliveries that
    /// are above `floors` (per [`lane`]: the last offset the backlog
    /// covered), and goes live. One synchronous step: nothing slips between.
    pub fn release(&self, backlog: Vec<Frame>, floors: [u64; 2]) {
        self.registry.release(self.slot, backlog, floors);
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
    fn a_held_member_gets_history_then_only_what_it_lacked() {
        let reg = Registry::new(Space::Hub, Arc::default());
        let out = Rc::new(Outbox::new(2));
        let m = reg.join(out.clone());
        m.set_group(Some("u"));
        let f = |s: &'static str| Frame::from_static(s.as_bytes());
        m.hold(8);
        // Delivered while the history is read: 3 is also in the history.
        assert_eq!(reg.deliver_at(&group("u"), &f("3"), 3).took, 1);
        assert_eq!(reg.deliver_at(&Audience::All, &f("b9"), 9).took, 1);
        assert_eq!(reg.deliver_at(&group("u"), &f("4"), 4).took, 1);
        assert!(out.is_empty(), "nothing goes out before the history");
        m.release(vec![f("1"), f("2"), f("3")], [3, 0]);
        // The backlog does not count against the cap of 2.
        assert_eq!(
            reg.deliver_at(&group("u"), &f("3"), 3).took,
            0,
            "late copy skipped"
        );
        assert_eq!(reg.deliver_at(&group("u"), &f("5"), 5).took, 1);
        let got: Vec<Frame> = std::iter::from_fn(|| out.pop()).collect();
        assert_eq!(got, ["1", "2", "3", "b9", "4", "5"].map(f));
        // A jump (6 is missing) ends the connection with RESYNC.
        assert_eq!(reg.deliver_at(&group("u"), &f("7"), 7).took, 0);
        assert_eq!(out.ending(), Some(RESYNC));
    }

    #[test]
    fn a_restarted_stream_asks_for_a_resync() {
        let reg = Registry::new(Space::Hub, Arc::default());
        let out = Rc::new(Outbox::new(8));
        let m = reg.join(out.clone());
        let f = Frame::from_static(b"x");
        for o in [4, 5] {
            assert_eq!(reg.deliver_at(&Audience::All, &f, o).took, 1, "any start");
        }
        m.set_group(Some("a"));
        assert_eq!(
            reg.deliver_at(&group("a"), &f, 9).took,
            1,
            "lanes are apart"
        );
        assert_eq!(reg.deliver_at(&Audience::All, &f, 1).took, 0, "new epoch");
        assert_eq!(out.ending(), Some(RESYNC));
    }

    #[test]
    fn a_held_member_that_overflows_is_slow() {
        let reg = Registry::new(Space::Hub, Arc::default());
        let out = Rc::new(Outbox::new(8));
        let m = reg.join(out.clone());
        m.hold(1);
        let f = Frame::from_static(b"x");
        assert_eq!(reg.deliver_at(&Audience::All, &f, 1).took, 1);
        let r = reg.deliver_at(&Audience::All, &f, 2);
        assert_eq!((r.took, r.overflowed), (0, 1));
        assert!(out.overflowed());
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
