//! History and recovery across instances through a real `redis-server`
//! (docs/hub.md "Recovery"): a client on A that drops mid-stream while
//! 10,000 numbered pushes go through B, and reconnects to B, gets every
//! message exactly once and in order; a Redis restart starts a new epoch
//! (`recovered: false`, then live with nothing lost); a trimmed history
//! says `recovered: false`; a delayed push gets its offset when it fires.
//!
//! Skips with a visible message when redis-server is absent (never under
//! CI=true).

mod common;

use std::time::Duration;

use common::hub::*;
use common::*;
use serde_json::{json, Value};

async fn instance(redis: &RedisServer, history: usize) -> Relay {
    let relay = Relay::start(hub_config(&[
        &format!("redis_url = {:?}", redis.url()),
        &format!("history_size = {history}"),
    ]))
    .await;
    relay
        .wait_for_log("subscriber up", STEP, |l| l.contains("redis subscriber up"))
        .await;
    relay
}

/// Pushes until the hub takes it (503 while Redis is away); the answer.
async fn push_retrying(port: u16, body: &Value) -> Value {
    for _ in 0..100 {
        let r = push_once(port, body).await;
        if r.status == 200 {
            return r.json();
        }
        assert_eq!(r.status, 503, "{}", r.body_str());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hub never took the push again");
}

#[tokio::test]
async fn a_client_dropped_on_a_recovers_ten_thousand_pushes_through_b_exactly_once() {
    const N: u64 = 10_000;
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (
        instance(&redis, N as usize).await,
        instance(&redis, N as usize).await,
    );
    let mut ws = hub_client(a.port, Some("X")).await;
    let b_port = b.port;
    let pushing = tokio::spawn(async move {
        let mut p = Pusher::connect(b.port).await;
        for i in 1..=N {
            let r = p
                .push(&json!({"event_name": "seq", "subject": i, "token": "X"}))
                .await;
            assert_eq!(r.status, 200, "{}", r.body_str());
            let a = r.json();
            assert_eq!(
                (a["stream"].clone(), a["offset"].clone()),
                (json!("user:X"), json!(i))
            );
        }
        b
    });
    let mut seen = Vec::with_capacity(N as usize);
    let mut moved = false;
    while seen.last() != Some(&N) {
        let m = next_json_within(&mut ws, Duration::from_secs(20)).await;
        if m["event"] == "recovered" {
            assert_eq!(m["data"]["recovered"], true, "{m}");
            eprintln!("recovered on B: replayed {}", m["data"]["replayed"]);
            continue;
        }
        let i = m["data"]["subject"].as_u64().unwrap();
        let pos = position(&m);
        assert_eq!(pos.0, i);
        seen.push(i);
        if !moved && i == 3_000 {
            // Drop mid-stream, wait while pushes go on, come back on B.
            drop(ws);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let q = format!("/ws?token=X&since={}&epoch={}", pos.0, pos.1);
            ws = upgrade(b_port, &q).await;
            moved = true;
        }
    }
    let b = pushing.await.unwrap();
    assert!(moved);
    assert_eq!(seen, (1..=N).collect::<Vec<_>>(), "gap or duplicate");
    expect_silence(&mut ws, Duration::from_millis(500)).await;
    drop(b);
}

#[tokio::test]
async fn a_redis_restart_starts_a_new_epoch_and_nothing_live_is_lost() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis, 1000).await, instance(&redis, 1000).await);
    let mut ws = hub_client(a.port, Some("Y")).await;
    for i in 1..=100 {
        push_retrying(
            b.port,
            &json!({"event_name": "e", "subject": i, "token": "Y"}),
        )
        .await;
    }
    let mut last = (0, String::new());
    for _ in 1..=100 {
        last = position(&next_json(&mut ws).await);
    }
    assert_eq!(last.0, 100);
    drop(ws);
    redis.restart().await;
    // Both instances find Redis again by themselves; history is gone.
    for inst in [&a, &b] {
        inst.wait_for_log("subscriber back", Duration::from_secs(10), |l| {
            l.matches("redis subscriber up").count() >= 2
        })
        .await;
    }
    let first = push_retrying(
        b.port,
        &json!({"event_name": "e", "subject": "new", "token": "Y"}),
    )
    .await;
    assert_eq!(first["offset"], 1, "{first}");
    assert_ne!(
        first["epoch"],
        last.1.as_str(),
        "a new epoch after the restart"
    );
    let q = format!("/ws?token=Y&since={}&epoch={}", last.0, last.1);
    let mut ws = upgrade(b.port, &q).await;
    let rec = next_json(&mut ws).await;
    assert_eq!(rec["event"], "recovered");
    assert_eq!(rec["data"]["recovered"], false, "{rec}");
    assert_eq!(
        (rec["data"]["offset"].clone(), rec["data"]["epoch"].clone()),
        (json!(1), first["epoch"].clone())
    );
    let mut p = Pusher::connect(a.port).await;
    for i in 0..50 {
        let r = p
            .push(&json!({"event_name": "e", "subject": i, "token": "Y"}))
            .await;
        assert_eq!(r.status, 200, "{}", r.body_str());
    }
    for i in 0..50u64 {
        let m = next_json(&mut ws).await;
        assert_eq!(m["data"]["subject"], i, "{m}");
        assert_eq!(position(&m).0, i + 2);
    }
    expect_silence(&mut ws, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn trimmed_history_in_redis_says_not_recovered() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis, 5).await, instance(&redis, 5).await);
    let mut p = Pusher::connect(a.port).await;
    let mut epoch = String::new();
    for i in 1..=12 {
        let r = p
            .push(&json!({"event_name": "e", "subject": i, "token": "T"}))
            .await;
        epoch = r.json()["epoch"].as_str().unwrap().to_string();
    }
    let mut ws = upgrade(b.port, &format!("/ws?token=T&since=2&epoch={epoch}")).await;
    let rec = next_json(&mut ws).await;
    assert_eq!(
        (
            rec["data"]["recovered"].clone(),
            rec["data"]["offset"].clone()
        ),
        (json!(false), json!(12)),
        "{rec}"
    );
    let mut ws = upgrade(b.port, &format!("/ws?token=T&since=8&epoch={epoch}")).await;
    let rec = next_json(&mut ws).await;
    assert_eq!(
        (
            rec["data"]["recovered"].clone(),
            rec["data"]["replayed"].clone()
        ),
        (json!(true), json!(4)),
        "{rec}"
    );
    for i in 9..=12 {
        let m = next_json(&mut ws).await;
        assert_eq!(
            (m["data"]["subject"].clone(), m["data"]["offset"].clone()),
            (json!(i), json!(i))
        );
        let ts = m["data"]["ts"].as_u64().unwrap();
        assert!(
            ts > 1_700_000_000_000,
            "replayed messages keep their push time"
        );
    }
}

