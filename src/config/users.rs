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
    /// SHA-256 of the token: the table never keeps the token itself.
    digest: TokenDigest,
    /// `None` = any target the private-address rule allows.
    pub allowed_targets: Option<Vec<TargetPattern>>,
    pub max_sessions: usize,
    /// Route names this user may use; `None` = every token route.
    pub routes: Option<Vec<String>>,
    /// Ports this user's reverse tunnels may publish.
    pub publish_ports: Vec<u16>,
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
}

impl User {
    /// WebSocket targets: any pattern, or none listed. `tcp://` targets
    /// only through a pattern that itself starts with `tcp://`, so no
    /// wildcard and no absent list ever grants raw TCP.
    pub fn may_reach(&self, target: &str) -> bool {
        let tcp = target
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("tcp://"));
        match &self.allowed_targets {
            None => !tcp,
            Some(patterns) => patterns
                .iter()
                .any(|p| p.matches(target) && (!tcp || p.prefix.starts_with("tcp://"))),
        }
    }

    pub fn may_use_route(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == route))
    }

    pub fn may_publish(&self, port: u16) -> bool {
        self.publish_ports.contains(&port)
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
#[derive(Clone, Default)]
pub struct UserTable {
    users: Vec<Arc<User>>,
    by_digest: HashMap<TokenDigest, Arc<User>>,
}

impl fmt::Debug for UserTable {
    // Lists users only: token digests stay out of logs too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.users).finish()
    }
}

type TokenDigest = [u8; 32];

fn digest(token: &[u8]) -> TokenDigest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
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
            let publish_ports = u.publish_ports.as_ref();
            if let Some(p) = publish_ports.filter(|p| p.get_ref().contains(&0)) {
                return Err((
                    p.span().start,
                    format!(
                        "users[{i}].publish_ports: 0 is not a port (list the ports to publish)"
                    ),
                ));
            }
            users.push(Arc::new(User {
                name: name.to_string(),
                digest: digest(token.as_bytes()),
                allowed_targets: u
                    .allowed_targets
                    .as_ref()
                    .map(|v| v.iter().map(|p| TargetPattern::parse(p)).collect()),
                max_sessions: u.max_sessions,
                routes: u
                    .routes
                    .as_ref()
                    .map(|v| v.iter().map(|n| n.get_ref().clone()).collect()),
                publish_ports: publish_ports
                    .map(|p| p.get_ref().clone())
                    .unwrap_or_default(),
                sessions: Arc::new(AtomicUsize::new(0)),
            }));
        }
        Ok(UserTable::indexed(users))
    }

    fn indexed(users: Vec<Arc<User>>) -> UserTable {
        let by_digest = users.iter().map(|u| (u.digest, u.clone())).collect();
        UserTable { users, by_digest }
    }

    /// Carries live session counters over from `old` for users that keep
    /// their name, so limits hold across a reload.
    pub fn inherit_counters(&mut self, old: &UserTable) {
        let counters: HashMap<&str, &Arc<AtomicUsize>> = old
            .users
            .iter()
            .map(|u| (u.name.as_str(), &u.sessions))
            .collect();
        self.by_digest.clear();
        for user in &mut self.users {
            if let (Some(prev), Some(u)) = (counters.get(user.name.as_str()), Arc::get_mut(user)) {
                u.sessions = Arc::clone(prev);
            }
        }
        *self = UserTable::indexed(std::mem::take(&mut self.users));
    }

    /// Finds the user owning `token`, in time independent of the table
    /// size. The map is keyed by the token's SHA-256, so lookup timing can
    /// only reveal digest bytes, which say nothing usable about a token; the
    /// final comparison is constant-time all the same.
    pub fn authenticate(&self, token: &[u8]) -> Option<Arc<User>> {
        let wanted = digest(token);
        let user = self.by_digest.get(&wanted)?;
        bool::from(user.digest.ct_eq(&wanted)).then(|| user.clone())
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}
