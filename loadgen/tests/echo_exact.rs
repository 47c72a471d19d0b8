//! loadgen against its own echo server over real loopback sockets: message
//! counts and sequence checks come out exact in every mode and transport
//! (plain, fragmented, server pings, wss://, through the delay proxy).

mod common;

use std::time::Duration;

use common::{at, f64_at, run, u64_at, Server};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn ping_counts_are_exact() {
    let echo = Server::echo(&[]);
    let f = run(
        &[
            "ping", &echo.addr, "-n", "300", "--warmup", "20", "-c", "2", "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    let run0 = &at(&j, &["runs"])[0];
    assert_eq!(u64_at(run0, &["messages", "sent"]), 640);
    assert_eq!(u64_at(run0, &["messages", "received"]), 640);
    assert_eq!(u64_at(run0, &["messages", "verified"]), 640);
    assert_eq!(u64_at(run0, &["errors", "total"]), 0);
    assert_eq!(
        u64_at(run0, &["latency_us", "count"]),
        600,
        "warmup is not recorded"
    );
    assert!(f64_at(run0, &["latency_us", "p50"]) > 0.0);
    assert_eq!(at(&j, &["ok"]), true);
}

#[test]
fn throughput_counts_are_exact() {
    let echo = Server::echo(&[]);
    let f = run(
        &[
            "throughput",
            &echo.addr,
            "-d",
            "1",
            "-c",
            "3",
            "--window",
            "256",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    let r = &at(&j, &["runs"])[0];
    let sent = u64_at(r, &["messages", "sent"]);
    assert!(sent > 1000, "only {sent} messages in a second");
    assert_eq!(u64_at(r, &["messages", "received"]), sent);
    assert_eq!(u64_at(r, &["messages", "verified"]), sent);
    assert_eq!(u64_at(r, &["errors", "total"]), 0);
    let per = at(r, &["throughput", "per_connection"]).as_array().unwrap();
    assert_eq!(per.len(), 3);
    let in_window: u64 = per.iter().map(|c| c["messages"].as_u64().unwrap()).sum();
    assert_eq!(in_window, u64_at(r, &["throughput", "messages"]));
    assert!(in_window <= sent);
}

#[test]
fn fragmented_messages_and_server_pings_verify() {
    let echo = Server::echo(&["--ping-every", "5"]);
    let f = run(
        &[
            "ping",
            &echo.addr,
            "-n",
            "200",
            "--warmup",
            "0",
            "--size",
            "100",
            "--fragment",
            "7",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let r = &at(&f.json(), &["runs"])[0].clone();
    assert_eq!(u64_at(r, &["messages", "verified"]), 200);
    assert_eq!(u64_at(r, &["params", "fragment"]), 7);
    assert_eq!(u64_at(r, &["errors", "total"]), 0);
}

#[test]
fn wss_with_insecure_and_without_trust() {
    let echo = Server::echo(&["--tls"]);
    assert!(echo.addr.starts_with("wss://"));
    let f = run(
        &["ping", &echo.addr, "-n", "100", "--insecure", "--json"],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let r = &at(&f.json(), &["runs"])[0].clone();
    assert_eq!(u64_at(r, &["messages", "verified"]), 200);
    assert_eq!(at(r, &["route", "tls"]), true);
    let f = run(&["ping", &echo.addr, "-n", "1"], LIMIT);
    assert_eq!(f.code, Some(1));
    assert!(f.stderr.contains("--insecure"), "{}", f.stderr);
}

#[test]
fn delay_proxy_adds_its_delay_each_way() {
    let echo = Server::echo(&[]);
    let proxy = Server::delay_proxy(&echo.host_port(), "5");
    let url = format!("ws://{}/", proxy.addr);
    let f = run(
        &["ping", &url, "-n", "20", "--warmup", "2", "--json"],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let r = &at(&f.json(), &["runs"])[0].clone();
    let p50 = f64_at(r, &["latency_us", "p50"]);
    assert!(p50 >= 10_000.0, "p50 {p50} µs is below 2 × 5 ms");
    assert!(p50 < 60_000.0, "p50 {p50} µs is far above 2 × 5 ms");
    assert_eq!(u64_at(r, &["messages", "verified"]), 22);
}

#[test]
fn connect_opens_and_verifies_every_connection() {
    let echo = Server::echo(&[]);
    let f = run(
        &[
            "connect",
            &echo.addr,
            "-n",
            "150",
            "--concurrency",
            "4",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let r = &at(&f.json(), &["runs"])[0].clone();
    assert_eq!(u64_at(r, &["connect", "succeeded"]), 150);
    assert_eq!(u64_at(r, &["connect", "failed"]), 0);
    assert_eq!(u64_at(r, &["messages", "verified"]), 150);
    assert_eq!(at(r, &["connect", "tls"]), "none");
    assert!(f64_at(r, &["connect", "per_s"]) > 0.0);
}

#[test]
fn connect_over_tls_measures_full_and_resumed() {
    let echo = Server::echo(&["--tls"]);
    let f = run(
        &[
            "connect",
            &echo.addr,
            "-n",
            "40",
            "--concurrency",
            "1",
            "--insecure",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.code, Some(0), "{}\n{}", f.stdout, f.stderr);
    let j = f.json();
    let runs = at(&j, &["runs"]).as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(at(&runs[0], &["connect", "tls"]), "full");
    assert_eq!(u64_at(&runs[0], &["connect", "resumed"]), 0);
    assert_eq!(at(&runs[1], &["connect", "tls"]), "resumed");
    // One at a time, each resumption leaves fresh tickets for the next.
    assert_eq!(u64_at(&runs[1], &["connect", "resumed"]), 40);
    assert!(at(&runs[1], &["connect", "phases_us", "tls"]).is_object());
}
