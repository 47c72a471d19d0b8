//! `GET /metrics` over the wire, parsed by Python's `prometheus_client`
//! (a real Prometheus text parser): every family has HELP and the right
//! TYPE; session counters move as relay sessions open and close (on 2
//! shards); bytes, target-setup histogram, refusals by code, reloads ok and
//! failed, build info; and access: loopback, or the Bearer token, else 403.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, request};
use common::prom::{python_or_skip, scrape, Scrape};
use common::*;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "metrics-token-0123456789";

/// Scrapes until `pred` holds (counters of closing sessions settle once the
/// relay has seen both ends); panics with the last text after 5 s.
async fn scrape_until(
    py: &std::path::PathBuf,
    port: u16,
    what: &str,
    pred: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(py, port).await;
        if pred(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("{what} never held; last scrape:\n{}", s.text);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn relay_open(s: &Scrape) -> f64 {
    s.sum("ws_relay_sessions_open", &[("kind", "relay")])
}

fn relay_total(s: &Scrape) -> f64 {
    s.sum("ws_relay_sessions_total", &[("kind", "relay")])
}

#[tokio::test]
async fn families_parse_with_help_and_types() {
    let Some(py) = python_or_skip("families_parse_with_help_and_types") else {
        return;
    };
    let relay = Relay::start(RelayConfig::default()).await;
    let s = scrape(&py, relay.port).await;
    for (name, typ) in [
        ("ws_relay_sessions_open", "gauge"),
        ("ws_relay_sessions", "counter"),
        ("ws_relay_connections_open", "gauge"),
        ("ws_relay_slow_consumers", "counter"),
        ("ws_relay_auth_failures", "counter"),
        ("ws_relay_bytes_relayed", "counter"),
        ("ws_relay_tls_handshakes", "counter"),
        ("ws_relay_target_setup_seconds", "histogram"),
        ("ws_relay_reloads", "counter"),
        ("ws_relay_shards", "gauge"),
        ("ws_relay_build_info", "gauge"),
    ] {
        let f = s.family(name);
        assert_eq!(f.typ, typ, "{name}");
        assert!(!f.help.is_empty(), "{name} has no HELP");
    }
    for f in &s.families {
        assert!(f.name.starts_with("ws_relay_"), "{}", f.name);
    }
    // Both shards answer, each with its own series.
    assert_eq!(s.sum("ws_relay_shards", &[("state", "running")]), 2.0);
    assert_eq!(s.sum("ws_relay_shards", &[("state", "missing")]), 0.0);
    for shard in ["0", "1"] {
        s.sum(
            "ws_relay_sessions_open",
            &[("kind", "relay"), ("shard", shard)],
        );
        s.sum(
            "ws_relay_sessions_open",
            &[("kind", "demo"), ("shard", shard)],
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(s.sum("ws_relay_build_info", &[("version", version)]), 1.0);
    assert_eq!(relay_open(&s), 0.0);
    assert_eq!(relay_total(&s), 0.0);
    assert_eq!(s.sum("ws_relay_target_setup_seconds_count", &[]), 0.0);
    // Every documented error code exists from the start.
    for code in [
        "bad_request",
        "auth_failed",
        "auth_timeout",
        "over_capacity",
    ] {
        assert_eq!(
            s.sum("ws_relay_auth_failures_total", &[("code", code)]),
            0.0
        );
    }
    // The scrape's own connection is open while it is served.
    assert!(s.sum("ws_relay_connections_open", &[]) >= 1.0);
}

#[tokio::test]
async fn counters_move_as_sessions_open_and_close() {
    let Some(py) = python_or_skip("counters_move_as_sessions_open_and_close") else {
        return;
    };
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    let url = target.url("/");
    let mut sessions = Vec::new();
    for i in 0..4 {
        let mode = if i % 2 == 0 {
            AuthMode::FirstMessage
        } else {
            AuthMode::Header
        };
        let mut ws = connect(mode, relay.port, ALICE_TOKEN, &url).await;
        let msg = "x".repeat(1000);
        send(&mut ws, Message::text(msg.clone())).await;
        expect_text(&mut ws, &msg).await;
        sessions.push(ws);
    }
    let s = scrape_until(&py, relay.port, "4 relay sessions open", |s| {
        relay_open(s) == 4.0
    })
    .await;
    assert_eq!(relay_total(&s), 4.0);
    assert_eq!(s.sum("ws_relay_target_setup_seconds_count", &[]), 4.0);
    let inf = s.sum("ws_relay_target_setup_seconds_bucket", &[("le", "+Inf")]);
    assert_eq!(inf, 4.0);
    assert!(s.sum("ws_relay_target_setup_seconds_sum", &[]) > 0.0);
    // 1000 payload bytes + a masked 8-byte header each way, per session
    // (the first-message sessions' auth message went to the relay, not on).
    let up = s.sum(
        "ws_relay_bytes_relayed_total",
        &[("direction", "client_to_target")],
    );
    let down = s.sum(
        "ws_relay_bytes_relayed_total",
        &[("direction", "target_to_client")],
    );
    assert!(up >= 4.0 * 1008.0, "client_to_target {up}");
    assert!(down >= 4.0 * 1004.0, "target_to_client {down}");

    for mut ws in sessions.drain(..2) {
        close_and_expect_echo(&mut ws, 1000, "").await;
    }
    let s = scrape_until(&py, relay.port, "2 relay sessions open", |s| {
        relay_open(s) == 2.0
    })
    .await;
    assert_eq!(relay_total(&s), 4.0, "totals never go down");
    for mut ws in sessions.drain(..) {
        close_and_expect_echo(&mut ws, 1000, "").await;
    }
    let s = scrape_until(&py, relay.port, "no relay session open", |s| {
        relay_open(s) == 0.0
    })
    .await;
    assert_eq!(relay_total(&s), 4.0);
}

#[tokio::test]
async fn refusals_are_counted_by_code() {
    let Some(py) = python_or_skip("refusals_are_counted_by_code") else {
        return;
    };
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig::default()).await;
    for _ in 0..2 {
        let auth = HeaderAuth::new("wrong-token", &target.url("/"));
        let r = try_connect_header(relay.port, &auth).await.unwrap_err();
        assert_eq!(r.status, 401);
    }
    let auth = HeaderAuth::new(ALICE_TOKEN, "http://not-ws/");
    let r = try_connect_header(relay.port, &auth).await.unwrap_err();
    assert_eq!(r.status, 400);
    let s = scrape(&py, relay.port).await;
    let n = |code| s.sum("ws_relay_auth_failures_total", &[("code", code)]);
    assert_eq!(n("auth_failed"), 2.0);
    assert_eq!(n("bad_request"), 1.0);
    assert_eq!(n("target_forbidden"), 0.0);
    assert_eq!(relay_total(&s), 0.0, "refused sessions never opened");
}

#[tokio::test]
async fn reloads_ok_and_failed() {
    let Some(py) = python_or_skip("reloads_ok_and_failed") else {
        return;
    };
    let relay = Relay::start(RelayConfig::default()).await;
    assert_eq!(relay.reload_cli().await.code, Some(0));
    let good = std::fs::read_to_string(&relay.config_path).unwrap();
    // The CLI refuses a broken file itself, so the failed reload comes by
    // SIGHUP, which reaches the running instance.
    relay.write_config_text(&format!("{good}\n[server]\nport = 1\n"));
    relay.signal(libc::SIGHUP);
    relay
        .wait_for_log("the rejected reload", STEP, |l| {
            l.contains("reload rejected")
        })
        .await;
    relay.write_config_text(&good);
    assert_eq!(relay.reload_cli().await.code, Some(0));
    let s = scrape(&py, relay.port).await;
    assert_eq!(s.sum("ws_relay_reloads_total", &[("result", "ok")]), 2.0);
    assert_eq!(
        s.sum("ws_relay_reloads_total", &[("result", "failed")]),
        1.0
    );
}

/// With `metrics_allow_loopback = false` the test's loopback client stands in
/// for a remote one: no token or a wrong one is 403, the right one is 200.
#[tokio::test]
async fn token_required_when_loopback_is_not_trusted() {
    let relay = Relay::start(RelayConfig {
        extra_server: vec![
            "metrics_allow_loopback = false".into(),
            format!("metrics_token = \"{TOKEN}\""),
        ],
        ..RelayConfig::default()
    })
    .await;
    let resp = get(relay.port, "/metrics").await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.head);
    assert_eq!(resp.json()["code"], "forbidden");
    assert!(!resp.body_str().contains(TOKEN));
    for (auth, want) in [
        (format!("Bearer {TOKEN}x"), 403),
        (format!("Basic {TOKEN}"), 403),
        (format!("Bearer {TOKEN}"), 200),
        (format!("bearer {TOKEN}"), 200),
    ] {
        let raw = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        let (resp, _) = request(relay.port, raw.as_bytes()).await.unwrap();
        assert_eq!(resp.status, want, "{auth:?}: {}", resp.head);
        if want == 200 {
            assert!(resp
                .body_str()
                .contains("# TYPE ws_relay_sessions_open gauge"));
        }
    }
    assert!(!relay.log().contains(TOKEN), "token leaked into the log");
    // POST is not a scrape.
    let raw = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let (resp, _) = request(relay.port, raw.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 405);
}

/// No token configured and loopback not trusted: nobody gets in.
#[tokio::test]
async fn no_token_and_no_loopback_is_403() {
    let relay = Relay::start(RelayConfig {
        extra_server: vec!["metrics_allow_loopback = false".into()],
        ..RelayConfig::default()
    })
    .await;
    let raw =
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer anything-at-all-here\r\n\r\n";
    let (resp, _) = request(relay.port, raw.as_bytes()).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.head);
}
