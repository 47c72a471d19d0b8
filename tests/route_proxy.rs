//! Reverse-proxy routes over the wire: the real binary in front of real
//! upstream servers (tests/common/upstream.rs), driven by raw upgrade
//! requests so every header sent and received can be checked.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<TcpStream>;

/// What the relay answered to one raw upgrade request.
struct Answer {
    status: u16,
    head: String,
    body: String,
    ws: Option<Client>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        head_header(&self.head, name)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn ws(&mut self) -> &mut Client {
        match &mut self.ws {
            Some(ws) => ws,
            None => panic!("not upgraded: {}\n{}", self.head, self.body),
        }
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends an upgrade for `target` with `Host: host` and `extra` header lines
/// (each "Name: value"), and reads the answer.
async fn open(port: u16, target: &str, host: &str, extra: &[&str]) -> Answer {
    let mut req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req.push_str(line);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    send_raw(port, &req).await
}

async fn send_raw(port: u16, req: &str) -> Answer {
    within(STEP, "raw upgrade", async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let (head, rest) = read_head(&mut tcp).await.expect("response head");
        let head = String::from_utf8_lossy(&head).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        if status == 101 {
            let ws = WebSocketStream::from_partially_read(tcp, rest, Role::Client, None).await;
            return Answer {
                status,
                head,
                body: String::new(),
                ws: Some(ws),
            };
        }
        let mut body = rest;
        let want = head_header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        let mut chunk = [0u8; 4096];
        // Read to EOF: the relay must end the exchange itself.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => body.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("relay kept the connection open after HTTP {status}"),
            }
        }
        if let Some(n) = want {
            assert_eq!(body.len(), n, "body length");
        }
        Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).to_string(),
            ws: None,
        }
    })
    .await
}

async fn greeting(ws: &mut Client) -> String {
    match within(STEP, "upstream greeting", ws.next()).await {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected the upstream's name, got {other:?}"),
    }
}

/// Opens `n` sessions on `path`; returns the upstream names that greeted.
async fn greetings(port: u16, path: &str, n: usize) -> Vec<String> {
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let mut ans = open(port, path, "h", &[]).await;
        seen.push(greeting(ans.ws()).await);
    }
    seen
}

async fn echo(ws: &mut Client, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    match within(STEP, "echo", ws.next()).await {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
        other => panic!("expected echo of {text:?}, got {other:?}"),
    }
}

fn route(name: &str, path: &str, upstreams: &[String], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[[routes]]\nname = {name:?}\npath = {path:?}\nupstream = [{}]\n{extra}\n",
        list.join(", ")
    )
}

async fn relay_with(routes: String, f: impl FnOnce(RelayConfig) -> RelayConfig) -> Relay {
    let cfg = RelayConfig {
        relay_path: Some("/relay".into()),
        extra_toml: vec![routes],
        ..RelayConfig::default()
    };
    Relay::start(f(cfg)).await
}

#[tokio::test]
async fn host_and_longest_prefix_pick_the_route() {
    let (a, b, c, d) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
        Upstream::start("d").await,
    );
    let routes = [
        route("app", "/app", &[a.url("")], ""),
        route("app-v2", "/app/v2", &[b.url("")], ""),
        route("tenant", "/app", &[c.url("")], "host = \"*.tenant.test\""),
        route("vip", "/app", &[d.url("")], "host = \"vip.tenant.test\""),
    ]
    .concat();
    let relay = relay_with(routes, |c| c).await;
    let port = relay.port;
    for (target, host, want) in [
        ("/app", "relay.test", "a"),
        ("/app/other?x=1", "relay.test", "a"),
        ("/app/v2/room", "relay.test", "b"),
        ("/app", "one.tenant.test", "c"),
        ("/app/x", "Deep.One.TENANT.test:8443", "c"),
        ("/app", "vip.tenant.test", "d"),
        ("/app", "tenant.test", "a"),
        ("/app/v2", "vip.tenant.test", "b"),
    ] {
        let mut ans = open(port, target, host, &[]).await;
        assert_eq!(ans.status, 101, "{target} {host}: {}", ans.head);
        assert_eq!(greeting(ans.ws()).await, want, "{target} with Host {host}");
        echo(ans.ws(), "hello").await;
    }
    // The request line reaches the upstream as the client sent it.
    assert!(a.heads()[1].starts_with("GET /app/other?x=1 HTTP/1.1\r\n"));
}