#[tokio::test]
async fn a_delayed_push_gets_its_offset_when_it_fires() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis, 100).await, instance(&redis, 100).await);
    let mut ws = hub_client(b.port, Some("D")).await;
    let r = push_once(
        a.port,
        &json!({"event_name": "now", "subject": 1, "token": "D"}),
    )
    .await;
    assert_eq!(r.json()["offset"], 1);
    let r = push_once(
        a.port,
        &json!({"event_name": "later", "subject": {"ts": null}, "token": "D", "delay_seconds": 1}),
    )
    .await;
    assert_eq!(r.json(), json!({"code": 0, "msg": "ok", "scheduled": true}));
    assert_eq!(position(&next_json(&mut ws).await).0, 1);
    let m = next_json_within(&mut ws, Duration::from_secs(5)).await;
    assert_push(&m, "later", &json!({"ts": null}), &json!("D"));
    assert_eq!(position(&m).0, 2, "{m}");
}

#[tokio::test]
async fn a_subscriber_that_missed_publications_asks_its_clients_to_recover() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis, 100).await, instance(&redis, 100).await);
    let mut ws = hub_client(b.port, Some("G")).await;
    let mut p = Pusher::connect(a.port).await;
    p.push(&json!({"event_name": "e", "subject": 1, "token": "G"}))
        .await;
    let (_, epoch) = position(&next_json(&mut ws).await);
    // Cut every subscriber's connection: both instances reconnect within
    // 200 ms, and what A publishes meanwhile never reaches B's subscriber.
    let killed = redis.command("CLIENT KILL TYPE pubsub\r\n").await.unwrap();
    assert!(killed.starts_with(':'), "{killed}");
    for i in 2..=3 {
        let r = p
            .push(&json!({"event_name": "e", "subject": i, "token": "G"}))
            .await;
        assert_eq!(r.status, 200);
    }
    b.wait_for_log("subscriber back", Duration::from_secs(5), |l| {
        l.matches("redis subscriber up").count() >= 2
    })
    .await;
    p.push(&json!({"event_name": "e", "subject": 4, "token": "G"}))
        .await;
    // 2 and 3 were missed: B cannot fill the hole, so it says so.
    let reason = expect_close(&mut ws, 4010, Duration::from_secs(5)).await;
    assert!(reason.contains("reconnect"), "{reason}");
    let mut ws = upgrade(b.port, &format!("/ws?token=G&since=1&epoch={epoch}")).await;
    let rec = next_json(&mut ws).await;
    assert_eq!(
        (
            rec["data"]["recovered"].clone(),
            rec["data"]["replayed"].clone()
        ),
        (json!(true), json!(3)),
        "{rec}"
    );
    for i in 2..=4 {
        assert_eq!(next_json(&mut ws).await["data"]["subject"], i);
    }
}
