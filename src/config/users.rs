//! The user table: token lookup, per-user target rules and session limits.
//!
//! Owns the immutable table each shard holds a copy of and swaps whole on
//! reload. Must not: log or `Debug`-print token values, or compare tokens in
//! variable time.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::UserConfig;

/// One authenticated principal.
pub struct User {
    pub name: String,
    token: Box<[u8]>,
    /// `None` = any target the private-address rule allows.
    pub allowed_targets: Option<Vec<TargetPattern>>,
    pub max_sessions: usize,
    /// Open sessions across every shard. Shared by name across reloads so a
    /// reload cannot reset a user's limit.
    pub sessions: Arc<AtomicUsize>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("max_sessions", &self.max_sessions)
            .finish()
    }
}

/// A prefix pattern from `allowed_targets`: `wss://host/path*` matches any
/// target starting with `wss://host/path`; without `*` the match is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPattern {
    prefix: String,
    exact: bool,
}

impl TargetPattern {
    pub fn parse(s: &str) -> TargetPattern {
        match s.strip_suffix('*') {
            Some(prefix) => TargetPattern {
                prefix: prefix.to_string(),
                exact: false,
            },
            None => TargetPattern {
                prefix: s.to_string(),
                exact: true,
            },
        }
    }

    pub fn matches(&self, target: &str) -> bool {
        if self.exact {
            self.prefix == target
        } else {
            target.starts_with(&self.prefix)
        }
    }

    /// Tunnel (`tcp://`) targets must be listed explicitly; a pattern only
    /// admits schemes it names.
    pub fn names_scheme(&self, scheme: &str) -> bool {
        self.prefix.starts_with(scheme) && self.prefix[scheme.len()..].starts_with("://")
    }
}

impl User {
    pub fn may_reach(&self, target: &str) -> bool {
        match &self.allowed_targets {
            None => true,
            Some(patterns) => patterns.iter().any(|p| p.matches(target)),
        }
    }

    /// Claims one session slot; `None` when `max_sessions` is reached.
    pub fn claim_session(self: &Arc<Self>) -> Option<SessionSlot> {
        let prev = self.sessions.fetch_add(1, Ordering::AcqRel);
        if self.max_sessions != 0 && prev >= self.max_sessions {
            self.sessions.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SessionSlot {
            counter: self.sessions.clone(),
        })
    }
}

/// Releases a user's session slot on drop.
#[derive(Debug)]
pub struct SessionSlot {
    counter: Arc<AtomicUsize>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
    }
}

/// All users. Cloning is cheap (users are shared `Arc`s); each shard keeps its
/// own clone and replaces it whole on reload.
#[derive(Debug, Clone, Default)]
pub struct UserTable {
    users: Vec<Arc<User>>,
}

impl UserTable {
    /// Builds the table, rejecting empty and duplicate names/tokens. On error
    /// returns the byte offset of the offending value and a message.
    pub fn from_config(entries: &[UserConfig]) -> Result<UserTable, (usize, String)> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut tokens: HashMap<&str, usize> = HashMap::new();
        let mut users = Vec::with_capacity(entries.len());
        for (i, u) in entries.iter().enumerate() {
            let name = u.name.get_ref().as_str();
            let token = u.token.get_ref().as_str();
            if name.trim().is_empty() {
                return Err((
                    u.name.span().start,
                    format!("users[{i}].name: must not be empty"),
                ));
            }
            if token.trim().is_empty() {
                return Err((
                    u.token.span().start,
                    format!("users[{i}].token: must not be empty"),
                ));
            }
            if let Some(j) = names.insert(name, i) {
                return Err((
                    u.name.span().start,
                    format!("users[{i}].name: duplicate name {name:?} (also users[{j}])"),
                ));
            }
            if let Some(j) = tokens.insert(token, i) {
                return Err((
                    u.token.span().start,
                    format!("users[{i}].token: duplicate token (also used by users[{j}])"),
                ));
            }
            users.push(Arc::new(User {
                name: name.to_string(),
                token: token.as_bytes().into(),
                allowed_targets: u
                    .allowed_targets
                    .as_ref()
                    .map(|v| v.iter().map(|p| TargetPattern::parse(p)).collect()),
                max_sessions: u.max_sessions,
                sessions: Arc::new(AtomicUsize::new(0)),
            }));
        }
        Ok(UserTable { users })
    }

    /// Carries live session counters over from `old` for users that keep
    /// their name, so limits hold across a reload.
    pub fn inherit_counters(&mut self, old: &UserTable) {
        for user in &mut self.users {
            if let Some(prev) = old.users.iter().find(|u| u.name == user.name) {
                if let Some(u) = Arc::get_mut(user) {
                    u.sessions = prev.sessions.clone();
                }
            }
        }
    }

    /// Finds the user owning `token`. Every entry is compared in constant time
    /// and the scan never stops early, so timing reveals neither which token
    /// matched nor how much of it.
    pub fn authenticate(&self, token: &[u8]) -> Option<Arc<User>> {
        let mut found = None;
        for user in &self.users {
            if bool::from(user.token.as_ref().ct_eq(token)) {
                found = Some(user.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}
