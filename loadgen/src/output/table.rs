//! The readable default output: one block per run, and for `compare` the
//! original README's table (direct, via ws-relay, overhead; throughput
//! ratio) with medians over rounds plus p99, then the per-round detail.

use std::fmt::Write as _;

use super::{CompareReport, Report, RunReport};
use crate::stats::{ErrorCounts, Summary};

/// Formats microseconds with a unit that keeps 3 significant digits.
pub fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if a >= 1_000_000.0 {
        format!("{:.2} s", v / 1e6)
    } else if a >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.1} µs")
    }
}

/// Integer with thousands separators.
pub fn fmt_int(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn fmt_rate(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    fmt_int(v.round().max(0.0) as u64)
}

fn signed_us(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", fmt_us(v))
    } else {
        format!("-{}", fmt_us(-v))
    }
}

fn signed_pct(v: f64) -> String {
    if v.is_finite() {
        format!("{v:+.1}%")
    } else {
        "-".into()
    }
}

/// Renders a whole report.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    if let Some(c) = &r.compare {
        compare(&mut s, c, r);
        return s;
    }
    for run in &r.runs {
        run_block(&mut s, run);
    }
    footer(&mut s, r);
    s
}

fn footer(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "host: {} CPUs, {} driver, kernel {}",
        r.host.cpus, r.host.io_driver, r.host.kernel
    );
    if r.ok {
        let _ = writeln!(s, "result: OK (every echo verified)");
    } else {
        let _ = writeln!(
            s,
            "result: FAILED ({} error(s), see above)",
            fmt_int(r.errors_total)
        );
    }
}

fn route_line(run: &RunReport) -> String {
    match (&run.route.relay, &run.route.auth) {
        (Some(relay), Some(auth)) => {
            format!("{} via relay {} (auth {auth})", run.route.target, relay)
        }
        _ => format!("{} (direct)", run.route.target),
    }
}

fn run_block(s: &mut String, run: &RunReport) {
    let p = &run.params;
    let _ = writeln!(s, "== {} [{}] {}", run.name, run.mode, route_line(run));
    let _ = writeln!(
        s,
        "   {} {}, {} thread(s){}, {} B messages{}",
        p.connections,
        if run.mode == "connect" {
            "at a time"
        } else {
            "connection(s)"
        },
        p.threads,
        if p.pin.is_empty() {
            String::new()
        } else {
            format!(" pinned to CPU {:?}", p.pin)
        },
        p.size,
        p.fragment
            .map(|f| format!(", fragmented at {f} B"))
            .unwrap_or_default()
    );
    let m = &run.messages;
    if run.mode != "connect" {
        let _ = writeln!(
            s,
            "   messages: sent {}, received {}, verified {}",
            fmt_int(m.sent),
            fmt_int(m.received),
            fmt_int(m.verified)
        );
    }
    if let Some(t) = &run.throughput {
        let _ = writeln!(
            s,
            "   throughput: {} msg/s, {:.2} MB/s over {:.1} s",
            fmt_rate(t.msg_per_s),
            t.mb_per_s,
            t.duration_s
        );
        if t.per_connection.len() > 1 {
            let mut v: Vec<f64> = t.per_connection.iter().map(|c| c.msg_per_s).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            let _ = writeln!(
                s,
                "   per connection msg/s: min {}, median {}, max {}",
                fmt_rate(v[0]),
                fmt_rate(crate::stats::median(&v)),
                fmt_rate(v[v.len() - 1])
            );
        } else if let Some(c) = t.per_connection.first() {
            let _ = writeln!(s, "   per connection: {} msg/s", fmt_rate(c.msg_per_s));
        }
    }
    if let Some(rate) = &run.rate {
        let _ = writeln!(
            s,
            "   rate: target {} msg/s, achieved {} msg/s; {} of {} scheduled sent, {} late (max lag {})",
            fmt_rate(rate.target_per_s),
            fmt_rate(rate.achieved_per_s),
            fmt_int(rate.sent),
            fmt_int(rate.scheduled),
            fmt_int(rate.late_sends),
            fmt_us(rate.max_send_lag_us)
        );
    }
    if let Some(c) = &run.connect {
        let _ = writeln!(
            s,
            "   connections: {} of {} ok, {}/s; TLS {} (resumed {})",
            fmt_int(c.succeeded),
            fmt_int(c.attempted),
            fmt_rate(c.per_s),
            c.tls,
            fmt_int(c.resumed)
        );
        let _ = writeln!(
            s,
            "   {:<12} {:>10} {:>10} {:>10} {:>10}",
            "phase", "p50", "p99", "mean", "max"
        );
        let ph = &c.phases_us;
        for (name, sum) in [
            ("tcp", &ph.tcp),
            ("tls", &ph.tls),
            ("upgrade", &ph.upgrade),
            ("relay auth", &ph.auth),
            ("total", &ph.total),
        ] {
            if let Some(x) = sum {
                let _ = writeln!(
                    s,
                    "   {:<12} {:>10} {:>10} {:>10} {:>10}",
                    name,
                    fmt_us(x.p50),
                    fmt_us(x.p99),
                    fmt_us(x.mean),
                    fmt_us(x.max)
                );
            }
        }
    }
    let label = match run.mode.as_str() {
        "rate" => "latency, corrected (from intended send)",
        "throughput" => "latency under load",
        "connect" => "",
        _ => "round-trip latency",
    };
    if !label.is_empty() {
        if let Some(l) = &run.latency_us {
            latency_lines(s, label, l);
        }
    }
    if let Some(l) = &run.raw_latency_us {
        latency_lines(s, "latency, raw (from actual send)", l);
    }
    errors_line(s, &run.errors);
    if let Some(f) = &run.hist_file {
        let _ = writeln!(s, "   histogram: {f}");
    }
    let _ = writeln!(s);
}

