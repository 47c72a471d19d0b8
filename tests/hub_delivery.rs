//! Delivery guarantees over the wire: delayed pushes (never early, at most
//! a little late, dropped count logged at shutdown) and a slow consumer
//! closed with 1013 while a fast one gets every message.

mod common;

use std::time::{Duration, Instant};

use common::hub::*;
use common::*;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn delayed_pushes_are_never_early_and_barely_late() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = hub_client(relay.port, Some("d")).await;
    let mut pusher = Pusher::connect(relay.port).await;
    let t0 = Instant::now();
    let r = pusher
        .push(&json!({"event_name": "late", "subject": 2, "delay_seconds": 2, "token": "d"}))
        .await;
    assert_eq!(r.json(), json!({"code": 0, "msg": "ok", "scheduled": true}));
    let r = pusher
        .push(&json!({"event_name": "soon", "subject": 1, "delay_seconds": 1, "token": "d"}))
        .await;
    assert_eq!(r.json(), json!({"code": 0, "msg": "ok", "scheduled": true}));
    let t1 = Instant::now();
    let first = next_json(&mut ws).await;
    let at1 = t1.elapsed();
    let second = next_json(&mut ws).await;
    let at2 = t0.elapsed();
    assert_eq!(
        (first["event"].as_str(), second["event"].as_str()),
        (Some("soon"), Some("late"))
    );
    eprintln!(
        "delayed push lateness: {:?} and {:?}",
        at1.saturating_sub(Duration::from_secs(1)),
        at2.saturating_sub(Duration::from_secs(2))
    );
    assert!(
        at1 >= Duration::from_secs(1),
        "1 s push arrived early: {at1:?}"
    );
    assert!(
        at2 >= Duration::from_secs(2),
        "2 s push arrived early: {at2:?}"
    );
    // 100 ms on an idle host; this host is shared, so allow some noise.
    assert!(
        at1 < Duration::from_millis(1250),
        "1 s push too late: {at1:?}"
    );
    assert!(
        at2 < Duration::from_millis(2250),
        "2 s push too late: {at2:?}"
    );
    assert_push(&first, "soon", &json!(1), &json!("d"));
}

#[tokio::test]
async fn shutdown_logs_dropped_delayed_pushes() {
    let mut relay = Relay::start(hub_config(&[])).await;
    for _ in 0..3 {
        let r = push_once(
            relay.port,
            &json!({"event_name": "e", "subject": 1, "delay_seconds": 60}),
        )
        .await;
        assert_eq!(r.json()["scheduled"], true);
    }
    relay.signal(libc::SIGTERM);
    relay
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("relay exits");
    let log = relay.log();
    assert!(
        log.contains("delayed pushes dropped") && log.contains("dropped=3"),
        "{log}"
    );
}

#[tokio::test]
async fn slow_consumer_is_closed_with_1013_fast_one_gets_everything() {
    let relay = Relay::start(hub_config(&["max_queue_messages = 4"])).await;
    let mut slow = hub_client(relay.port, Some("s")).await;
    let mut fast = hub_client(relay.port, Some("s")).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(Ok(m)) = fast.next().await {
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                let i = v["data"]["subject"]["i"].as_u64().unwrap();
                if i == u64::MAX >> 12 {
                    break;
                }
                got.push(i);
            }
        }
        got
    });
    let mut pusher = Pusher::connect(relay.port).await;
    let pad = "p".repeat(30_000);
    let mut sent = 0u64;
    let mut overflowed_at = None;
    for i in 0..5000u64 {
        let r = pusher
            .push(&json!({"event_name": "e", "subject": {"i": i, "pad": pad}, "token": "s"}))
            .await;
        sent += 1;
        let n = r.json()["delivered"].as_u64().unwrap();
        if n == 1 {
            overflowed_at = Some(i);
            break;
        }
        assert_eq!(n, 2);
    }
    let at = overflowed_at.expect("the slow client never overflowed");
    eprintln!("slow client overflowed after {at} pushes of 30 KB");
    // Now the slow client reads: some messages, then Close 1013.
    let reason = loop {
        match try_next(&mut slow, Duration::from_secs(10)).await {
            Next::Msg(Message::Text(_)) => continue,
            Next::Msg(Message::Close(_)) => break raw_close(&slow),
            other => panic!("slow client: expected messages then Close, got {other:?}"),
        }
    };
    assert_eq!(reason.code, Some(1013), "{reason:?}");
    // The fast one got every push, in order.
    let r = pusher
        .push(&json!({"event_name": "e", "subject": {"i": u64::MAX >> 12}, "token": "s"}))
        .await;
    assert_delivered(&r, 1);
    let got = within(STEP * 3, "fast reader", reader).await.unwrap();
    assert_eq!(got, (0..sent).collect::<Vec<_>>());
    let log = relay
        .wait_for_log("slow close", STEP, |l| l.contains("too slow"))
        .await;
    assert!(log.contains("slow_closed_total=1"), "{log}");
}
