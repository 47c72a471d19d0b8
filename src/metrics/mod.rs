//! Prometheus `/metrics` (docs/metrics.md "Metrics"): per-shard counters, gathered over the
//! per-core channels on a scrape and encoded as Prometheus text 0.0.4.
//!
//! - this file: [`ShardMetrics`], the counters one shard owns (plain `Cell`s:
//!   a shard is one thread, so counting costs an add, no atomic, no lock),
//!   and [`SessionKind`], the `kind` label of session series.
//! - `snapshot`: the plain-data copy a shard hands over on a scrape.
//! - `gather`: the control-plane thread that asks every shard and answers.
//! - `encode`: the text exposition through `prometheus-client`.
//! - `access`: who may scrape (loopback, or `metrics_token`).
//!
//! Must not: share a counter between shards, or do anything on a shard for a
//! scrape beyond copying its counters into a snapshot.

pub mod access;
pub mod encode;
pub mod gather;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use crate::ws::error::ErrorCode;
pub use gather::{ControlCounters, HubCounters, ScrapeRequest};
pub use snapshot::{RouteSnapshot, ShardSnapshot};

/// What a session is, for the `kind` label. A new front-door subsystem
/// (route, hub, tunnel) adds a variant here and to [`SessionKind::ALL`];
/// every series keyed by kind picks it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Relay,
    Demo,
    /// A `[[routes]]` (reverse-proxy) session.
    Route,
    /// A relay session to a `tcp://` target.
    Tunnel,
}

impl SessionKind {
    pub const ALL: [SessionKind; 4] = [
        SessionKind::Relay,
        SessionKind::Demo,
        SessionKind::Route,
        SessionKind::Tunnel,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Relay => "relay",
            SessionKind::Demo => "demo",
            SessionKind::Route => "route",
            SessionKind::Tunnel => "tunnel",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Which way relayed bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToTarget,
    TargetToClient,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ClientToTarget, Direction::TargetToClient];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToTarget => "client_to_target",
            Direction::TargetToClient => "target_to_client",
        }
    }
}

/// Which TLS handshake: the listener's (toward clients) or toward a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Listener,
    Target,
}

impl TlsSide {
    pub const ALL: [TlsSide; 2] = [TlsSide::Listener, TlsSide::Target];

    pub fn as_str(self) -> &'static str {
        match self {
            TlsSide::Listener => "listener",
            TlsSide::Target => "target",
        }
    }
}

/// Upper bounds (seconds) of the target-setup histogram: loopback targets
/// set up in well under a millisecond, distant `wss://` ones in hundreds.
pub const SETUP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram owned by one shard: per-bucket counts (not cumulative; the
/// last slot is `+Inf`), sum and count.
#[derive(Debug, Default)]
pub struct LocalHistogram {
    buckets: [Cell<u64>; SETUP_BUCKETS.len() + 1],
    sum_micros: Cell<u64>,
}

impl LocalHistogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = SETUP_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(SETUP_BUCKETS.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_micros, d.as_micros() as u64);
    }
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// One shard's counters. Shard-local: `Cell`s only; a scrape copies them.
#[derive(Debug, Default)]
pub struct ShardMetrics {
    sessions_open: [Cell<u64>; SessionKind::COUNT],
    sessions_total: [Cell<u64>; SessionKind::COUNT],
    slow_consumers: [Cell<u64>; SessionKind::COUNT],
    /// Relayed bytes, by [`Direction`]; bumped as bytes pass, so long
    /// sessions show up before they end.
    pub bytes: [Cell<u64>; 2],
    /// `[side][resumed as usize]`.
    tls_handshakes: [[Cell<u64>; 2]; 2],
    target_setup: LocalHistogram,
    /// Refusals by error code; a `RefCell` because refusals are rare and the
    /// set of codes is open (the hub brings its own).
    refused: RefCell<Vec<(&'static str, u64)>>,
}

impl ShardMetrics {
    pub fn new() -> ShardMetrics {
        let m = ShardMetrics::default();
        // Known codes start at 0, so a rate() over them exists from the start.
        {
            let mut refused = m.refused.borrow_mut();
            for code in ErrorCode::ALL.map(ErrorCode::as_str) {
                if !refused.iter().any(|(c, _)| *c == code) {
                    refused.push((code, 0));
                }
            }
        }
        m
    }

