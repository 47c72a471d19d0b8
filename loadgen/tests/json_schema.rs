//! `--json` parses and carries every documented field: each mode's report is
//! checked against the field list below, and docs/benchmarks.md must
//! document every one of those fields (so the two cannot drift apart).

mod common;

use std::time::Duration;

use common::{at, run, Server};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(60);

/// Top-level fields (dotted paths).
const TOP: &[&str] = &[
    "schema",
    "loadgen_version",
    "command",
    "started_unix_ms",
    "host.cpus",
    "host.io_driver",
    "host.kernel",
    "ok",
    "errors_total",
    "runs",
    "compare",
];

/// Fields of every `runs[]` element.
const RUN: &[&str] = &[
    "name",
    "mode",
    "round",
    "route.kind",
    "route.target",
    "route.relay",
    "route.auth",
    "route.tls",
    "params.connections",
    "params.threads",
    "params.pin",
    "params.size",
    "params.fragment",
    "params.count",
    "params.warmup",
    "params.duration_s",
    "params.window",
    "params.rate",
    "params.max_in_flight",
    "params.timeout_ms",
    "messages.sent",
    "messages.received",
    "messages.verified",
    "errors.total",
    "errors.lost",
    "errors.duplicated",
    "errors.corrupted",
    "errors.unexpected",
    "errors.protocol",
    "errors.connect",
    "errors.timeouts",
    "errors.first",
    "latency_us",
    "raw_latency_us",
    "throughput",
    "rate",
    "connect",
    "hist_file",
];

/// Fields of a latency summary (`latency_us`, `raw_latency_us`, connect phases).
const SUMMARY: &[&str] = &[
    "count", "min", "mean", "stdev", "p50", "p90", "p99", "p999", "p9999", "max",
];

const THROUGHPUT: &[&str] = &[
    "throughput.duration_s",
    "throughput.messages",
    "throughput.bytes",
    "throughput.msg_per_s",
    "throughput.mb_per_s",
    "throughput.per_connection",
];
const PER_CONNECTION: &[&str] = &["conn", "messages", "msg_per_s", "mb_per_s"];
const RATE: &[&str] = &[
    "rate.target_per_s",
    "rate.achieved_per_s",
    "rate.scheduled",
    "rate.sent",
    "rate.late_sends",
    "rate.max_send_lag_us",
];
const CONNECT: &[&str] = &[
    "connect.tls",
    "connect.attempted",
    "connect.succeeded",
    "connect.failed",
    "connect.per_s",
    "connect.resumed",
    "connect.phases_us.tcp",
    "connect.phases_us.tls",
    "connect.phases_us.upgrade",
    "connect.phases_us.auth",
    "connect.phases_us.total",
];

/// `compare` fields (checked against real output in tests/compare.rs).
pub const COMPARE: &[&str] = &[
    "compare.rounds",
    "compare.target",
    "compare.relay",
    "compare.relay_bin",
    "compare.auth",
    "compare.forward",
    "compare.placement.client_cpu",
    "compare.placement.target_cpu",
    "compare.placement.relay_cpu",
    "compare.size",
    "compare.ping_count",
    "compare.throughput_duration_s",
    "compare.window",
    "compare.latency.direct",
    "compare.latency.relayed",
    "compare.latency.overhead_us",
    "compare.latency.overhead_pct",
    "compare.throughput.direct_msg_per_s",
    "compare.throughput.relayed_msg_per_s",
    "compare.throughput.ratio",
    "compare.throughput.direct_mb_per_s",
    "compare.throughput.relayed_mb_per_s",
];

fn get<'a>(v: &'a Value, dotted: &str) -> &'a Value {
    let path: Vec<&str> = dotted.split('.').collect();
    at(v, &path)
}

fn check_summary(v: &Value, what: &str) {
    assert!(v.is_object(), "{what} should be an object, is {v}");
    for f in SUMMARY {
        assert!(
            v.get(f).and_then(Value::as_f64).is_some(),
            "{what}.{f} missing or not a number"
        );
    }
}

fn report(args: &[&str]) -> Value {
    let f = run(args, LIMIT);
    assert_eq!(f.code, Some(0), "{args:?}\n{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    for p in TOP {
        get(&j, p);
    }
    assert_eq!(j["schema"], "loadgen.report.v1");
    assert_eq!(j["command"], args[0]);
    for r in j["runs"].as_array().expect("runs is an array") {
        for p in RUN {
            get(r, p);
        }
    }
    j
}

#[test]
fn every_mode_reports_every_documented_field() {
    let echo = Server::echo(&[]);
    let url = echo.addr.as_str();

    let j = report(&["ping", url, "-n", "50", "--json"]);
    let r = &j["runs"][0];
    assert_eq!(r["mode"], "ping");
    check_summary(&r["latency_us"], "latency_us");
    assert!(r["raw_latency_us"].is_null() && r["throughput"].is_null() && r["rate"].is_null());
    assert!(j["compare"].is_null());

    let j = report(&["throughput", url, "-d", "0.5", "-c", "2", "--json"]);
    let r = &j["runs"][0];
    for p in THROUGHPUT {
        get(r, p);
    }
    for c in r["throughput"]["per_connection"].as_array().unwrap() {
        for f in PER_CONNECTION {
            assert!(c.get(f).is_some(), "per_connection.{f} missing");
        }
    }

    let j = report(&["rate", url, "-r", "500", "-d", "0.5", "--json"]);
    let r = &j["runs"][0];
    for p in RATE {
        get(r, p);
    }
    check_summary(&r["raw_latency_us"], "raw_latency_us");

    let j = report(&["connect", url, "-n", "20", "--json"]);
    let r = &j["runs"][0];
    for p in CONNECT {
        get(r, p);
    }
    check_summary(
        &r["connect"]["phases_us"]["total"],
        "connect.phases_us.total",
    );
    assert!(
        r["connect"]["phases_us"]["tls"].is_null(),
        "no TLS on ws://"
    );
}

#[test]
fn docs_document_every_field() {
    let doc_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.md");
    let doc = std::fs::read_to_string(doc_path).expect("docs/benchmarks.md exists");
    let mut missing = Vec::new();
    for p in TOP {
        if !doc.contains(&format!("`{p}`")) {
            missing.push(p.to_string());
        }
    }
    for p in RUN.iter().chain(THROUGHPUT).chain(RATE).chain(CONNECT) {
        if !doc.contains(&format!("`runs[].{p}`")) {
            missing.push(format!("runs[].{p}"));
        }
    }
    for f in SUMMARY {
        if !doc.contains(&format!("`{f}`")) {
            missing.push(format!("summary {f}"));
        }
    }
    for f in PER_CONNECTION {
        if !doc.contains(&format!("`runs[].throughput.per_connection[].{f}`")) {
            missing.push(format!("per_connection {f}"));
        }
    }
    for p in COMPARE {
        if !doc.contains(&format!("`{p}`")) {
            missing.push(p.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/benchmarks.md does not document: {missing:?}"
    );
}
