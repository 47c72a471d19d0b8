//! History and recovery on one instance (docs/hub.md "Recovery"), over the
//! wire: offsets and epochs on every message and push answer, a client that
//! drops and reconnects while pushes keep coming gets every message exactly
//! once and in order, and `recovered: false` when its epoch is unknown or
//! the history no longer reaches back. History in memory, 2 shards.

mod common;

use std::time::Duration;

use common::hub::*;
use common::*;
use serde_json::{json, Value};

fn history(size: usize) -> RelayConfig {
    hub_config(&[&format!("history_size = {size}")])
}

/// A client on `/ws` with `query`, not fenced (a recovery may speak first).
async fn client(port: u16, query: &str) -> Ws {
    upgrade(port, &format!("/ws?{query}")).await
}

/// The next message that is not a pong, as JSON.
async fn next(ws: &mut Ws) -> Value {
    next_json(ws).await
}

#[tokio::test]
async fn messages_and_answers_carry_stream_offset_and_epoch() {
    let relay = Relay::start(history(100)).await;
    let mut u = hub_client(relay.port, Some("U")).await;
    let mut anon = hub_client(relay.port, None).await;
    let mut p = Pusher::connect(relay.port).await;
    let mut epoch = String::new();
    for i in 1..=3u64 {
        let r = p
            .push(&json!({"event_name": "e", "subject": i, "token": "U"}))
            .await;
        let a = r.json();
        assert_eq!(
            (a["code"].clone(), a["delivered"].clone()),
            (json!(0), json!(1)),
            "{a}"
        );
        assert_eq!(a["stream"], "user:U");
        assert_eq!(a["offset"], i);
        let m = next(&mut u).await;
        assert_push(&m, "e", &json!(i), &json!("U"));
        assert_eq!(m["data"]["stream"], "user");
        let (off, e) = position(&m);
        assert_eq!((off, e.as_str()), (i, a["epoch"].as_str().unwrap()));
        if i > 1 {
            assert_eq!(e, epoch, "one epoch per stream");
        }
        epoch = e;
    }
    let r = p.push(&json!({"event_name": "all", "subject": 0})).await;
    let a = r.json();
    assert_eq!(
        (a["stream"].clone(), a["offset"].clone()),
        (json!("broadcast"), json!(1))
    );
    assert_eq!(a["delivered"], 2);
    for ws in [&mut u, &mut anon] {
        let m = next(ws).await;
        assert_eq!(m["data"]["stream"], "broadcast");
        assert_eq!(position(&m).0, 1, "the broadcast stream counts on its own");
        assert_ne!(position(&m).1, epoch);
    }
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_then_live() {
    let relay = Relay::start(history(100)).await;
    let mut p = Pusher::connect(relay.port).await;
    let mut ws = hub_client(relay.port, Some("R")).await;
    for i in 1..=3 {
        p.push(&json!({"event_name": "e", "subject": i, "token": "R"}))
            .await;
    }
    let mut last = (0, String::new());
    for _ in 1..=3 {
        last = position(&next(&mut ws).await);
    }
    close(ws).await;
    for i in 4..=8 {
        p.push(&json!({"event_name": "e", "subject": i, "token": "R"}))
            .await;
    }
    let q = format!("token=R&since={}&epoch={}", last.0, last.1);
    let mut ws = client(relay.port, &q).await;
    let rec = next(&mut ws).await;
    assert_eq!(rec["event"], "recovered", "{rec}");
    let d = &rec["data"];
    assert_eq!(
        (
            d["recovered"].clone(),
            d["replayed"].clone(),
            d["stream"].clone(),
            d["offset"].clone()
        ),
        (json!(true), json!(5), json!("user"), json!(8)),
        "{rec}"
    );
    for i in 4..=8 {
        let m = next(&mut ws).await;
        assert_eq!(m["data"]["subject"], i, "{m}");
        assert_eq!(position(&m).0, i);
    }
    p.push(&json!({"event_name": "e", "subject": 9, "token": "R"}))
        .await;
    assert_eq!(next(&mut ws).await["data"]["subject"], 9);
    expect_silence(&mut ws, Duration::from_millis(300)).await;

    // Up to date: recovered with nothing to replay.
    close(ws).await;
    let mut ws = client(relay.port, &format!("token=R&since=9&epoch={}", last.1)).await;
    let rec = next(&mut ws).await;
    assert_eq!(
        (
            rec["data"]["recovered"].clone(),
            rec["data"]["replayed"].clone()
        ),
        (json!(true), json!(0))
    );
    expect_silence(&mut ws, Duration::from_millis(300)).await;
}

/// Pushes `n` numbered messages to `token` on one keep-alive connection.
async fn push_numbered(port: u16, token: &'static str, n: u64) {
    let mut p = Pusher::connect(port).await;
    for i in 1..=n {
        let r = p
            .push(&json!({"event_name": "seq", "subject": i, "token": token}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
}

#[tokio::test]
async fn dropping_and_reconnecting_mid_stream_loses_and_doubles_nothing() {
    const N: u64 = 3000;
    let relay = Relay::start(history(N as usize)).await;
    let mut ws = hub_client(relay.port, Some("S")).await;
    let pushing = tokio::spawn(push_numbered(relay.port, "S", N));
    let mut seen: Vec<u64> = Vec::new();
    let mut reconnects = 0;
    while seen.last() != Some(&N) {
        let m = next_json_within(&mut ws, Duration::from_secs(10)).await;
        if m["event"] == "recovered" {
            assert_eq!(m["data"]["recovered"], true, "{m}");
            continue;
        }
        let i = m["data"]["subject"].as_u64().unwrap();
        let pos = position(&m);
        assert_eq!(pos.0, i, "offsets follow the pushes one by one");
        seen.push(i);
        // Drop every 400 messages, mid-stream, and come back at once.
        if seen.len() % 400 == 0 {
            drop(ws);
            reconnects += 1;
            ws = client(
                relay.port,
                &format!("token=S&since={}&epoch={}", pos.0, pos.1),
            )
            .await;
        }
    }
    pushing.await.unwrap();
    let expected: Vec<u64> = (1..=N).collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "gap or duplicate across {reconnects} reconnects"
    );
    assert_eq!(seen, expected);
    assert!(reconnects >= 5, "{reconnects} reconnects");
    expect_silence(&mut ws, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unknown_epoch_or_trimmed_history_says_not_recovered_then_goes_live() {
    let relay = Relay::start(history(5)).await;
    let mut p = Pusher::connect(relay.port).await;
    let mut ws = hub_client(relay.port, Some("T")).await;
    p.push(&json!({"event_name": "e", "subject": 1, "token": "T"}))
        .await;
    let (_, epoch) = position(&next(&mut ws).await);
    close(ws).await;
    for i in 2..=12 {
        p.push(&json!({"event_name": "e", "subject": i, "token": "T"}))
            .await;
    }
    for (top, q) in [
        (12, format!("token=T&since=1&epoch={epoch}")), // 2..=7 trimmed (5 kept)
        (13, "token=T&since=12&epoch=not-this-one".to_string()),
    ] {
        let mut ws = client(relay.port, &q).await;
        let rec = next(&mut ws).await;
        assert_eq!(rec["event"], "recovered");
        assert_eq!(rec["data"]["recovered"], false, "{q}: {rec}");
        assert_eq!(rec["data"]["replayed"], 0);
        assert_eq!(
            rec["data"]["offset"], top,
            "the current position, to start again from"
        );
        assert_eq!(rec["data"]["epoch"], epoch.as_str());
        p.push(&json!({"event_name": "e", "subject": "live", "token": "T"}))
            .await;
        let m = next(&mut ws).await;
        assert_eq!(m["data"]["subject"], "live");
        close(ws).await;
    }
    // Still within the 5 kept: recovered.
    let mut ws = client(relay.port, &format!("token=T&since=10&epoch={epoch}")).await;
    let rec = next(&mut ws).await;
    assert_eq!(
        (
            rec["data"]["recovered"].clone(),
            rec["data"]["replayed"].clone()
        ),
        (json!(true), json!(4))
    );
}

#[tokio::test]
async fn identify_and_broadcasts_recover_too() {
    let relay = Relay::start(history(50)).await;
    let mut p = Pusher::connect(relay.port).await;
    p.push(&json!({"event_name": "u", "subject": 1, "token": "I"}))
        .await;
    let ub = p
        .push(&json!({"event_name": "b", "subject": 1}))
        .await
        .json();
    let (uep, bep) = {
        let r = p
            .push(&json!({"event_name": "u", "subject": 2, "token": "I"}))
            .await
            .json();
        (
            r["epoch"].as_str().unwrap().to_string(),
            ub["epoch"].as_str().unwrap().to_string(),
        )
    };
    p.push(&json!({"event_name": "b", "subject": 2})).await;
    let mut ws = upgrade(relay.port, "/ws").await;
    let identify = json!({"event": "identify", "data": {
        "token": "I", "since": 1, "epoch": uep,
        "broadcast_since": "1", "broadcast_epoch": bep}});
    send(
        &mut ws,
        tokio_tungstenite::tungstenite::Message::text(identify.to_string()),
    )
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = next(&mut ws).await;
        got.push(match m["event"].as_str() {
            Some("recovered") => format!(
                "recovered:{}:{}",
                m["data"]["stream"].as_str().unwrap(),
                m["data"]["replayed"]
            ),
            _ => format!("{}:{}", m["event"].as_str().unwrap(), m["data"]["subject"]),
        });
    }
    assert_eq!(
        got,
        ["recovered:user:1", "u:2", "recovered:broadcast:1", "b:2"]
    );

    // A position without a token, or without its epoch, is refused with a
    // reason and the connection stays.
    let mut anon = client(relay.port, "since=3&epoch=x").await;
    let m = next(&mut anon).await;
    assert_eq!(m["event"], "error", "{m}");
    let mut half = client(relay.port, "token=I&since=3").await;
    assert_eq!(next(&mut half).await["event"], "error");
    p.push(&json!({"event_name": "b", "subject": 3})).await;
    assert_eq!(next(&mut anon).await["data"]["subject"], 3);

    let metrics = common::http::get(relay.port, "/metrics")
        .await
        .unwrap()
        .body_str();
    for line in [
        "ws_relay_hub_recoveries_total{result=\"recovered\"} 2",
        "ws_relay_hub_replayed_messages_total 2",
        "ws_relay_hub_streams 2",
    ] {
        assert!(metrics.contains(line), "{line} not in /metrics");
    }
}

#[tokio::test]
async fn with_history_off_messages_are_the_seeds_and_since_is_refused() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = client(relay.port, "token=O&since=1&epoch=e").await;
    let m = next(&mut ws).await;
    assert_eq!(m["event"], "error");
    assert!(
        m["data"]["msg"]
            .as_str()
            .unwrap()
            .contains("history is off"),
        "{m}"
    );
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "O"}),
    )
    .await;
    assert_delivered(&r, 1);
    let m = next(&mut ws).await;
    assert_eq!(
        m["data"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["subject", "token", "ts"],
        "no offset fields with history off: {m}"
    );
}
