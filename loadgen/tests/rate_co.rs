//! Coordinated omission: at a rate the target cannot sustain (an echo
//! server answering after 20 ms, one message in flight per connection, so
//! at most 50 msg/s), the corrected latency (from the intended send time)
//! grows with the backlog while the raw latency (from the actual send)
//! stays near 20 ms. At a sustainable rate the two agree.

mod common;

use std::time::Duration;

use common::{at, f64_at, run, u64_at, Server};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn corrected_latency_grows_while_raw_does_not() {
    let echo = Server::echo(&["--delay-ms", "20"]);
    let f = run(
        &[
            "rate",
            &echo.addr,
            "--rate",
            "200",
            "--duration",
            "2",
            "--max-in-flight",
            "1",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    let r = &at(&j, &["runs"])[0];
    let corrected_p50 = f64_at(r, &["latency_us", "p50"]);
    let corrected_max = f64_at(r, &["latency_us", "max"]);
    let raw_p50 = f64_at(r, &["raw_latency_us", "p50"]);
    let raw_p99 = f64_at(r, &["raw_latency_us", "p99"]);
    eprintln!("corrected p50 {corrected_p50} µs, max {corrected_max} µs; raw p50 {raw_p50} µs, p99 {raw_p99} µs");
    assert!(
        raw_p50 >= 19_000.0,
        "raw p50 {raw_p50} µs below the 20 ms delay"
    );
    assert!(
        raw_p99 < 120_000.0,
        "raw latency should stay near 20 ms, p99 {raw_p99} µs"
    );
    assert!(
        corrected_p50 > 5.0 * raw_p50,
        "corrected p50 {corrected_p50} µs did not grow"
    );
    assert!(
        corrected_max > 800_000.0,
        "backlog of ~1.5 s expected, max {corrected_max} µs"
    );
    // The schedule could not be kept: far fewer sent than scheduled.
    let scheduled = u64_at(r, &["rate", "scheduled"]);
    let sent = u64_at(r, &["rate", "sent"]);
    assert_eq!(scheduled, 400);
    assert!(sent < scheduled / 2, "sent {sent} of {scheduled}");
    assert!(u64_at(r, &["rate", "late_sends"]) > 0);
    assert_eq!(u64_at(r, &["errors", "total"]), 0);
}

#[test]
fn at_a_sustainable_rate_corrected_matches_raw() {
    let echo = Server::echo(&["--delay-ms", "20"]);
    let f = run(
        &[
            "rate",
            &echo.addr,
            "--rate",
            "20",
            "--duration",
            "1",
            "--max-in-flight",
            "1",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let r = &at(&f.json(), &["runs"])[0].clone();
    let corrected = f64_at(r, &["latency_us", "p50"]);
    let raw = f64_at(r, &["raw_latency_us", "p50"]);
    assert!(corrected >= raw - 1.0);
    assert!(
        corrected < raw + 10_000.0,
        "corrected {corrected} µs vs raw {raw} µs"
    );
    assert_eq!(u64_at(r, &["rate", "sent"]), 20);
}