    /// Counts a session of `kind` as open until the guard drops.
    pub fn session(&self, kind: SessionKind) -> SessionGuard<'_> {
        bump(&self.sessions_open[kind.index()], 1);
        bump(&self.sessions_total[kind.index()], 1);
        SessionGuard {
            metrics: self,
            kind,
        }
    }

    /// A session refused with an error `code` (docs/relay.md "Errors" codes, or others).
    pub fn refused(&self, code: &'static str) {
        let mut all = self.refused.borrow_mut();
        match all.iter_mut().find(|(c, _)| *c == code) {
            Some((_, n)) => *n += 1,
            None => all.push((code, 1)),
        }
    }

    pub fn slow_consumer(&self, kind: SessionKind) {
        bump(&self.slow_consumers[kind.index()], 1);
    }

    pub fn tls_handshake(&self, side: TlsSide, resumed: bool) {
        bump(&self.tls_handshakes[side as usize][usize::from(resumed)], 1);
    }

    pub fn target_setup(&self, d: Duration) {
        self.target_setup.observe(d);
    }

    pub fn bytes_cell(&self, dir: Direction) -> &Cell<u64> {
        &self.bytes[dir as usize]
    }

    /// A plain-data copy for a scrape.
    pub fn snapshot(&self, shard: usize, connections_open: usize) -> ShardSnapshot {
        let get = |cells: &[Cell<u64>]| cells.iter().map(Cell::get).collect::<Vec<_>>();
        ShardSnapshot {
            shard,
            connections_open: connections_open as u64,
            sessions_open: get(&self.sessions_open),
            sessions_total: get(&self.sessions_total),
            slow_consumers: get(&self.slow_consumers),
            bytes: get(&self.bytes),
            tls_handshakes: self.tls_handshakes.iter().map(|s| get(s)).collect(),
            setup_buckets: get(&self.target_setup.buckets),
            setup_sum_micros: self.target_setup.sum_micros.get(),
            refused: self.refused.borrow().clone(),
            routes: Vec::new(),
            ring_empty: 0,
            ring_lent: 0,
        }
    }
}

/// An open session; closes it in the counters on drop.
pub struct SessionGuard<'a> {
    metrics: &'a ShardMetrics,
    kind: SessionKind,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        let c = &self.metrics.sessions_open[self.kind.index()];
        c.set(c.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_and_close() {
        let m = ShardMetrics::new();
        let a = m.session(SessionKind::Relay);
        let b = m.session(SessionKind::Demo);
        let t = m.session(SessionKind::Tunnel);
        let s = m.snapshot(0, 3);
        // Indexed like SessionKind::ALL: relay, demo, route, tunnel.
        assert_eq!(s.sessions_open, vec![1, 1, 0, 1]);
        drop((a, b, t));
        let _c = m.session(SessionKind::Relay);
        let _r = m.session(SessionKind::Route);
        let s = m.snapshot(0, 2);
        assert_eq!(s.sessions_open, vec![1, 0, 1, 0]);
        assert_eq!(s.sessions_total, vec![2, 1, 1, 1]);
    }

    #[test]
    fn histogram_buckets_and_refusals() {
        let m = ShardMetrics::new();
        m.target_setup(Duration::from_micros(300));
        m.target_setup(Duration::from_millis(3));
        m.target_setup(Duration::from_secs(30));
        let s = m.snapshot(0, 0);
        assert_eq!(s.setup_buckets[0], 1);
        assert_eq!(s.setup_buckets[3], 1, "3 ms lands in le=0.005");
        assert_eq!(s.setup_buckets[SETUP_BUCKETS.len()], 1, "+Inf");
        assert_eq!(s.setup_sum_micros, 30_003_300);
        m.refused("auth_failed");
        m.refused("invalid_api_key");
        let s = m.snapshot(0, 0);
        assert!(s.refused.contains(&("auth_failed", 1)));
        assert!(s.refused.contains(&("auth_timeout", 0)));
        assert!(s.refused.contains(&("invalid_api_key", 1)));
        let unreachable = s
            .refused
            .iter()
            .filter(|(c, _)| *c == "target_unreachable")
            .count();
        assert_eq!(unreachable, 1, "codes shared by two variants appear once");
    }
}
