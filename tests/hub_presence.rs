//! Presence and the per-user limit over the wire (docs/hub.md "Presence
//! and limits"): `GET {push_path}/presence?token=U` counts U's connections
//! here and, with a real `redis-server`, on every instance; the connection
//! past `max_connections_per_user` is upgraded and closed with 4029, an
//! identify into a full user is refused and changes nothing.

mod common;

use std::time::{Duration, Instant};

use common::hub::*;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn presence(port: u16, user: &str) -> (u16, Value) {
    let req = format!(
        "GET /api/push/presence?token={user} HTTP/1.1\r\nHost: x\r\nX-API-KEY: {API_KEY}\r\n\r\n"
    );
    let r = common::http::request(port, req.as_bytes()).await.unwrap().0;
    (r.status, r.json())
}

/// Polls presence until `user` has `n` connections (changes reach Redis
/// asynchronously), returns the answer.
async fn presence_becomes(port: u16, user: &str, n: u64) -> Value {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, v) = presence(port, user).await;
        assert_eq!(status, 200, "{v}");
        if v["connections"] == n || Instant::now() > until {
            assert_eq!(v["connections"], n, "{v}");
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_connection_past_the_limit_gets_4029_and_presence_counts() {
    let relay = Relay::start(hub_config(&["max_connections_per_user = 2"])).await;
    let a = hub_client(relay.port, Some("U")).await;
    let _b = hub_client(relay.port, Some("U")).await;
    let mut third = upgrade(relay.port, "/ws?token=U").await;
    let reason = expect_close(&mut third, 4029, STEP).await;
    assert_eq!(reason, "too many connections for this user");
    let v = presence_becomes(relay.port, "U", 2).await;
    assert_eq!(v["instances"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["instances"][0]["connections"], 2);
    assert_eq!(v["token"], "U");

    // An identify into the full user is refused; the client keeps its own.
    let mut other = hub_client(relay.port, Some("V")).await;
    send(
        &mut other,
        Message::text(json!({"event": "identify", "data": {"token": "U"}}).to_string()),
    )
    .await;
    let m = next_json(&mut other).await;
    assert_eq!(
        (m["event"].as_str(), m["data"]["msg"].as_str()),
        (Some("error"), Some("too many connections for this user"))
    );
    let r = push_once(
        relay.port,
        &json!({"event_name": "e", "subject": 1, "token": "V"}),
    )
    .await;
    assert_delivered(&r, 1);
    assert_eq!(next_json(&mut other).await["data"]["token"], "V");

    // A seat frees when a connection closes.
    close(a).await;
    presence_becomes(relay.port, "U", 1).await;
    let _c = hub_client(relay.port, Some("U")).await;
    presence_becomes(relay.port, "U", 2).await;
    assert_eq!(presence(relay.port, "nobody").await.1["connections"], 0);
}

#[tokio::test]
async fn presence_needs_the_key_a_token_and_get() {
    let relay = Relay::start(hub_config(&[])).await;
    let port = relay.port;
    let ask = |req: String| async move {
        common::http::request(port, req.as_bytes())
            .await
            .unwrap()
            .0
            .status
    };
    assert_eq!(
        ask("GET /api/push/presence?token=U HTTP/1.1\r\nHost: x\r\n\r\n".into()).await,
        401
    );
    assert_eq!(
        ask(format!(
            "GET /api/push/presence HTTP/1.1\r\nHost: x\r\nX-API-KEY: {API_KEY}\r\n\r\n"
        ))
        .await,
        400
    );
    assert_eq!(
        ask(format!("POST /api/push/presence?token=U HTTP/1.1\r\nHost: x\r\nX-API-KEY: {API_KEY}\r\nContent-Length: 0\r\n\r\n")).await,
        405
    );
}

#[tokio::test]
async fn presence_spans_instances_through_redis() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let start = || async {
        let r = Relay::start(hub_config(&[&format!("redis_url = {:?}", redis.url())])).await;
        r.wait_for_log("subscriber up", STEP, |l| l.contains("redis subscriber up"))
            .await;
        r
    };
    let (a, b) = (start().await, start().await);
    let _on_a = hub_client(a.port, Some("P")).await;
    let on_b1 = hub_client(b.port, Some("P")).await;
    let on_b2 = hub_client(b.port, Some("P")).await;
    for port in [a.port, b.port] {
        let v = presence_becomes(port, "P", 3).await;
        let mut per: Vec<u64> = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["connections"].as_u64().unwrap())
            .collect();
        per.sort();
        assert_eq!(per, [1, 2], "{v}");
    }
    close(on_b1).await;
    close(on_b2).await;
    let v = presence_becomes(a.port, "P", 1).await;
    assert_eq!(v["instances"].as_array().unwrap().len(), 1, "{v}");
}
