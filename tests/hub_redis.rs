//! Scale-out through a real `redis-server` (started here on a free port):
//! two instances share one channel, delayed pushes live in a sorted set and
//! survive restarts, each delivered exactly once; Redis going away gives 503
//! and the instances reconnect by themselves.
//!
//! Skips with a visible message when redis-server is absent (never under
//! CI=true).

mod common;

use std::time::Duration;

use common::hub::*;
use common::*;
use serde_json::json;

const ZSET: &str = "ws-relay-core:hub:delayed";
const CHANNEL: &str = "ws-relay-core:hub:push";

async fn instance(redis: &RedisServer) -> Relay {
    let relay = Relay::start(hub_config(&[&format!("redis_url = {:?}", redis.url())])).await;
    relay
        .wait_for_log("subscriber up", STEP, |l| l.contains("redis subscriber up"))
        .await;
    relay
}

async fn zcard(redis: &RedisServer) -> String {
    redis
        .command(&format!("ZCARD {ZSET}\r\n"))
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn a_push_to_either_instance_reaches_both_exactly_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let mut on_a = hub_client(a.port, Some("U")).await;
    let mut on_b = hub_client(b.port, Some("U")).await;
    let mut anon_b = hub_client(b.port, None).await;
    for (i, via) in [&a, &b, &a].into_iter().enumerate() {
        let r = push_once(
            via.port,
            &json!({"event_name": "x", "subject": i, "token": "U"}),
        )
        .await;
        // `delivered` counts this instance's connections only.
        assert_delivered(&r, 1);
        for ws in [&mut on_a, &mut on_b] {
            assert_push(&next_json(ws).await, "x", &json!(i), &json!("U"));
        }
    }
    let r = push_once(b.port, &json!({"event_name": "all", "subject": "b"})).await;
    assert_delivered(&r, 2);
    for ws in [&mut on_a, &mut on_b, &mut anon_b] {
        assert_push(&next_json(ws).await, "all", &json!("b"), &json!(null));
    }
    for ws in [&mut on_a, &mut on_b, &mut anon_b] {
        expect_silence(ws, Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn delayed_push_survives_a_restart_and_is_delivered_once() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut a = instance(&redis).await;
    let b = instance(&redis).await;
    let mut watcher = redis.watch(CHANNEL).await;
    let r = push_once(
        a.port,
        &json!({"event_name": "later", "subject": 1, "delay_seconds": 3, "token": "D"}),
    )
    .await;
    assert_eq!(r.json(), json!({"code": 0, "msg": "ok", "scheduled": true}));
    assert!(zcard(&redis).await.starts_with(":1"), "not stored in Redis");
    // The instance that accepted it crashes and comes back.
    a.kill_hard();
    let cfg = a.cfg.clone();
    drop(a);
    let a2 = Relay::start(cfg).await;
    a2.wait_for_log("subscriber up", STEP, |l| l.contains("redis subscriber up"))
        .await;
    let mut on_a = hub_client(a2.port, Some("D")).await;
    let mut on_b = hub_client(b.port, Some("D")).await;
    for ws in [&mut on_a, &mut on_b] {
        let m = next_json_within(ws, Duration::from_secs(6)).await;
        assert_push(&m, "later", &json!(1), &json!("D"));
    }
    for ws in [&mut on_a, &mut on_b] {
        expect_silence(ws, Duration::from_millis(700)).await;
    }
    assert!(
        zcard(&redis).await.starts_with(":0"),
        "claimed member left behind"
    );
    let n = watcher
        .count_after(Duration::from_millis(100), "\"event\":\"later\"")
        .await;
    assert_eq!(n, 1, "published more than once: {}", watcher.seen);
}

#[tokio::test]
async fn delayed_push_due_while_every_instance_is_down_is_delivered_on_return() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let mut a = instance(&redis).await;
    let r = push_once(
        a.port,
        &json!({"event_name": "missed", "subject": 1, "delay_seconds": 1}),
    )
    .await;
    assert_eq!(r.json()["scheduled"], true);
    let cfg = a.cfg.clone();
    a.signal(libc::SIGTERM);
    a.wait_exit(STEP).await.expect("exit");
    assert!(a.log().contains("stay in Redis"), "{}", a.log());
    drop(a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Due while nobody ran: the first instances back claim and publish
    // it, once (an independent subscriber counts the publishes).
    let mut watcher = redis.watch(CHANNEL).await;
    assert!(
        zcard(&redis).await.starts_with(":1"),
        "lost while every instance was down"
    );
    let _back = Relay::start(cfg.clone()).await;
    let _also = Relay::start(cfg).await;
    let n = watcher
        .count_after(Duration::from_secs(2), "\"event\":\"missed\"")
        .await;
    assert_eq!(n, 1, "{}", watcher.seen);
    assert!(
        zcard(&redis).await.starts_with(":0"),
        "the missed push was never claimed"
    );
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_test() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let mut on_b = hub_client(b.port, Some("R")).await;
    let body = json!({"event_name": "e", "subject": 1, "token": "R"});
    assert_delivered(&push_once(a.port, &body).await, 0);
    next_json(&mut on_b).await;
    redis.kill();
    // Immediate and delayed pushes both answer 503 while Redis is away.
    let r = push_once(a.port, &body).await;
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(r.json()["code"], -1);
    assert!(
        r.json()["msg"].as_str().unwrap().contains("redis"),
        "{}",
        r.body_str()
    );
    let r = push_once(
        a.port,
        &json!({"event_name": "e", "subject": 1, "delay_seconds": 5}),
    )
    .await;
    assert_eq!(r.status, 503);
    for relay in [&a, &b] {
        relay
            .wait_for_log("lost", STEP, |l| l.contains("redis subscriber lost"))
            .await;
    }
    redis.restart().await;
    for relay in [&a, &b] {
        relay
            .wait_for_log("resubscribed", STEP, |l| {
                l.matches("redis subscriber up").count() >= 2
            })
            .await;
    }
    // Back: the first request may still find the old connection broken.
    let mut ok = false;
    for _ in 0..20 {
        let r = push_once(
            a.port,
            &json!({"event_name": "back", "subject": 2, "token": "R"}),
        )
        .await;
        if r.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "pushes never recovered after Redis came back");
    let m = next_json(&mut on_b).await;
    assert_push(&m, "back", &json!(2), &json!("R"));
    expect_silence(&mut on_b, Duration::from_millis(300)).await;
    let log = a.log();
    assert!(
        log.contains("redis connection lost (publisher)")
            && log.contains("redis connection up (publisher)"),
        "{log}"
    );
    assert!(!log.contains(&redis.url()), "redis URL logged");
}
