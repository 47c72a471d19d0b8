//! Presence (docs/hub.md "Presence and limits"): how many connections each
//! user has on this instance, the per-user limit, and what the presence
//! endpoint answers.
//!
//! One map for the process, behind a mutex: touched when a connection joins
//! or leaves a user (connect, identify, close), never per message. With
//! Redis every change is also written to this instance's presence hash
//! (`redis.rs`), so any instance can answer for all of them.
//!
//! Must not: be touched per delivered message, or log tokens.

use std::collections::HashMap;
use std::sync::Mutex;

use super::request::EngineMsg;

/// The Close a connection gets when its user is at `max_connections_per_user`.
pub const TOO_MANY: (u16, &str) = (4029, "too many connections for this user");

pub struct Presence {
    users: Mutex<HashMap<String, usize>>,
    /// 0 = no limit.
    limit: usize,
    /// With Redis: where each change is sent to be written.
    engine: Option<flume::Sender<EngineMsg>>,
}

impl Presence {
    pub fn new(limit: usize, engine: Option<flume::Sender<EngineMsg>>) -> Presence {
        Presence {
            users: Mutex::new(HashMap::new()),
            limit,
            engine,
        }
    }

    /// Counts one more connection of `user`; `false` (nothing counted) when
    /// the user is at the limit.
    pub fn enter(&self, user: &str) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let n = users.entry(user.to_string()).or_insert(0);
        if self.limit > 0 && *n >= self.limit {
            if *n == 0 {
                users.remove(user);
            }
            return false;
        }
        *n += 1;
        self.publish(user, *n);
        true
    }

    pub fn leave(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let left = match users.get_mut(user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                *n
            }
            Some(_) => {
                users.remove(user);
                0
            }
            None => return,
        };
        self.publish(user, left);
    }

    /// Connections `user` has on this instance.
    pub fn count(&self, user: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(user).copied().unwrap_or(0)
    }

    /// Every user with connections here (written whole to a Redis that
    /// lost it).
    pub fn snapshot(&self) -> Vec<(String, usize)> {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.iter().map(|(u, n)| (u.clone(), *n)).collect()
    }

    fn publish(&self, user: &str, count: usize) {
        if let Some(engine) = &self.engine {
            let _ = engine.send(EngineMsg::PresenceChanged {
                user: user.to_string(),
                count,
            });
        }
    }
}

/// A connection's place in [`Presence`]: which user it counts for.
pub struct Seat<'a> {
    presence: &'a Presence,
    user: Option<String>,
}

impl<'a> Seat<'a> {
    pub fn new(presence: &'a Presence) -> Seat<'a> {
        Seat {
            presence,
            user: None,
        }
    }

    /// Moves the seat to `user`; `false` (and the seat stays where it was)
    /// when that user is at the limit.
    pub fn take(&mut self, user: Option<&str>) -> bool {
        if self.user.as_deref() == user {
            return true;
        }
        if let Some(u) = user {
            if !self.presence.enter(u) {
                return false;
            }
        }
        if let Some(old) = self.user.take() {
            self.presence.leave(&old);
        }
        self.user = user.map(str::to_string);
        true
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        if let Some(u) = self.user.take() {
            self.presence.leave(&u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_count_move_and_respect_the_limit() {
        let p = Presence::new(2, None);
        let mut a = Seat::new(&p);
        let mut b = Seat::new(&p);
        let mut c = Seat::new(&p);
        assert!(a.take(Some("u")) && b.take(Some("u")));
        assert!(!c.take(Some("u")), "third of a limit of 2");
        assert!(c.take(Some("v")));
        assert_eq!((p.count("u"), p.count("v")), (2, 1));
        assert!(!c.take(Some("u")), "a move to a full user is refused");
        assert_eq!(p.count("v"), 1, "and the seat stays");
        drop(a);
        assert!(c.take(Some("u")));
        assert_eq!((p.count("u"), p.count("v")), (2, 0));
        assert!(c.take(None));
        assert_eq!(p.count("u"), 1);
        drop(b);
        assert!(p.users.lock().unwrap().is_empty(), "no entry left behind");
    }
}
