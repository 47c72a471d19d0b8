//! A shard's view of the routes: matching a request to a route, the
//! upstreams' health as this shard knows it, round robin, and the per-route
//! counters.
//!
//! Owned by one shard (`Cell`s, no locks). Active health comes from the
//! process-wide checker over the shard's channel; passive marks come from
//! this shard's own failed dials. Must not: do I/O or block.

use std::cell::Cell;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{RouteSpec, RouteTable};
use crate::http::head::RequestHead;
use crate::metrics::RouteSnapshot;
use crate::tls::target::RouteTrust;
use crate::tls::TlsError;

/// Why a route turned a session away (a label in logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Auth,
    Forbidden,
    Capacity,
    Unavailable,
    Timeout,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::Auth,
        Rejection::Forbidden,
        Rejection::Capacity,
        Rejection::Unavailable,
        Rejection::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Auth => "auth",
            Rejection::Forbidden => "forbidden",
            Rejection::Capacity => "capacity",
            Rejection::Unavailable => "upstream_unavailable",
            Rejection::Timeout => "upstream_timeout",
        }
    }
}

/// Per-route counters on one shard. Shared (`Rc`) between the tables before
/// and after a reload, so sessions that started earlier count down the
/// same numbers.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub open: Cell<u64>,
    pub total: Cell<u64>,
    rejected: [Cell<u64>; 5],
}

impl RouteStats {
    pub fn reject(&self, why: Rejection) {
        let c = &self.rejected[why as usize];
        c.set(c.get() + 1);
    }

    pub fn rejected(&self, why: Rejection) -> u64 {
        self.rejected[why as usize].get()
    }
}

/// One upstream's health as this shard sees it.
#[derive(Debug)]
pub struct UpstreamState {
    /// Last verdict of the active health check (true until one says no).
    pub checked_up: Cell<bool>,
    /// Sits out after a failed dial or handshake on this shard.
    down_until: Cell<Option<Instant>>,
}

impl UpstreamState {
    fn new() -> Self {
        UpstreamState {
            checked_up: Cell::new(true),
            down_until: Cell::new(None),
        }
    }

    pub fn is_healthy(&self, now: Instant) -> bool {
        self.checked_up.get() && self.down_until.get().is_none_or(|t| now >= t)
    }
}

/// A route with this shard's state.
pub struct ShardRoute {
    pub spec: Arc<RouteSpec>,
    pub upstreams: Vec<UpstreamState>,
    next: Cell<usize>,
    pub stats: Rc<RouteStats>,
    /// Own client config for `wss://` upstreams when the route overrides
    /// trust; `None` uses the shard's target config.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl ShardRoute {
    /// Upstream indices to try, in order: the healthy ones round robin from
    /// the cursor, then (only if none is healthy) all of them, since trying
    /// a doubtful upstream beats refusing outright.
    pub fn candidates(&self, now: Instant) -> Vec<usize> {
        let n = self.upstreams.len();
        let start = self.next.get() % n;
        self.next.set(start + 1);
        let order = (0..n).map(|i| (start + i) % n);
        let healthy: Vec<usize> = order
            .clone()
            .filter(|&i| self.upstreams[i].is_healthy(now))
            .collect();
        if healthy.is_empty() {
            order.collect()
        } else {
            healthy
        }
    }

    /// Passive check: `i` failed a dial or handshake on this shard.
    pub fn mark_failed(&self, i: usize) {
        let sit_out = Duration::from_secs(self.spec.fail_timeout_secs);
        self.upstreams[i]
            .down_until
            .set(Some(Instant::now() + sit_out));
    }

    pub fn mark_succeeded(&self, i: usize) {
        self.upstreams[i].down_until.set(None);
    }
}

/// Every route on one shard.
#[derive(Default)]
pub struct ShardRoutes {
    pub routes: Vec<ShardRoute>,
}

impl ShardRoutes {
    /// Builds the shard's state for `table`, keeping counters and health of
    /// routes and upstreams that `old` already had (matched by name and URL).
    pub fn build(
        table: &RouteTable,
        trust: &RouteTrust,
        old: &ShardRoutes,
    ) -> Result<ShardRoutes, TlsError> {
        let mut routes = Vec::with_capacity(table.routes.len());
        for spec in &table.routes {
            let prev = old.routes.iter().find(|r| r.spec.name == spec.name);
            let upstreams = spec
                .upstreams
                .iter()
                .map(|u| {
                    let state = UpstreamState::new();
                    let kept = prev.and_then(|p| {
                        let i = p.spec.upstreams.iter().position(|o| o.url == u.url)?;
                        Some(&p.upstreams[i])
                    });
                    if let Some(k) = kept {
                        state.checked_up.set(k.checked_up.get());
                        state.down_until.set(k.down_until.get());
                    }
                    state
                })
                .collect();
            let tls = match trust.get(&spec.name) {
                Some(t) => Some(t.client_config()?),
                None => None,
            };
            routes.push(ShardRoute {
                spec: spec.clone(),
                upstreams,
                next: Cell::new(prev.map_or(0, |p| p.next.get())),
                stats: prev.map_or_else(Default::default, |p| p.stats.clone()),
                tls,
            });
        }
        Ok(ShardRoutes { routes })
    }

    /// The route for a request: host rule matching, then the longest path
    /// prefix, then the more specific host rule.
    pub fn find(&self, head: &RequestHead) -> Option<usize> {
        let host = head.header("host");
        let path = head.path();
        self.routes
            .iter()
            .enumerate()
            .filter(|(_, r)| path.starts_with(&r.spec.path) && r.spec.host.matches(host))
            .max_by_key(|(_, r)| (r.spec.path.len(), r.spec.host.specificity()))
            .map(|(i, _)| i)
    }

