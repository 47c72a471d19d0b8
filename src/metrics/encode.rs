//! The text exposition (Prometheus 0.0.4, `# HELP`/`# TYPE`) of gathered
//! snapshots, through `prometheus-client`'s encoder: a [`Collector`] writes
//! each family from the snapshots, so names, escaping and the histogram
//! layout follow the crate, not hand-written text.
//!
//! Counter names are given without `_total`; the encoder appends it.
//! Must not: run on a shard (the scrape thread calls it).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::snapshot::{RouteSnapshot, ShardSnapshot, Totals};
use super::{Direction, SessionKind, TlsSide, SETUP_BUCKETS};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Control-plane values at scrape time (not per shard).
#[derive(Debug, Clone, Default)]
pub struct ControlValues {
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Shards that did not answer the scrape in time.
    pub shards_missing: u64,
    pub shards: u64,
    /// The hub's streams, history bytes, recovered, not recovered and
    /// replayed (`gather::HubCounters`), when the hub is on.
    pub hub: Option<[u64; 5]>,
}

#[derive(Debug)]
struct Gathered {
    shards: Vec<ShardSnapshot>,
    totals: Totals,
    control: ControlValues,
}

type Labels = Vec<(&'static str, String)>;

/// Encodes everything as Prometheus text 0.0.4.
pub fn encode(shards: Vec<ShardSnapshot>, control: ControlValues) -> String {
    let totals = Totals::sum(&shards);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Gathered {
        shards,
        totals,
        control,
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let series = series.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
    family(enc, name, help, MetricType::Counter, series)
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, i64)>,
) -> Result<(), std::fmt::Error> {
    let series = series.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
    family(enc, name, help, MetricType::Gauge, series)
}

fn at(v: &[u64], i: usize) -> u64 {
    v.get(i).copied().unwrap_or(0)
}

impl Gathered {
    /// `(kind, shard)` series of one per-kind vector of each shard.
    fn by_kind_and_shard(&self, pick: fn(&ShardSnapshot) -> &Vec<u64>) -> Vec<(Labels, u64)> {
        let mut out = Vec::new();
        for kind in SessionKind::ALL {
            for s in &self.shards {
                let labels = vec![
                    ("kind", kind.as_str().into()),
                    ("shard", s.shard.to_string()),
                ];
                out.push((labels, at(pick(s), kind as usize)));
            }
        }
        out
    }

    fn sessions(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let open = self.by_kind_and_shard(|s| &s.sessions_open);
        gauges(
            enc,
            "ws_relay_sessions_open",
            "Sessions open now, by kind (relay, demo, ...) and shard.",
            open.into_iter().map(|(l, v)| (l, v as i64)),
        )?;
        counters(
            enc,
            "ws_relay_sessions",
            "Sessions opened since start, by kind and shard.",
            self.by_kind_and_shard(|s| &s.sessions_total),
        )?;
        gauges(
            enc,
            "ws_relay_connections_open",
            "TCP connections open now in any phase (request head, handshake, session), by shard.",
            self.shards.iter().map(|s| {
                (
                    vec![("shard", s.shard.to_string())],
                    s.connections_open as i64,
                )
            }),
        )?;
        counters(
            enc,
            "ws_relay_slow_consumers",
            "Clients closed with 1013 because they did not drain their bounded queue, by kind.",
            SessionKind::ALL.map(|k| {
                let n = at(&self.totals.slow_consumers, k as usize);
                (vec![("kind", k.as_str().into())], n)
            }),
        )
    }

    fn traffic(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.totals;
        counters(
            enc,
            "ws_relay_auth_failures",
            "Sessions refused before passthrough, by the error code the client was sent.",
            t.refused
                .iter()
                .map(|(code, n)| (vec![("code", code.to_string())], *n)),
        )?;
        counters(
            enc,
            "ws_relay_bytes_relayed",
            "Bytes relayed between clients and targets, by direction.",
            Direction::ALL.map(|d| {
                (
                    vec![("direction", d.as_str().into())],
                    at(&t.bytes, d as usize),
                )
            }),
        )?;
        let mut tls = Vec::new();
        for side in TlsSide::ALL {
            let per = t.tls_handshakes.get(side as usize);
            for (mode, i) in [("full", 0), ("resumed", 1)] {
                let n = per.map_or(0, |p| at(p, i));
                tls.push((
                    vec![("side", side.as_str().into()), ("mode", mode.into())],
                    n,
                ));
            }
        }
        counters(
            enc,
            "ws_relay_tls_handshakes",
            "Completed TLS handshakes, by side (listener = toward clients, target) and mode (full, resumed).",
            tls,
        )?;
        counters(
            enc,
            "ws_relay_ring_empty",
            "forward = \"ring\" receives that found every ring buffer in use and read through the copy pool instead.",
            [(Vec::new(), t.ring_empty)],
        )?;
        gauges(
            enc,
            "ws_relay_ring_buffers_lent",
            "Provided-buffer ring buffers held by sessions now (between a receive and its write).",
            [(Vec::new(), t.ring_lent as i64)],
        )
    }

    fn setup(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.totals;
        let mut buckets: Vec<(f64, u64)> = SETUP_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, b)| (*b, at(&t.setup_buckets, i)))
            .collect();
        buckets.push((f64::INFINITY, at(&t.setup_buckets, SETUP_BUCKETS.len())));
        let count = buckets.iter().map(|(_, n)| n).sum();
        let mut m = enc.encode_descriptor(
            "ws_relay_target_setup_seconds",
            "Time to open a target for a relay session: dial, TLS and WebSocket upgrade (successful ones).",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            t.setup_sum_micros as f64 / 1e6,
            count,
            &buckets,
            None,
        )
    }

    fn control(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.control;
        counters(
            enc,
            "ws_relay_reloads",
            "Configuration reloads (control socket or SIGHUP), by result.",
            [
                (vec![("result", "ok".into())], c.reloads_ok),
                (vec![("result", "failed".into())], c.reloads_failed),
            ],
        )?;
        gauges(
            enc,
            "ws_relay_shards",
            "Shards running, and how many did not answer this scrape in time.",
            [
                (vec![("state", "running".into())], c.shards as i64),
                (vec![("state", "missing".into())], c.shards_missing as i64),
            ],
        )?;
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        gauges(
            enc,
            "ws_relay_build_info",
            "Build information; the value is always 1.",
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").into()),
                    ("profile", profile.into()),
                ],
                1,
            )],
        )
    }
}

