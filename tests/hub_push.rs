//! The push API over the wire: every token rule, each key place (right and
//! wrong), each bad body, keep-alive, the relay's 408/431 limits, the
//! seed's curl examples unchanged, and start-up refusals.

mod common;

use std::time::Duration;

use common::hub::*;
use common::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn every_token_rule() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut u123 = hub_client(relay.port, Some("123")).await;
    let mut u7 = hub_client(relay.port, Some("u7")).await;
    let mut anon = hub_client(relay.port, None).await;
    let mut pusher = Pusher::connect(relay.port).await;
    // (token as sent, who gets it)
    let cases: Vec<(Option<Value>, &str)> = vec![
        (Some(json!(123)), "123"),
        (Some(json!("123")), "123"),
        (Some(json!({"id": 123})), "123"),
        (Some(json!({"user_id": "u7"})), "u7"),
        (Some(json!({"id": "u7", "user_id": "123"})), "u7"),
        (Some(json!(null)), "all"),
        (None, "all"),
        (Some(json!(true)), "all"),
        (Some(json!([123])), "all"),
        (Some(json!({"name": "u7"})), "all"),
    ];
    for (i, (token, who)) in cases.into_iter().enumerate() {
        let mut body = json!({"event_name": "t", "subject": i});
        if let Some(t) = &token {
            body["token"] = t.clone();
        }
        let r = pusher.push(&body).await;
        let sent_token = token.clone().unwrap_or(Value::Null);
        let expect = |ws_name: &str| who == "all" || who == ws_name;
        let n = [("123", true), ("u7", true), ("anon", false)]
            .iter()
            .filter(|(name, grouped)| {
                if who == "all" {
                    true
                } else {
                    *grouped && expect(name)
                }
            })
            .count();
        assert_delivered(&r, n as u64);
        for (name, ws) in [("123", &mut u123), ("u7", &mut u7), ("anon", &mut anon)] {
            if who == "all" || who == name {
                let m = next_json(ws).await;
                assert_push(&m, "t", &json!(i), &sent_token);
            }
        }
    }
    for ws in [&mut u123, &mut u7, &mut anon] {
        expect_silence(ws, Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn key_in_each_place_and_each_wrong_key() {
    let relay = Relay::start(hub_config(&[])).await;
    let body = json!({"event_name": "e", "subject": 1}).to_string();
    let p = relay.port;
    let ok_places = [
        push_request(p, "/api/push", &[("X-API-KEY", API_KEY)], &body),
        push_request(p, "/api/push", &[("API-KEY", API_KEY)], &body),
        push_request(p, &format!("/api/push?api_key={API_KEY}"), &[], &body),
        push_request(p, "/api/push", &[("x-api-key", API_KEY)], &body),
    ];
    for req in &ok_places {
        let (r, _) = http::request(p, req).await.unwrap();
        assert_delivered(&r, 0);
    }
    let wrong = "test-api-key-0123456788";
    let bad_places = [
        push_request(p, "/api/push", &[], &body),
        push_request(p, "/api/push", &[("X-API-KEY", wrong)], &body),
        push_request(p, "/api/push", &[("API-KEY", wrong)], &body),
        push_request(p, &format!("/api/push?api_key={wrong}"), &[], &body),
        push_request(p, "/api/push", &[("X-API-KEY", "")], &body),
        push_request(p, "/api/push", &[("X-API-KEY", &API_KEY[..10])], &body),
        push_request(
            p,
            "/api/push",
            &[("Authorization", &format!("Bearer {API_KEY}"))],
            &body,
        ),
    ];
    for req in &bad_places {
        let (r, _) = http::request(p, req).await.unwrap();
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(req));
        assert_eq!(r.json(), json!({"code": -1, "msg": "invalid api key"}));
    }
    let log = relay.log();
    assert!(
        !log.contains(API_KEY) && !log.contains(wrong),
        "a key reached the log:\n{log}"
    );
}

#[tokio::test]
async fn each_bad_body_gets_400_with_a_reason() {
    let relay = Relay::start(hub_config(&["max_push_body_bytes = 1024"])).await;
    let mut pusher = Pusher::connect(relay.port).await;
    let bodies = [
        ("{not json", "invalid JSON"),
        ("", "invalid JSON"),
        ("[1,2]", "must be a JSON object"),
        (r#"{"subject":1}"#, "event_name"),
        (r#"{"event_name":"","subject":1}"#, "event_name"),
        (r#"{"event_name":5,"subject":1}"#, "event_name"),
        (r#"{"event_name":"e"}"#, "subject"),
        (r#"{"event_name":"e","subject":null}"#, "subject"),
        (
            r#"{"event_name":"e","subject":1,"delay_seconds":"soon"}"#,
            "delay_seconds",
        ),
        // Out of float64's range: the seed's decoder refuses these, and a
        // token nobody can read must not turn a user's push into a
        // broadcast (found by fuzz/hub_push).
        (
            r#"{"event_name":"e","subject":1,"token":12366666666668E80664666666}"#,
            "token",
        ),
        (r#"{"event_name":"e","subject":{"a":[1e999]}}"#, "subject"),
    ];
    for (body, reason) in bodies {
        let req = push_request(relay.port, "/api/push", &[("X-API-KEY", API_KEY)], body);
        let r = pusher.raw(&req).await;
        assert_eq!(r.status, 400, "{body}");
        let v = r.json();
        assert_eq!(v["code"], -1, "{v}");
        assert!(v["msg"].as_str().unwrap().contains(reason), "{body}: {v}");
    }
    // Still the same keep-alive connection after eleven 400s.
    let r = pusher.push(&json!({"event_name": "e", "subject": 1})).await;
    assert_delivered(&r, 0);
    // Over the limit: 400 and the connection closes (the body is not read).
    let big = json!({"event_name": "e", "subject": "x".repeat(2000)}).to_string();
    let req = push_request(relay.port, "/api/push", &[("X-API-KEY", API_KEY)], &big);
    let r = pusher.raw(&req).await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["msg"]
            .as_str()
            .unwrap()
            .contains("larger than 1024"),
        "{}",
        r.body_str()
    );
    assert!(http::closed_within(&mut pusher.stream, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn keep_alive_serves_a_burst_on_one_connection() {
    let relay = Relay::start(hub_config(&[])).await;
    let mut ws = hub_client(relay.port, Some("burst")).await;
    let mut pusher = Pusher::connect(relay.port).await;
    for i in 0..50 {
        let r = pusher
            .push(&json!({"event_name": "b", "subject": i, "token": "burst"}))
            .await;
        assert_delivered(&r, 1);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    // Pipelined: three requests in one write, three answers in order.
    let mut all = Vec::new();
    for i in 50..53 {
        let body = json!({"event_name": "b", "subject": i, "token": "burst"}).to_string();
        all.extend(push_request(
            relay.port,
            "/api/push",
            &[("X-API-KEY", API_KEY)],
            &body,
        ));
    }
    pusher.stream.write_all(&all).await.unwrap();
    // The three answers may come in one segment: read them from one buffer
    // (reading each on its own once dropped the next and hung; a CI flake).
    let mut carry = Vec::new();
    for _ in 0..3 {
        let r = http::read_response_from(&mut pusher.stream, &mut carry)
            .await
            .unwrap();
        assert_delivered(&r, 1);
    }
    assert!(carry.is_empty(), "more than three answers");
    for i in 0..53 {
        assert_eq!(next_json(&mut ws).await["data"]["subject"], i);
    }
    // `Connection: close` is honoured.
    let body = json!({"event_name": "b", "subject": 0}).to_string();
    let req = push_request(
        relay.port,
        "/api/push",
        &[("X-API-KEY", API_KEY), ("Connection", "close")],
        &body,
    );
    let r = pusher.raw(&req).await;
    assert_eq!(r.header("connection"), Some("close"));
    assert!(http::closed_within(&mut pusher.stream, Duration::from_secs(3)).await);
}

#[tokio::test]
async fn slow_body_and_oversized_heads_get_408_and_431() {
    let mut cfg = hub_config(&[]);
    cfg.auth_timeout_secs = 1;
    let relay = Relay::start(cfg).await;
    // A body that never completes.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
        .await
        .unwrap();
    let head = format!("POST /api/push HTTP/1.1\r\nHost: x\r\nX-API-KEY: {API_KEY}\r\nContent-Length: 100\r\n\r\n{{\"event");
    s.write_all(head.as_bytes()).await.unwrap();
    let r = http::read_response(&mut s).await.unwrap();
    assert_eq!(r.status, 408);
    // Oversized first head: the front door's 431.
    let huge = format!(
        "POST /api/push HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let (r, _) = http::request(relay.port, huge.as_bytes()).await.unwrap();
    assert_eq!(r.status, 431);
    // Oversized head on a keep-alive connection: 431 too.
    let mut pusher = Pusher::connect(relay.port).await;
    assert_delivered(
        &pusher.push(&json!({"event_name": "e", "subject": 1})).await,
        0,
    );
    let r = pusher.raw(huge.as_bytes()).await;
    assert_eq!(r.status, 431);
    // A slow second head on a keep-alive connection: 408.
    let mut pusher = Pusher::connect(relay.port).await;
    assert_delivered(
        &pusher.push(&json!({"event_name": "e", "subject": 1})).await,
        0,
    );
    pusher
        .stream
        .write_all(b"POST /api/push HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let r = http::read_response(&mut pusher.stream).await.unwrap();
    assert_eq!(r.status, 408);
    // Other methods on the push path.
    let (r, _) = http::request(relay.port, b"GET /api/push HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
}

/// The seed README's two curl commands, byte for byte, except host, port
/// and key (the hub ships no default key).
#[tokio::test]
async fn seed_curl_examples_unchanged() {
    if !have("curl") {
        return;
    }
    let relay = Relay::start(hub_config(&[])).await;
    let mut user = hub_client(relay.port, Some("USER_123")).await;
    let mut anon = hub_client(relay.port, None).await;
    let single = r#"curl -X POST "http://localhost:3000/api/push"   -H "Content-Type: application/json"   -H "X-API-KEY: your_api_key_here"   -d '{
    "event_name": "userMessage",
    "subject": { "text": "hello" },
    "delay_seconds": 0,
    "token": "USER_123"
  }'"#;
    let broadcast = r#"curl -X POST "http://localhost:3000/api/push"   -H "Content-Type: application/json"   -H "X-API-KEY: your_api_key_here"   -d '{
    "event_name": "broadcast",
    "subject": { "text": "hello everyone" },
    "delay_seconds": 0
  }'"#;
    let run = |cmd: &str| {
        let cmd = cmd
            .replace("localhost:3000", &format!("127.0.0.1:{}", relay.port))
            .replace("your_api_key_here", API_KEY);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd + " -sS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(run(single), json!({"code": 0, "msg": "ok", "delivered": 1}));
    assert_push(
        &next_json(&mut user).await,
        "userMessage",
        &json!({"text": "hello"}),
        &json!("USER_123"),
    );
    assert_eq!(
        run(broadcast),
        json!({"code": 0, "msg": "ok", "delivered": 2})
    );
    for ws in [&mut user, &mut anon] {
        assert_push(
            &next_json(ws).await,
            "broadcast",
            &json!({"text": "hello everyone"}),
            &json!(null),
        );
    }
}

#[tokio::test]
async fn missing_or_short_key_refuses_to_start_and_env_overrides_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    for (hub, expect) in [
        ("[hub]\nenabled = true\n", ":4: hub.api_key: is required"),
        (
            "[hub]\nenabled = true\napi_key = \"short-key\"\n",
            ":6: hub.api_key: must be at least 16",
        ),
        (
            "[hub]\nenabled = true\napi_key = \"0123456789abcdef\"\nws_path = \"/\"\n",
            "hub.ws_path",
        ),
    ] {
        std::fs::write(&path, format!("[server]\nenable_tls = false\n\n{hub}")).unwrap();
        let out = run_cli(&path, "check").await;
        assert_ne!(out.code, Some(0), "{hub}");
        assert!(out.all().contains(expect), "{hub}: {}", out.all());
        assert!(
            !out.all().contains("short-key"),
            "key echoed: {}",
            out.all()
        );
    }
    // RELAY_API_KEY, WS_PATH, PUSH_PATH from the environment.
    let mut cfg = hub_config(&[]);
    cfg.extra_toml = vec!["[hub]".into(), "enabled = true".into()];
    cfg.env = vec![
        ("RELAY_API_KEY".into(), API_KEY.into()),
        ("WS_PATH".into(), "/socket".into()),
        ("PUSH_PATH".into(), "/push".into()),
    ];
    let relay = Relay::start(cfg).await;
    let mut ws = upgrade(relay.port, "/socket?token=e1").await;
    fence(&mut ws).await;
    let body = json!({"event_name": "e", "subject": 1, "token": "e1"}).to_string();
    let (r, _) = http::request(
        relay.port,
        &push_request(relay.port, "/push", &[("X-API-KEY", API_KEY)], &body),
    )
    .await
    .unwrap();
    assert_delivered(&r, 1);
    assert!(!relay.log().contains(API_KEY));
}