    /// Plain-data counters for a `/metrics` scrape.
    pub fn snapshot(&self) -> Vec<RouteSnapshot> {
        let now = Instant::now();
        self.routes
            .iter()
            .map(|r| RouteSnapshot {
                name: r.spec.name.clone(),
                open: r.stats.open.get(),
                total: r.stats.total.get(),
                rejected: Rejection::ALL
                    .iter()
                    .map(|&w| (w.as_str(), r.stats.rejected(w)))
                    .collect(),
                upstreams: r
                    .spec
                    .upstreams
                    .iter()
                    .zip(&r.upstreams)
                    .map(|(u, s)| (u.url.clone(), s.is_healthy(now)))
                    .collect(),
            })
            .collect()
    }

    /// Applies an active health verdict; true when it changed this shard's view.
    pub fn set_checked(&self, route: &str, upstream: &str, up: bool) -> bool {
        let Some(r) = self.routes.iter().find(|r| r.spec.name == route) else {
            return false;
        };
        let Some(i) = r.spec.upstreams.iter().position(|u| u.url == upstream) else {
            return false;
        };
        let state = &r.upstreams[i];
        let changed = state.checked_up.replace(up) != up;
        if up {
            state.down_until.set(None);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn table(routes: &str) -> ShardRoutes {
        let text = format!("[server]\nenable_tls = false\nrelay_path = \"/relay\"\n{routes}");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        ShardRoutes::build(&c.routes, &RouteTrust::new(), &ShardRoutes::default()).unwrap()
    }

    fn head(host: &str, target: &str) -> RequestHead {
        let raw = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        crate::http::head::parse_request_head(raw.as_bytes(), 8192, 100)
            .unwrap()
            .unwrap()
    }

    const ROUTES: &str = r#"
[[routes]]
name = "root"
path = "/"
upstream = ["ws://127.0.0.1:1"]
[[routes]]
name = "chat"
path = "/chat"
upstream = ["ws://127.0.0.1:2"]
[[routes]]
name = "chat-v2"
path = "/chat/v2"
upstream = ["ws://127.0.0.1:3"]
[[routes]]
name = "tenant"
path = "/chat"
host = "*.tenant.example"
upstream = ["ws://127.0.0.1:4"]
[[routes]]
name = "vip"
path = "/chat"
host = "vip.tenant.example"
upstream = ["ws://127.0.0.1:5"]
"#;

    fn name_for(t: &ShardRoutes, host: &str, target: &str) -> Option<String> {
        t.find(&head(host, target))
            .map(|i| t.routes[i].spec.name.clone())
    }

    #[test]
    fn longest_prefix_then_most_specific_host() {
        let t = table(ROUTES);
        assert_eq!(name_for(&t, "x", "/other").as_deref(), Some("root"));
        assert_eq!(name_for(&t, "x", "/chat?room=1").as_deref(), Some("chat"));
        assert_eq!(name_for(&t, "x", "/chat/v2/a").as_deref(), Some("chat-v2"));
        assert_eq!(
            name_for(&t, "a.tenant.example", "/chat").as_deref(),
            Some("tenant")
        );
        assert_eq!(
            name_for(&t, "VIP.tenant.example:443", "/chat/x").as_deref(),
            Some("vip")
        );
        // The longer path beats a more specific host.
        assert_eq!(
            name_for(&t, "vip.tenant.example", "/chat/v2").as_deref(),
            Some("chat-v2")
        );
    }

    #[test]
    fn round_robin_skips_unhealthy_and_falls_back_to_all() {
        let t = table(
            "[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = [\"ws://127.0.0.1:1\", \"ws://127.0.0.1:2\"]\n",
        );
        let r = &t.routes[0];
        let now = Instant::now();
        assert_eq!(r.candidates(now), vec![0, 1]);
        assert_eq!(r.candidates(now), vec![1, 0]);
        r.mark_failed(1);
        assert_eq!(r.candidates(Instant::now()), vec![0]);
        assert_eq!(r.candidates(Instant::now()), vec![0]);
        r.mark_failed(0);
        assert_eq!(r.candidates(Instant::now()).len(), 2);
        r.mark_succeeded(0);
        assert!(!t.set_checked("r", "ws://127.0.0.1:2", true));
        assert!(t.set_checked("r", "ws://127.0.0.1:2", false));
        assert_eq!(r.candidates(Instant::now()), vec![0]);
    }

    #[test]
    fn reload_keeps_health_and_stats_of_unchanged_upstreams() {
        let one = "[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = [\"ws://127.0.0.1:1\", \"ws://127.0.0.1:2\"]\n";
        let old = table(one);
        old.set_checked("r", "ws://127.0.0.1:2", false);
        old.routes[0].stats.total.set(7);
        let text = "[server]\nenable_tls = false\nrelay_path = \"/relay\"\n[[routes]]\nname = \"r\"\npath = \"/r\"\nupstream = [\"ws://127.0.0.1:2\", \"ws://127.0.0.1:3\"]\n";
        let c = Config::parse(Path::new("t.toml"), text).unwrap();
        let new = ShardRoutes::build(&c.routes, &RouteTrust::new(), &old).unwrap();
        assert!(!new.routes[0].upstreams[0].checked_up.get());
        assert!(new.routes[0].upstreams[1].checked_up.get());
        assert_eq!(new.routes[0].stats.total.get(), 7);
    }
}
