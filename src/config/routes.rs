//! `[[routes]]`: the reverse proxy's host/path rules and upstream pools
//! (docs/proxy.md "Reverse proxy"), validated into immutable [`RouteSpec`]s.
//!
//! Owns the serde model of a route and every check that needs only the file
//! (schemes, duplicates, reserved paths). Must not: read CA files or open
//! sockets; trust material is loaded by the control plane.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::ws::target::{parse_target, TargetUrl};

/// How a route authenticates its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteAuth {
    /// Anyone may connect; the upstream does its own auth.
    #[default]
    None,
    /// A `[[users]]` token, from `Authorization: Bearer`, `?token=` or a
    /// `bearer.<token>` subprotocol entry; stripped before forwarding.
    Token,
}

/// `health_check = { path, interval_secs, timeout_secs }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_health_timeout")]
    pub timeout_secs: u64,
}

fn default_health_path() -> String {
    "/health".into()
}
fn default_interval() -> u64 {
    5
}
fn default_health_timeout() -> u64 {
    2
}
fn default_fail_timeout() -> u64 {
    10
}

/// One `[[routes]]` entry as written. Spans name the line of a bad value.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Spanned<String>,
    pub path: Spanned<String>,
    #[serde(default)]
    pub host: Option<Spanned<String>>,
    pub upstream: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    pub auth: RouteAuth,
    #[serde(default)]
    pub max_connections: usize,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Send the upstream's own host as `Host` instead of the client's.
    #[serde(default)]
    pub upstream_host: bool,
    /// Extra CA for `wss://` upstreams (absent: `server.target_ca_file`).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Absent: `server.insecure_skip_verify`.
    #[serde(default)]
    pub insecure_skip_verify: Option<bool>,
    /// How long a passively failed upstream sits out (nginx's `fail_timeout`).
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout_secs: u64,
}

/// A host rule: exact name, or `*.suffix` for any subdomain of `suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    Any,
    Exact(String),
    /// Stored with its leading dot: `.example.com`.
    Subdomain(String),
}

impl HostRule {
    fn parse(s: &str) -> Result<HostRule, String> {
        let s = s.trim().to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        };
        match s.strip_prefix("*.") {
            Some(rest) if valid(rest) => Ok(HostRule::Subdomain(format!(".{rest}"))),
            None if valid(&s) => Ok(HostRule::Exact(s)),
            _ => Err(format!(
                "{s:?} is not a host name or *.domain (no port, no scheme)"
            )),
        }
    }

    /// Matches a `Host` header value (case-insensitive, port ignored).
    pub fn matches(&self, host_header: Option<&str>) -> bool {
        let host = host_header.map(strip_port);
        match (self, host) {
            (HostRule::Any, _) => true,
            (_, None) => false,
            (HostRule::Exact(h), Some(got)) => got.eq_ignore_ascii_case(h),
            (HostRule::Subdomain(suffix), Some(got)) => {
                got.len() > suffix.len()
                    && got.is_char_boundary(got.len() - suffix.len())
                    && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// Exact beats wildcard beats none when two routes have the same path.
    pub fn specificity(&self) -> u8 {
        match self {
            HostRule::Any => 0,
            HostRule::Subdomain(_) => 1,
            HostRule::Exact(_) => 2,
        }
    }
}

/// `example.com:8443` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A validated route, shared read-only by every shard.
#[derive(Debug)]
pub struct RouteSpec {
    pub name: String,
    pub path: String,
    pub host: HostRule,
    pub upstreams: Vec<Upstream>,
    pub auth: RouteAuth,
    pub max_connections: usize,
    pub health_check: Option<HealthCheck>,
    pub upstream_host: bool,
    pub ca_file: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub fail_timeout_secs: u64,
    /// Open sessions across every shard; kept by name across reloads.
    pub open: Arc<AtomicUsize>,
}

/// One upstream URL of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As written, for logs, metrics and health state across reloads.
    pub url: String,
    pub target: TargetUrl,
}

impl RouteSpec {
    /// Has its own trust settings for `wss://` upstreams.
    pub fn overrides_trust(&self) -> bool {
        self.ca_file.is_some() || self.insecure_skip_verify.is_some()
    }

    /// Claims one of the route's `max_connections`; `None` when full.
    pub fn claim(self: &Arc<Self>) -> Option<RouteSlot> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if self.max_connections != 0 && before >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RouteSlot(self.open.clone()))
    }
}

/// Frees a route connection slot on drop.
#[derive(Debug)]
pub struct RouteSlot(Arc<AtomicUsize>);

impl Drop for RouteSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every route, in file order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub routes: Vec<Arc<RouteSpec>>,
}

/// Paths a route may not claim: they belong to the engine. (The test
/// page's path may be shared: the page takes only plain GETs there.)
#[derive(Default)]
pub struct Reserved<'a> {
    paths: Vec<(&'a str, &'static str)>,
}

impl<'a> Reserved<'a> {
    pub fn add(&mut self, path: &'a str, owner: &'static str) {
        self.paths.push((path, owner));
    }