fn latency_lines(s: &mut String, label: &str, l: &Summary) {
    let _ = writeln!(s, "   {label} ({} samples):", fmt_int(l.count));
    let _ = writeln!(
        s,
        "     min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  mean {} ± {}",
        fmt_us(l.min),
        fmt_us(l.p50),
        fmt_us(l.p90),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.p9999),
        fmt_us(l.max),
        fmt_us(l.mean),
        fmt_us(l.stdev)
    );
}

fn errors_line(s: &mut String, e: &ErrorCounts) {
    if e.total == 0 {
        let _ = writeln!(
            s,
            "   errors: none{}",
            if e.timeouts > 0 {
                format!(
                    " ({} late echo wait(s) timed out, then arrived)",
                    e.timeouts
                )
            } else {
                String::new()
            }
        );
        return;
    }
    let _ = writeln!(
        s,
        "   ERRORS: {} — lost {}, duplicated {}, corrupted {}, unexpected {}, connection failures {}, connect failures {}, timeouts {}",
        fmt_int(e.total),
        fmt_int(e.lost),
        fmt_int(e.duplicated),
        fmt_int(e.corrupted),
        fmt_int(e.unexpected),
        fmt_int(e.protocol),
        fmt_int(e.connect),
        fmt_int(e.timeouts)
    );
    if let Some(f) = &e.first {
        let _ = writeln!(s, "   first error: {f}");
    }
}