impl Gathered {
    /// The push hub's history and recovery (docs/hub.md "Recovery").
    fn hub(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some([streams, bytes, recovered, not_recovered, replayed]) = self.control.hub else {
            return Ok(());
        };
        gauges(
            enc,
            "ws_relay_hub_streams",
            "Hub streams with history kept in this process's memory.",
            [(vec![], streams as i64)],
        )?;
        gauges(
            enc,
            "ws_relay_hub_history_bytes",
            "Bytes of the messages the hub keeps in memory for recovery.",
            [(vec![], bytes as i64)],
        )?;
        counters(
            enc,
            "ws_relay_hub_recoveries",
            "Stream recoveries asked by reconnecting clients, by result.",
            [
                (vec![("result", "recovered".into())], recovered),
                (vec![("result", "not_recovered".into())], not_recovered),
            ],
        )?;
        counters(
            enc,
            "ws_relay_hub_replayed_messages",
            "Messages replayed to clients by recoveries.",
            [(vec![], replayed)],
        )
    }
}

/// Pushes one route's series of one shard.
type RouteSeries<'a> = dyn Fn(&RouteSnapshot, &ShardSnapshot, &mut Vec<(Labels, u64)>) + 'a;

impl Gathered {
    /// `[[routes]]`: sessions and rejections per route and shard, and each
    /// upstream's health as each shard sees it (active checks reach every
    /// shard; passive marks are per shard).
    fn routes(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let per_route = |f: &RouteSeries<'_>| {
            let mut out = Vec::new();
            for s in &self.shards {
                for r in &s.routes {
                    f(r, s, &mut out);
                }
            }
            out
        };
        let labels = |r: &RouteSnapshot, s: &ShardSnapshot| -> Labels {
            vec![("route", r.name.clone()), ("shard", s.shard.to_string())]
        };
        let open = per_route(&|r, s, out| out.push((labels(r, s), r.open)));
        gauges(
            enc,
            "ws_relay_route_sessions_open",
            "Proxied sessions open now, by route and shard.",
            open.into_iter().map(|(l, v)| (l, v as i64)),
        )?;
        counters(
            enc,
            "ws_relay_route_sessions",
            "Proxied sessions opened since start, by route and shard.",
            per_route(&|r, s, out| out.push((labels(r, s), r.total))),
        )?;
        counters(
            enc,
            "ws_relay_route_rejections",
            "Requests a route turned away, by route, reason and shard.",
            per_route(&|r, s, out| {
                for (reason, n) in &r.rejected {
                    let mut l = labels(r, s);
                    l.push(("reason", reason.to_string()));
                    out.push((l, *n));
                }
            }),
        )?;
        let up = per_route(&|r, s, out| {
            for (url, healthy) in &r.upstreams {
                let mut l = labels(r, s);
                l.push(("upstream", url.clone()));
                out.push((l, u64::from(*healthy)));
            }
        });
        gauges(
            enc,
            "ws_relay_upstream_up",
            "1 when this shard would send new sessions to the upstream, else 0.",
            up.into_iter().map(|(l, v)| (l, v as i64)),
        )
    }
}