    fn owner(&self, path: &str) -> Option<&'static str> {
        self.paths.iter().find(|(p, _)| *p == path).map(|(_, o)| *o)
    }
}

impl RouteTable {
    /// Validates every entry. On error: byte offset of the bad value and a
    /// message naming the key.
    pub fn from_config(
        entries: &[RouteConfig],
        reserved: &Reserved<'_>,
    ) -> Result<RouteTable, (usize, String)> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut places: HashMap<(String, String), usize> = HashMap::new();
        let mut routes = Vec::with_capacity(entries.len());
        for (i, r) in entries.iter().enumerate() {
            let spec = validate_route(i, r, reserved)?;
            if let Some(j) = names.insert(r.name.get_ref().as_str(), i) {
                return Err((
                    r.name.span().start,
                    format!("routes[{i}].name: duplicate route name (also routes[{j}])"),
                ));
            }
            let host = r.host.as_ref().map(|h| h.get_ref().to_ascii_lowercase());
            let place = (host.unwrap_or_default(), spec.path.clone());
            if let Some(j) = places.insert(place, i) {
                return Err((
                    r.path.span().start,
                    format!("routes[{i}].path: routes[{j}] already has this host and path"),
                ));
            }
            routes.push(Arc::new(spec));
        }
        Ok(RouteTable { routes })
    }

    /// Carries open-session counters over by route name, so per-route
    /// `max_connections` holds across a reload.
    pub fn inherit_counters(&mut self, old: &RouteTable) {
        for route in &mut self.routes {
            let prev = old.routes.iter().find(|o| o.name == route.name);
            if let (Some(prev), Some(r)) = (prev, Arc::get_mut(route)) {
                r.open = prev.open.clone();
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

fn validate_route(
    i: usize,
    r: &RouteConfig,
    reserved: &Reserved<'_>,
) -> Result<RouteSpec, (usize, String)> {
    let name = r.name.get_ref();
    if name.trim().is_empty() {
        return Err((
            r.name.span().start,
            format!("routes[{i}].name: must not be empty"),
        ));
    }
    let path = r.path.get_ref();
    let at_path = |m: String| (r.path.span().start, format!("routes[{i}].path: {m}"));
    if !path.starts_with('/') {
        return Err(at_path("must start with '/'".into()));
    }
    if let Some(owner) = reserved.owner(path) {
        return Err(at_path(format!(
            "{path:?} is {owner}; give the route another path"
        )));
    }
    let host = match &r.host {
        None => HostRule::Any,
        Some(h) => HostRule::parse(h.get_ref())
            .map_err(|m| (h.span().start, format!("routes[{i}].host: {m}")))?,
    };
    let list = r.upstream.get_ref();
    if list.is_empty() {
        return Err((
            r.upstream.span().start,
            format!("routes[{i}].upstream: needs at least one ws:// or wss:// URL"),
        ));
    }
    let mut upstreams = Vec::with_capacity(list.len());
    for u in list {
        let at = |m: String| (u.span().start, format!("routes[{i}].upstream: {m}"));
        let url = u.get_ref().trim();
        let target = parse_target(url).map_err(|e| at(format!("{url:?}: {}", e.detail)))?;
        if target.tcp {
            return Err(at(format!(
                "{url:?}: routes proxy WebSocket upstreams: use ws:// or wss://"
            )));
        }
        if upstreams.iter().any(|x: &Upstream| x.url == url) {
            return Err(at(format!("{url:?} is listed twice")));
        }
        upstreams.push(Upstream {
            url: url.to_string(),
            target,
        });
    }
    if let Some(h) = &r.health_check {
        if !h.path.starts_with('/') || h.interval_secs == 0 || h.timeout_secs == 0 {
            return Err((
                r.name.span().start,
                format!(
                    "routes[{i}].health_check: path must start with '/', interval_secs and timeout_secs must be at least 1"
                ),
            ));
        }
    }
    Ok(RouteSpec {
        name: name.clone(),
        path: path.clone(),
        host,
        upstreams,
        auth: r.auth,
        max_connections: r.max_connections,
        health_check: r.health_check.clone(),
        upstream_host: r.upstream_host,
        ca_file: r.ca_file.clone(),
        insecure_skip_verify: r.insecure_skip_verify,
        fail_timeout_secs: r.fail_timeout_secs,
        open: Arc::new(AtomicUsize::new(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules_match_case_insensitively_without_port() {
        let exact = HostRule::parse("Chat.Example.com").unwrap();
        assert!(exact.matches(Some("chat.example.COM:8443")));
        assert!(!exact.matches(Some("xchat.example.com")));
        assert!(!exact.matches(None));
        let wild = HostRule::parse("*.example.com").unwrap();
        assert!(wild.matches(Some("a.example.com")));
        assert!(wild.matches(Some("a.b.EXAMPLE.com:80")));
        assert!(!wild.matches(Some("example.com")));
        assert!(!wild.matches(Some("badexample.com")));
        assert!(HostRule::Any.matches(None));
        for bad in ["", "*.", "http://x", "a b", "h:80"] {
            assert!(HostRule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
