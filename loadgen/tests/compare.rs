//! `compare` end to end with the real relay: with no arguments it starts
//! its own echo server and the ws-relay-core binary built next to loadgen
//! (`cargo build --release` builds both into target/release), and prints
//! the original README's table. Skipped, with a message, when that binary is absent
//! (`LOADGEN_RELAY_BIN=/path/to/ws-relay-core` points it elsewhere).

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::{at, f64_at, relay_bin, run, u64_at};

/// The two compares must not run at the same time: each one measures.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn skip(test: &str) -> bool {
    if relay_bin().is_none() {
        // Written to the stderr handle directly: the test harness captures
        // eprintln! of passing tests, and this skip must be visible.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no ws-relay-core next to {} (run `cargo build --release` first, \
             or set LOADGEN_RELAY_BIN)",
            common::bin().display()
        );
        return true;
    }
    false
}

#[test]
fn compare_with_no_arguments_prints_the_table() {
    if skip("compare_with_no_arguments_prints_the_table") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let f = run(&["compare"], Duration::from_secs(240));
    println!("{}", f.stdout);
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    for needle in [
        "direct",
        "via ws-relay",
        "overhead",
        "p50",
        "p99",
        "Throughput",
        "msg/s",
        "result: OK",
    ] {
        assert!(
            f.stdout.contains(needle),
            "missing {needle:?} in\n{}",
            f.stdout
        );
    }
}

#[test]
fn compare_json_svg_and_header_auth() {
    if skip("compare_json_svg_and_header_auth") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("loadgen-compare-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("compare.svg");
    let bin = relay_bin().unwrap();
    let f = run(
        &[
            "compare",
            "--relay-bin",
            bin.to_str().unwrap(),
            "--auth",
            "header",
            "--rounds",
            "2",
            "-n",
            "200",
            "-d",
            "0.5",
            "--svg",
            svg.to_str().unwrap(),
            "--json",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    assert_eq!(at(&j, &["compare", "rounds"]), 2);
    assert_eq!(at(&j, &["compare", "auth"]), "header");
    assert!(f64_at(&j, &["compare", "latency", "direct", "p50"]) > 0.0);
    assert!(f64_at(&j, &["compare", "latency", "relayed", "p99"]) > 0.0);
    let ratio = f64_at(&j, &["compare", "throughput", "ratio"]);
    assert!(ratio > 0.0 && ratio < 10.0, "ratio {ratio}");
    let runs = at(&j, &["runs"]).as_array().unwrap();
    assert_eq!(
        runs.len(),
        8,
        "2 rounds × (ping + throughput) × (direct + relayed)"
    );
    for r in runs {
        assert_eq!(u64_at(r, &["errors", "total"]), 0, "{r}");
    }
    // One curve per ping run.
    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let curves = doc
        .descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.starts_with("curve "))
        })
        .count();
    assert_eq!(curves, 4);
    let _ = std::fs::remove_dir_all(&dir);
}
