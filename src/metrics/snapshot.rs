//! What a shard hands the scrape thread: a plain-data copy of its counters,
//! and the process-wide sum of several shards' copies.
//!
//! Must not: hold references into a shard (snapshots cross threads).

/// One shard's counters at one moment. Vectors are indexed like the enums in
/// the parent module (`SessionKind`, `Direction`, `TlsSide`).
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    pub shard: usize,
    /// TCP connections in any phase (request head, handshake, session).
    pub connections_open: u64,
    pub sessions_open: Vec<u64>,
    pub sessions_total: Vec<u64>,
    pub slow_consumers: Vec<u64>,
    pub bytes: Vec<u64>,
    /// `[side][resumed as usize]`.
    pub tls_handshakes: Vec<Vec<u64>>,
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    pub setup_buckets: Vec<u64>,
    pub setup_sum_micros: u64,
    pub refused: Vec<(&'static str, u64)>,
    /// `[[routes]]` as this shard counts them.
    pub routes: Vec<RouteSnapshot>,
    /// Ring-mode receives that found the ring empty (read as `copy`).
    pub ring_empty: u64,
    /// Ring buffers held by sessions now.
    pub ring_lent: u64,
}

/// One route's counters on one shard.
#[derive(Debug, Clone, Default)]
pub struct RouteSnapshot {
    pub name: String,
    pub open: u64,
    pub total: u64,
    /// `(reason label, count)`.
    pub rejected: Vec<(&'static str, u64)>,
    /// `(upstream URL, healthy in this shard's view)`.
    pub upstreams: Vec<(String, bool)>,
}

/// Series summed over shards (those without a `shard` label).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub slow_consumers: Vec<u64>,
    pub bytes: Vec<u64>,
    pub tls_handshakes: Vec<Vec<u64>>,
    pub setup_buckets: Vec<u64>,
    pub setup_sum_micros: u64,
    pub refused: Vec<(&'static str, u64)>,
    pub ring_empty: u64,
    pub ring_lent: u64,
}

fn add_into(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

impl Totals {
    pub fn sum(shards: &[ShardSnapshot]) -> Totals {
        let mut t = Totals::default();
        for s in shards {
            add_into(&mut t.slow_consumers, &s.slow_consumers);
            add_into(&mut t.bytes, &s.bytes);
            if t.tls_handshakes.len() < s.tls_handshakes.len() {
                t.tls_handshakes.resize(s.tls_handshakes.len(), Vec::new());
            }
            for (a, b) in t.tls_handshakes.iter_mut().zip(&s.tls_handshakes) {
                add_into(a, b);
            }
            add_into(&mut t.setup_buckets, &s.setup_buckets);
            t.setup_sum_micros += s.setup_sum_micros;
            t.ring_empty += s.ring_empty;
            t.ring_lent += s.ring_lent;
            for (code, n) in &s.refused {
                match t.refused.iter_mut().find(|(c, _)| c == code) {
                    Some((_, total)) => *total += n,
                    None => t.refused.push((code, *n)),
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_over_shards() {
        let a = ShardSnapshot {
            bytes: vec![1, 2],
            refused: vec![("auth_failed", 1)],
            tls_handshakes: vec![vec![1, 0], vec![0, 1]],
            setup_buckets: vec![1, 0],
            setup_sum_micros: 5,
            ..Default::default()
        };
        let b = ShardSnapshot {
            bytes: vec![10, 20],
            refused: vec![("auth_failed", 2), ("other", 1)],
            tls_handshakes: vec![vec![0, 3], vec![0, 0]],
            setup_buckets: vec![0, 4],
            setup_sum_micros: 7,
            ..Default::default()
        };
        let t = Totals::sum(&[a, b]);
        assert_eq!(t.bytes, vec![11, 22]);
        assert_eq!(t.refused, vec![("auth_failed", 3), ("other", 1)]);
        assert_eq!(t.tls_handshakes, vec![vec![1, 3], vec![0, 1]]);
        assert_eq!(t.setup_buckets, vec![1, 4]);
        assert_eq!(t.setup_sum_micros, 12);
    }
}
