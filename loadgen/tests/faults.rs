//! Injected faults are detected and reported, exactly: a target that flips
//! a bit, drops or duplicates every Nth message makes loadgen report that
//! many corrupted, lost or duplicated messages, say so in the table, and
//! exit with status 2. Nothing is silently counted as a good echo.

mod common;

use std::time::Duration;

use common::{at, run, u64_at, Server};

const LIMIT: Duration = Duration::from_secs(60);

fn errors(r: &serde_json::Value) -> (u64, u64, u64, u64) {
    (
        u64_at(r, &["errors", "corrupted"]),
        u64_at(r, &["errors", "lost"]),
        u64_at(r, &["errors", "duplicated"]),
        u64_at(r, &["errors", "total"]),
    )
}

#[test]
fn flipped_bits_are_reported_as_corruption() {
    let echo = Server::echo(&["--corrupt-every", "10"]);
    let f = run(
        &["ping", &echo.addr, "-n", "100", "--warmup", "0", "--json"],
        LIMIT,
    );
    assert_eq!(f.code, Some(2), "errors must fail the run:\n{}", f.stderr);
    let j = f.json();
    let r = &at(&j, &["runs"])[0];
    assert_eq!(errors(r), (10, 0, 0, 10));
    assert_eq!(u64_at(r, &["messages", "received"]), 100);
    assert_eq!(u64_at(r, &["messages", "verified"]), 90);
    assert_eq!(at(&j, &["ok"]), false);
    assert!(at(r, &["errors", "first"])
        .as_str()
        .unwrap()
        .contains("corrupted"));

    // The readable table says so too.
    let f = run(&["ping", &echo.addr, "-n", "50", "--warmup", "0"], LIMIT);
    assert_eq!(f.code, Some(2));
    assert!(f.stdout.contains("corrupted 5"), "{}", f.stdout);
    assert!(f.stdout.contains("FAILED"), "{}", f.stdout);
}

#[test]
fn corruption_anywhere_in_a_large_fragmented_payload_is_caught() {
    let echo = Server::echo(&["--corrupt-every", "3"]);
    let f = run(
        &[
            "ping",
            &echo.addr,
            "-n",
            "30",
            "--warmup",
            "0",
            "--size",
            "5000",
            "--fragment",
            "1000",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(2));
    let r = &at(&f.json(), &["runs"])[0].clone();
    assert_eq!(errors(r), (10, 0, 0, 10));
}

#[test]
fn dropped_messages_are_reported_lost_in_ping() {
    let echo = Server::echo(&["--drop-every", "10"]);
    let f = run(
        &[
            "ping",
            &echo.addr,
            "-n",
            "100",
            "--warmup",
            "0",
            "--timeout-ms",
            "100",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(2));
    let r = &at(&f.json(), &["runs"])[0].clone();
    // Messages 10, 20, ... 100: the last one is missing at the end of the run.
    assert_eq!(errors(r), (0, 10, 0, 10));
    assert_eq!(u64_at(r, &["messages", "verified"]), 90);
    assert_eq!(u64_at(r, &["errors", "timeouts"]), 10);
}

#[test]
fn dropped_messages_are_reported_lost_in_throughput() {
    let echo = Server::echo(&["--drop-every", "10"]);
    let f = run(
        &[
            "throughput",
            &echo.addr,
            "-d",
            "1",
            "--window",
            "64",
            "--timeout-ms",
            "300",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(2));
    let r = &at(&f.json(), &["runs"])[0].clone();
    let sent = u64_at(r, &["messages", "sent"]);
    assert!(sent > 100);
    assert_eq!(errors(r), (0, sent / 10, 0, sent / 10));
    assert_eq!(u64_at(r, &["messages", "verified"]), sent - sent / 10);
}

#[test]
fn duplicated_messages_are_reported() {
    let echo = Server::echo(&["--duplicate-every", "10"]);
    let f = run(
        &["ping", &echo.addr, "-n", "100", "--warmup", "0", "--json"],
        LIMIT,
    );
    assert_eq!(f.code, Some(2));
    let r = &at(&f.json(), &["runs"])[0].clone();
    assert_eq!(errors(r).2, 10, "{r}");
    assert_eq!(u64_at(r, &["messages", "verified"]), 100);
}
