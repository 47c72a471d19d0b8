//! The user pool shared by the coordinator and the sessions: which tokens
//! the relay's config holds now, which a reload is about to remove, and how
//! many connection attempts are still using each one.
//!
//! A reload removes users in two steps so that no session is refused for a
//! token it picked a moment before the reload: retire (no new session picks
//! it), wait until no attempt with it is in progress, then reload.

use crate::cmd::relay_proc::RelayUser;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the relay's config; new sessions may pick it.
    Active,
    /// Still in the config, about to be removed; not picked any more.
    Retiring,
    /// Being added: in the next config, not picked until the reload succeeded.
    Pending,
    /// No longer in the config (or never made it).
    Removed,
}

#[derive(Debug)]
struct Entry {
    user: RelayUser,
    state: State,
    /// Connection attempts with this token in progress.
    connecting: u32,
}

/// A change prepared by [`UserPool::prepare_reload`].
#[derive(Debug, Clone)]
pub struct ReloadPlan {
    pub removed: Vec<usize>,
    pub added: Vec<usize>,
    /// The `[[users]]` of the new config.
    pub config: Vec<RelayUser>,
}

/// All users ever configured in one variant; indexes are stable.
#[derive(Debug)]
pub struct UserPool {
    entries: Vec<Entry>,
}

impl UserPool {
    pub fn new(count: u32) -> Self {
        let mut pool = UserPool {
            entries: Vec::new(),
        };
        for _ in 0..count {
            pool.push(State::Active);
        }
        pool
    }

    fn push(&mut self, state: State) -> usize {
        let i = self.entries.len();
        // Tokens differ per run so a stray client of an earlier run never matches.
        let salt = Rng::new().next_u64();
        self.entries.push(Entry {
            user: RelayUser {
                name: format!("soak{i}"),
                token: format!("soak-{i}-{salt:016x}"),
            },
            state,
            connecting: 0,
        });
        i
    }

    /// The users the relay's config holds now.
    pub fn configured(&self) -> Vec<RelayUser> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Active | State::Retiring))
            .map(|e| e.user.clone())
            .collect()
    }

    /// Picks an active user for a new session and counts the attempt.
    pub fn pick(&mut self, rng: &mut Rng) -> Option<(usize, String)> {
        let active: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].state == State::Active)
            .collect();
        if active.is_empty() {
            return None;
        }
        let i = active[(rng.next_u64() % active.len() as u64) as usize];
        self.entries[i].connecting += 1;
        Some((i, self.entries[i].user.token.clone()))
    }

    /// The attempt with user `i` has finished (connected or failed).
    pub fn done_connecting(&mut self, i: usize) {
        let e = &mut self.entries[i];
        e.connecting = e.connecting.saturating_sub(1);
    }

    pub fn is_removed(&self, i: usize) -> bool {
        self.entries[i].state == State::Removed
    }

    /// Retires `remove` active users (keeping at least two) and prepares
    /// `add` new ones.
    pub fn prepare_reload(&mut self, remove: usize, add: usize, rng: &mut Rng) -> ReloadPlan {
        let mut active: Vec<usize> = (0..self.entries.len())
            .filter(|&i| self.entries[i].state == State::Active)
            .collect();
        let remove = remove.min(active.len().saturating_sub(2));
        let mut removed = Vec::new();
        for _ in 0..remove {
            let k = (rng.next_u64() % active.len() as u64) as usize;
            let i = active.swap_remove(k);
            self.entries[i].state = State::Retiring;
            removed.push(i);
        }
        let added: Vec<usize> = (0..add).map(|_| self.push(State::Pending)).collect();
        let config = self
            .entries
            .iter()
            .filter(|e| matches!(e.state, State::Active | State::Pending))
            .map(|e| e.user.clone())
            .collect();
        ReloadPlan {
            removed,
            added,
            config,
        }
    }

    /// Attempts still in progress with the users `plan` removes.
    pub fn connecting(&self, plan: &ReloadPlan) -> u32 {
        plan.removed
            .iter()
            .map(|&i| self.entries[i].connecting)
            .sum()
    }

    /// The reload succeeded (`true`) or was refused.
    pub fn commit(&mut self, plan: &ReloadPlan, ok: bool) {
        for &i in &plan.removed {
            self.entries[i].state = if ok { State::Removed } else { State::Active };
        }
        for &i in &plan.added {
            self.entries[i].state = if ok { State::Active } else { State::Removed };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_retires_then_removes_and_adds() {
        let mut rng = Rng::new();
        let mut pool = UserPool::new(4);
        assert_eq!(pool.configured().len(), 4);
        let (i, _) = pool.pick(&mut rng).unwrap();
        let plan = pool.prepare_reload(3, 2, &mut rng);
        // At least two stay.
        assert_eq!(plan.removed.len(), 2);
        assert_eq!(plan.config.len(), 4);
        // Retiring users stay configured, are never picked.
        assert_eq!(pool.configured().len(), 4);
        for _ in 0..50 {
            let (j, _) = pool.pick(&mut rng).unwrap();
            assert!(!plan.removed.contains(&j) && !plan.added.contains(&j));
            pool.done_connecting(j);
        }
        let pending = if plan.removed.contains(&i) { 1 } else { 0 };
        assert_eq!(pool.connecting(&plan), pending);
        pool.done_connecting(i);
        assert_eq!(pool.connecting(&plan), 0);
        pool.commit(&plan, true);
        assert!(plan.removed.iter().all(|&r| pool.is_removed(r)));
        assert_eq!(pool.configured(), plan.config);
    }
}