#[tokio::test]
async fn no_route_is_404_and_plain_get_on_a_route_is_426() {
    let a = Upstream::start("a").await;
    let relay = relay_with(route("app", "/app", &[a.url("")], ""), |c| c).await;
    let r = http::get(relay.port, "/nothing").await.unwrap();
    assert_eq!(r.status, 404);
    let r = http::get(relay.port, "/app/page").await.unwrap();
    assert_eq!(r.status, 426);
    assert_eq!(r.json()["status"], "error");
    let ans = open(relay.port, "/nothing", "h", &[]).await;
    assert_eq!(ans.status, 404);
    // The relay path keeps working beside routes (a plain GET there gets
    // the test page).
    let r = http::get(relay.port, "/relay").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body_str().contains("<html"), "{}", r.body_str());
    assert_eq!(a.upgrades(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let a = Upstream::start("a").await;
    let routes = [
        route("app", "/app", &[a.url("")], ""),
        route("own-host", "/own", &[a.url("")], "upstream_host = true"),
    ]
    .concat();
    let relay = relay_with(routes, |c| c).await;
    let mut ans = open(
        relay.port,
        "/app/room?q=1",
        "Public.Example:8443",
        &[
            "Connection: keep-alive, Upgrade, X-Private-Hop",
            "X-Private-Hop: secret-hop",
            "Keep-Alive: timeout=5",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Trailer: X-Sum",
            "X-Forwarded-For: 203.0.113.9",
            "X-Forwarded-Proto: gopher",
            "X-Forwarded-Host: spoofed.example",
            "Origin: https://app.example",
            "Cookie: session=abc",
            "Sec-WebSocket-Extensions: x-test-ext",
            "X-Custom: Mixed Case Value",
        ],
    )
    .await;
    assert_eq!(ans.status, 101, "{}", ans.head);
    greeting(ans.ws()).await;
    let head = &a.heads()[0];
    for gone in [
        "keep-alive",
        "X-Private-Hop",
        "Keep-Alive",
        "Proxy-",
        "TE:",
        "Trailer",
        "gopher",
        "spoofed",
    ] {
        assert!(!head.contains(gone), "{gone} reached the upstream:\n{head}");
    }
    for kept in [
        "GET /app/room?q=1 HTTP/1.1\r\n",
        "Host: Public.Example:8443\r\n",
        &format!("Sec-WebSocket-Key: {KEY}\r\n"),
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Extensions: x-test-ext\r\n",
        "Origin: https://app.example\r\n",
        "Cookie: session=abc\r\n",
        "X-Custom: Mixed Case Value\r\n",
        "X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n",
        "X-Forwarded-Proto: http\r\n",
        "X-Forwarded-Host: Public.Example:8443\r\n",
        "Connection: Upgrade\r\n",
        "Upgrade: websocket\r\n",
    ] {
        assert!(head.contains(kept), "missing {kept:?} in:\n{head}");
    }
    // The upstream's 101 comes back as it was sent.
    assert_eq!(
        ans.header("sec-websocket-accept").as_deref(),
        Some(derive_accept_key(KEY.as_bytes()).as_str())
    );
    assert_eq!(ans.header("x-upstream").as_deref(), Some("a"));
    let mut own = open(relay.port, "/own", "Public.Example", &[]).await;
    greeting(own.ws()).await;
    let head = &a.heads()[1];
    assert!(
        head.contains(&format!("Host: 127.0.0.1:{}\r\n", a.port)),
        "{head}"
    );
    assert!(
        head.contains("X-Forwarded-Host: Public.Example\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn subprotocol_is_negotiated_by_the_two_ends() {
    let a = Upstream::start("a").await;
    let relay = relay_with(route("app", "/app", &[a.url("")], ""), |c| c).await;
    let mut ans = open(
        relay.port,
        "/app",
        "h",
        &["Sec-WebSocket-Protocol: v9.unknown, superchat, chat"],
    )
    .await;
    assert_eq!(
        ans.header("sec-websocket-protocol").as_deref(),
        Some("superchat")
    );
    assert!(a.heads()[0].contains("Sec-WebSocket-Protocol: v9.unknown, superchat, chat\r\n"));
    greeting(ans.ws()).await;
    echo(ans.ws(), "negotiated").await;
    let ans = open(relay.port, "/app", "h", &["Sec-WebSocket-Protocol: other"]).await;
    assert_eq!(ans.status, 101);
    assert_eq!(ans.header("sec-websocket-protocol"), None);
}

#[tokio::test]
async fn non_101_answers_come_back_as_sent() {
    let a = Upstream::start("a").await;
    let relay = relay_with(route("app", "/", &[a.url("")], ""), |c| c).await;
    let started = Instant::now();
    let ans = open(relay.port, "/forbid/x", "h", &[]).await;
    assert_eq!(ans.status, 403, "{}", ans.head);
    assert_eq!(ans.body, "forbidden by a");
    assert_eq!(ans.header("x-upstream").as_deref(), Some("a"));
    assert_eq!(ans.header("content-type").as_deref(), Some("text/plain"));
    assert_eq!(ans.header("connection").as_deref(), Some("close"));
    let ans = open(relay.port, "/plain", "h", &[]).await;
    assert_eq!(ans.status, 200, "{}", ans.head);
    assert_eq!(ans.header("transfer-encoding").as_deref(), Some("chunked"));
    assert!(
        ans.body.contains("hello from a") && ans.body.ends_with("0\r\n\r\n"),
        "{:?}",
        ans.body
    );
    // The upstream keeps both connections open; the relay ended them at the
    // body's end, not at the upstream's leisure.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    log_line(&relay, "upstream answered without upgrading").await;
}

#[tokio::test]
async fn round_robin_and_passive_failover_then_recovery() {
    let a = Upstream::start("a").await;
    let mut b = Upstream::start("b").await;
    // One shard, so one round-robin cursor decides.
    let routes = route(
        "pool",
        "/pool",
        &[a.url(""), b.url("")],
        "fail_timeout_secs = 1",
    );
    let relay = relay_with(routes, |c| RelayConfig { workers: 1, ..c }).await;
    let mut seen = greetings(relay.port, "/pool", 4).await;
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    b.stop();
    // Every client still gets through (a 101, greeted): the failed dial
    // moves on to `a`.
    assert_eq!(greetings(relay.port, "/pool", 4).await, ["a"; 4]);
    log_line(&relay, "marked down on this shard").await;
    b.restart().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let seen = greetings(relay.port, "/pool", 4).await;
    assert!(seen.iter().any(|s| s == "b"), "b never rejoined: {seen:?}");
}

#[tokio::test]
async fn active_health_check_takes_an_upstream_out_and_back() {
    let a = Upstream::start("a").await;
    let mut b = Upstream::start("b").await;
    let routes = route(
        "pool",
        "/pool",
        &[a.url(""), b.url("")],
        "health_check = { path = \"/health\", interval_secs = 1, timeout_secs = 1 }\nfail_timeout_secs = 60",
    );
    let relay = relay_with(routes, |c| c).await;
    // Sick answer (503), then a killed listener: both count as down.
    b.set_healthy(false);
    log_line(&relay, "upstream is down (health check)").await;
    assert_eq!(greetings(relay.port, "/pool", 4).await, ["a"; 4]);
    b.set_healthy(true);
    log_line(&relay, "upstream is up (health check)").await;
    let seen = greetings(relay.port, "/pool", 4).await;
    assert!(seen.iter().any(|s| s == "b"), "{seen:?}");
    b.stop();
    wait_log_count(&relay, "upstream is down (health check)", 2).await;
    b.restart().await;
    wait_log_count(&relay, "upstream is up (health check)", 2).await;
    // Checks run once per process, not once per shard (2 shards here).
    let checks = a.health_checks();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let per_sec = (a.health_checks() - checks) as f64 / 2.1;
    assert!(per_sec < 1.6, "{per_sec} checks/s: more than one checker?");
}

/// The relay's threads by name (`/proc/PID/task/*/comm`).
fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the relay's /proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// No route with a `health_check`, no checker thread; the first one a
/// reload brings starts it, and its checks run.
#[tokio::test]
async fn the_health_checker_starts_with_the_first_checked_route() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let upstreams = [a.url(""), b.url("")];
    let mut relay = relay_with(route("pool", "/pool", &upstreams, ""), |c| c).await;
    let names = thread_names(relay.pid());
    assert!(
        !names.iter().any(|n| n == "health"),
        "a checker with nothing to check: {names:?}"
    );
    assert!(names.iter().any(|n| n == "housekeeping"), "{names:?}");
    b.set_healthy(false);
    let checked = route(
        "pool",
        "/pool",
        &upstreams,
        "health_check = { path = \"/health\", interval_secs = 1, timeout_secs = 1 }",
    );
    let cfg = RelayConfig {
        extra_toml: vec![checked],
        ..relay.cfg.clone()
    };
    relay.write_config(cfg);
    assert_eq!(relay.reload_cli().await.code, Some(0));
    log_line(&relay, "upstream is down (health check)").await;
    let names = thread_names(relay.pid());
    assert_eq!(
        names.iter().filter(|n| *n == "health").count(),
        1,
        "{names:?}"
    );
    assert_eq!(greetings(relay.port, "/pool", 4).await, ["a"; 4]);
}

/// The first log line containing `needle`, waiting for it.
async fn log_line(relay: &Relay, needle: &str) -> String {
    let log = relay
        .wait_for_log(needle, STEP, |l| l.contains(needle))
        .await;
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap()
        .to_string()
}

async fn wait_log_count(relay: &Relay, needle: &str, n: usize) {
    let deadline = Instant::now() + STEP;
    while relay.log().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?} {n} times:\n{}",
            relay.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn all_upstreams_down_is_502_and_a_silent_one_is_504() {
    let hole = Blackhole::start().await;
    let routes = [
        route(
            "dead",
            "/dead",
            &[format!("ws://127.0.0.1:{}", closed_port())],
            "",
        ),
        route(
            "hole",
            "/hole",
            &[format!("ws://127.0.0.1:{}", hole.port)],
            "",
        ),
    ]
    .concat();
    let relay = relay_with(routes, |c| RelayConfig {
        connect_timeout_secs: 1,
        ..c
    })
    .await;
    let ans = open(relay.port, "/dead", "h", &[]).await;
    assert_eq!(ans.status, 502);
    assert_error_json(&ans.json(), "target_unreachable");
    let started = Instant::now();
    let ans = open(relay.port, "/hole", "h", &[]).await;
    assert_eq!(ans.status, 504, "{}", ans.body);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_silent_upstream_leaves_time_for_the_next_one() {
    let hole = Blackhole::start().await;
    let live = Upstream::start("live").await;
    let routes = route(
        "mixed",
        "/mixed",
        &[format!("ws://127.0.0.1:{}", hole.port), live.url("")],
        "",
    );
    let relay = relay_with(routes, |c| RelayConfig {
        connect_timeout_secs: 2,
        workers: 1,
        ..c
    })
    .await;
    // The round-robin cursor starts at the black hole for the first session.
    let started = Instant::now();
    let mut ans = open(relay.port, "/mixed", "h", &[]).await;
    assert_eq!(ans.status, 101, "{}", ans.body);
    assert_eq!(greeting(ans.ws()).await, "live");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
        "{took:?}"
    );
}

#[tokio::test]
async fn token_auth_in_all_three_places_and_never_forwarded() {
    let a = Upstream::start("a").await;
    let routes = [
        route("secure", "/secure", &[a.url("")], "auth = \"token\""),
        route("other", "/other", &[a.url("")], "auth = \"token\""),
    ]
    .concat();
    let relay = relay_with(routes, |c| {
        c.with_users(vec![UserSpec::alice(), UserSpec::bob().routes(&["other"])])
    })
    .await;
    let bearer = format!("Authorization: Bearer {ALICE_TOKEN}");
    let mut ans = open(relay.port, "/secure", "h", &[&bearer]).await;
    assert_eq!(ans.status, 101, "{}", ans.body);
    echo_after_greeting(ans.ws()).await;
    let mut ans = open(
        relay.port,
        &format!("/secure?room=1&token={ALICE_TOKEN}"),
        "h",
        &[],
    )
    .await;
    assert_eq!(ans.status, 101, "{}", ans.body);
    echo_after_greeting(ans.ws()).await;
    let proto = format!("Sec-WebSocket-Protocol: chat, bearer.{ALICE_TOKEN}");
    let mut ans = open(relay.port, "/secure", "h", &[&proto]).await;
    assert_eq!(ans.status, 101, "{}", ans.body);
    assert_eq!(
        ans.header("sec-websocket-protocol").as_deref(),
        Some("chat")
    );
    echo_after_greeting(ans.ws()).await;
    // A browser offering only the credential gets it named back.
    let only = format!("Sec-WebSocket-Protocol: bearer.{ALICE_TOKEN}");
    let mut ans = open(relay.port, "/secure", "h", &[&only]).await;
    let named = format!("bearer.{ALICE_TOKEN}");
    assert_eq!(
        ans.header("sec-websocket-protocol").as_deref(),
        Some(named.as_str())
    );
    echo_after_greeting(ans.ws()).await;
    let heads = a.heads().join("\n");
    assert_eq!(a.upgrades(), 4);
    assert!(
        !heads.contains(ALICE_TOKEN),
        "token reached the upstream:\n{heads}"
    );
    assert!(heads.contains("GET /secure?room=1 HTTP/1.1"), "{heads}");
    assert!(!relay.log().contains(ALICE_TOKEN), "token logged");

    let ans = open(relay.port, "/secure", "h", &[]).await;
    assert_eq!(ans.status, 401);
    assert_error_json(&ans.json(), "auth_failed");
    let ans = open(
        relay.port,
        "/secure",
        "h",
        &["Authorization: Bearer wrong-token"],
    )
    .await;
    assert_eq!(ans.status, 401);
    assert_error_json(&ans.json(), "auth_failed");
    let bob = format!("Authorization: Bearer {BOB_TOKEN}");
    let ans = open(relay.port, "/secure", "h", &[&bob]).await;
    assert_eq!(ans.status, 403);
    assert_error_json(&ans.json(), "target_forbidden");
    let mut ans = open(relay.port, "/other", "h", &[&bob]).await;
    assert_eq!(ans.status, 101);
    echo_after_greeting(ans.ws()).await;
    assert_eq!(
        a.upgrades(),
        5,
        "refused requests never reached the upstream"
    );
}

async fn echo_after_greeting(ws: &mut Client) {
    greeting(ws).await;
    echo(ws, "through the route").await;
}

#[tokio::test]
async fn auth_failures_are_throttled_on_routes() {
    let a = Upstream::start("a").await;
    let routes = route("secure", "/secure", &[a.url("")], "auth = \"token\"");
    let relay = relay_with(routes, |c| RelayConfig {
        auth_fail_limit_per_min: 3,
        ..c
    })
    .await;
    for _ in 0..3 {
        let ans = open(relay.port, "/secure?token=nope", "h", &[]).await;
        assert_eq!(ans.status, 401);
    }
    let ans = open(
        relay.port,
        &format!("/secure?token={ALICE_TOKEN}"),
        "h",
        &[],
    )
    .await;
    assert_eq!(ans.status, 429);
    assert_error_json(&ans.json(), "auth_throttled");
}

#[tokio::test]
async fn max_connections_gives_503_and_frees_the_slot() {
    let a = Upstream::start("a").await;
    let routes = route("one", "/one", &[a.url("")], "max_connections = 1");
    let relay = relay_with(routes, |c| c).await;
    let mut first = open(relay.port, "/one", "h", &[]).await;
    echo_after_greeting(first.ws()).await;
    // Try from both shards' point of view: the limit is process-wide.
    for _ in 0..4 {
        let ans = open(relay.port, "/one", "h", &[]).await;
        assert_eq!(ans.status, 503);
        assert_error_json(&ans.json(), "over_capacity");
    }
    // /metrics counts the route per shard; sum the shards' lines.
    let text = http::get(relay.port, "/metrics").await.unwrap().body_str();
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        sum("ws_relay_route_sessions_open{route=\"one\""),
        1,
        "{text}"
    );
    assert_eq!(
        sum("ws_relay_route_sessions_total{route=\"one\""),
        1,
        "{text}"
    );
    let rejected = |reason: &str| {
        text.lines()
            .filter(|l| l.starts_with("ws_relay_route_rejections_total{route=\"one\""))
            .filter(|l| l.contains(&format!("reason=\"{reason}\"")))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    assert_eq!(rejected("capacity"), 4, "{text}");
    assert_eq!(rejected("auth"), 0, "{text}");
    assert!(
        text.contains("ws_relay_upstream_up{route=\"one\""),
        "{text}"
    );
    assert!(sum("ws_relay_sessions_open{kind=\"route\"") >= 1, "{text}");
    first.ws().close(None).await.unwrap();
    while let Some(Ok(_)) = first.ws().next().await {}
    let deadline = Instant::now() + STEP;
    loop {
        let mut ans = open(relay.port, "/one", "h", &[]).await;
        if ans.status == 101 {
            echo_after_greeting(ans.ws()).await;
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_forward_mode_carries_routed_sessions() {
    let a = Upstream::start("a").await;
    for forward in [Forward::Copy, Forward::Splice, Forward::Ring] {
        let relay = relay_with(route("app", "/app", &[a.url("")], ""), |c| {
            c.with_forward(forward)
        })
        .await;
        let mut ans = open(relay.port, "/app", "h", &[]).await;
        greeting(ans.ws()).await;
        let big = "x".repeat(300_000);
        echo(ans.ws(), &big).await;
        for i in 0..50 {
            echo(ans.ws(), &format!("m{i}")).await;
        }
        ans.ws().close(None).await.unwrap();
        let line = log_line(&relay, "route=app").await;
        assert!(line.contains("upstream=ws://127.0.0.1:"), "{line}");
        // Splice mode never sees frames, so only copy and ring can name the closer;
        // splice says so instead of blaming the target.
        match forward {
            Forward::Copy | Forward::Ring => {
                assert!(line.contains("closed_by=\"client\""), "{line}")
            }
            Forward::Splice => {
                assert!(line.contains("closed_by=\"unknown\""), "{line}");
                assert!(
                    line.contains("splice mode does not see Close frames"),
                    "{line}"
                );
                assert!(!line.contains("without a close frame"), "{line}");
            }
        }
    }
}

#[tokio::test]
async fn reload_changes_routes_while_live_sessions_keep_running() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let mut relay = relay_with(route("r1", "/r1", &[a.url("")], ""), |c| c).await;
    let mut live = open(relay.port, "/r1", "h", &[]).await;
    assert_eq!(greeting(live.ws()).await, "a");
    let next = [
        route("r1", "/r1", &[b.url("")], ""),
        route("r2", "/r2", &[a.url("")], ""),
    ]
    .concat();
    let cfg = RelayConfig {
        relay_path: Some("/relay".into()),
        extra_toml: vec![next],
        ..RelayConfig::default()
    };
    relay.write_config(cfg);
    let out = relay.reload_cli().await;
    assert_eq!(out.code, Some(0), "{}", out.all());
    echo(live.ws(), "still here").await;
    let mut ans = open(relay.port, "/r1", "h", &[]).await;
    assert_eq!(greeting(ans.ws()).await, "b");
    let mut ans = open(relay.port, "/r2", "h", &[]).await;
    assert_eq!(greeting(ans.ws()).await, "a");
    // Remove every route: new requests get 404, the live one goes on.
    relay.write_config(RelayConfig {
        relay_path: Some("/relay".into()),
        ..RelayConfig::default()
    });
    assert_eq!(relay.reload_cli().await.code, Some(0));
    assert_eq!(open(relay.port, "/r1", "h", &[]).await.status, 404);
    echo(live.ws(), "after removal").await;
    // A broken route config is refused and the running routes stay.
    relay.write_config_text(&format!(
        "{}\n[[routes]]\nname = \"bad\"\npath = \"/bad\"\nupstream = [\"http://x\"]\n",
        relay.render(&RelayConfig {
            relay_path: Some("/relay".into()),
            ..RelayConfig::default()
        })
    ));
    let out = relay.reload_cli().await;
    assert_eq!(out.code, Some(1), "{}", out.all());
    assert!(out.all().contains("routes[0].upstream"), "{}", out.all());
}