fn compare(s: &mut String, c: &CompareReport, r: &Report) {
    let _ = writeln!(
        s,
        "ws-relay-core compare: direct vs relayed, {} rounds, alternating",
        c.rounds
    );
    let _ = writeln!(s, "  target  {}", c.target);
    let _ = writeln!(
        s,
        "  relay   {} (auth {}{}{})",
        c.relay,
        c.auth,
        c.forward
            .as_deref()
            .map(|f| format!(", forward {f}"))
            .unwrap_or_default(),
        c.relay_bin
            .as_deref()
            .map(|b| format!(", {b}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "  client  loadgen {}, {} driver, {} B messages, host {} CPUs",
        r.loadgen_version, r.host.io_driver, c.size, r.host.cpus
    );
    let cpu = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("CPU {c}"));
    let p = &c.placement;
    let _ = writeln!(
        s,
        "  pinning client {}, target {}, relay {}\n",
        cpu(p.client_cpu),
        cpu(p.target_cpu),
        cpu(p.relay_cpu)
    );
    let l = &c.latency;
    let _ = writeln!(
        s,
        "Latency (ping, {} round trips per round; median of {} rounds)",
        fmt_int(c.ping_count),
        c.rounds
    );
    let _ = writeln!(
        s,
        "  {:<6} {:>12} {:>16} {:>24}",
        "", "direct", "via ws-relay", "overhead"
    );
    for (name, d, v, o, p) in [
        (
            "p50",
            l.direct.p50,
            l.relayed.p50,
            l.overhead_us.p50,
            l.overhead_pct.p50,
        ),
        (
            "p99",
            l.direct.p99,
            l.relayed.p99,
            l.overhead_us.p99,
            l.overhead_pct.p99,
        ),
        (
            "mean",
            l.direct.mean,
            l.relayed.mean,
            l.overhead_us.mean,
            l.overhead_pct.mean,
        ),
    ] {
        let _ = writeln!(
            s,
            "  {:<6} {:>12} {:>16} {:>24}",
            name,
            fmt_us(d),
            fmt_us(v),
            format!("{} ({})", signed_us(o), signed_pct(p))
        );
    }
    if let Some(t) = &c.throughput {
        let _ = writeln!(
            s,
            "\nThroughput (per connection, window {}, {:.1} s per round; median of {} rounds)",
            c.window.map(fmt_int).unwrap_or_default(),
            c.throughput_duration_s.unwrap_or(0.0),
            c.rounds
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>12} {:>16} {:>24}",
            "", "direct", "via ws-relay", "relayed/direct"
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>12} {:>16} {:>24}",
            "msg/s",
            fmt_rate(t.direct_msg_per_s),
            fmt_rate(t.relayed_msg_per_s),
            format!("{:.1}%", t.ratio * 100.0)
        );
        let _ = writeln!(
            s,
            "  {:<6} {:>12} {:>16}",
            "MB/s",
            format!("{:.2}", t.direct_mb_per_s),
            format!("{:.2}", t.relayed_mb_per_s)
        );
    }
    let _ = writeln!(s, "\nPer round:");
    let _ = writeln!(
        s,
        "  {:<26} {:>10} {:>10} {:>10} {:>14} {:>8}",
        "run", "p50", "p99", "mean", "msg/s", "errors"
    );
    for run in &r.runs {
        let (p50, p99, mean) = run
            .latency_us
            .map(|l| (fmt_us(l.p50), fmt_us(l.p99), fmt_us(l.mean)))
            .unwrap_or_default();
        let mps = run
            .throughput
            .as_ref()
            .map(|t| fmt_rate(t.msg_per_s))
            .unwrap_or_else(|| "-".into());
        let (p50, p99, mean) = if run.mode == "throughput" {
            ("-".into(), "-".into(), "-".into())
        } else {
            (p50, p99, mean)
        };
        let _ = writeln!(
            s,
            "  {:<26} {:>10} {:>10} {:>10} {:>14} {:>8}",
            run.name,
            p50,
            p99,
            mean,
            mps,
            fmt_int(run.errors.total)
        );
    }
    let verified: u64 = r.runs.iter().map(|x| x.messages.verified).sum();
    let _ = writeln!(s);
    if r.ok {
        let _ = writeln!(
            s,
            "result: OK ({} echoes verified, none lost, duplicated or corrupted)",
            fmt_int(verified)
        );
    } else {
        let _ = writeln!(s, "result: FAILED ({} error(s))", fmt_int(r.errors_total));
        for run in r.runs.iter().filter(|x| x.errors.total > 0) {
            let _ = write!(s, "  {}: ", run.name);
            let mut line = String::new();
            errors_line(&mut line, &run.errors);
            s.push_str(line.trim_start());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(fmt_int(0), "0");
        assert_eq!(fmt_int(1234567), "1,234,567");
        assert_eq!(fmt_int(100), "100");
        assert_eq!(fmt_us(17.94), "17.9 µs");
        assert_eq!(fmt_us(48960.0), "48.96 ms");
        assert_eq!(signed_us(-3.0), "-3.0 µs");
        assert_eq!(signed_pct(1.06), "+1.1%");
    }
}