impl Collector for Gathered {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.sessions(&mut enc)?;
        self.traffic(&mut enc)?;
        self.setup(&mut enc)?;
        self.routes(&mut enc)?;
        self.hub(&mut enc)?;
        self.control(&mut enc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ShardMetrics;

    #[test]
    fn text_has_help_type_and_totals() {
        let a = ShardMetrics::new();
        let _s = a.session(SessionKind::Relay);
        a.bytes_cell(Direction::ClientToTarget).set(100);
        a.target_setup(std::time::Duration::from_millis(2));
        a.refused("auth_failed");
        let b = ShardMetrics::new();
        b.bytes_cell(Direction::ClientToTarget).set(5);
        let text = encode(
            vec![a.snapshot(0, 1), b.snapshot(1, 0)],
            ControlValues {
                reloads_ok: 2,
                shards: 2,
                ..Default::default()
            },
        );
        for line in [
            "# TYPE ws_relay_sessions_open gauge",
            "ws_relay_sessions_open{kind=\"relay\",shard=\"0\"} 1",
            "ws_relay_sessions_open{kind=\"demo\",shard=\"1\"} 0",
            "# TYPE ws_relay_sessions_total counter",
            "ws_relay_sessions_total{kind=\"relay\",shard=\"0\"} 1",
            "ws_relay_bytes_relayed_total{direction=\"client_to_target\"} 105",
            "ws_relay_auth_failures_total{code=\"auth_failed\"} 1",
            "ws_relay_auth_failures_total{code=\"over_capacity\"} 0",
            "# TYPE ws_relay_target_setup_seconds histogram",
            "ws_relay_target_setup_seconds_bucket{le=\"0.001\"} 0",
            "ws_relay_target_setup_seconds_bucket{le=\"0.0025\"} 1",
            "ws_relay_target_setup_seconds_bucket{le=\"+Inf\"} 1",
            "ws_relay_target_setup_seconds_count 1",
            "ws_relay_reloads_total{result=\"ok\"} 2",
            "ws_relay_tls_handshakes_total{side=\"listener\",mode=\"resumed\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.contains("# HELP ws_relay_build_info "), "{text}");
        assert!(!text.contains("# EOF"), "0.0.4 text has no EOF marker");
        let infs = text.matches("le=\"+Inf\"").count();
        assert_eq!(infs, 1, "one +Inf bucket:\n{text}");
    }
}
