//! HTTP/1.0 on the plain endpoints (issue 25, item 4): `/health`,
//! `/metrics`, the test page and the push API answer HTTP/1.0 requests as
//! RFC 9112 says (closed after the answer unless the client asks for
//! keep-alive); only a WebSocket upgrade needs HTTP/1.1 and gets a 400 that
//! says so. HAProxy's `option httpchk` (HTTP/1.0 by default) sees the relay
//! up.

mod common;

use std::time::Duration;

use common::http::{closed_within, read_response, request};
use common::hub::{hub_config, API_KEY};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

async fn get10(port: u16, method: &str, path: &str) -> (common::http::HttpResponse, bool) {
    let raw = format!("{method} {path} HTTP/1.0\r\n\r\n");
    let (resp, mut stream) = within(STEP, path, request(port, raw.as_bytes()))
        .await
        .unwrap_or_else(|e| panic!("HTTP/1.0 {method} {path}: {e}"));
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
    (resp, closed)
}

#[tokio::test]
async fn health_metrics_and_page_answer_http_1_0_and_close() {
    let relay = Relay::start(RelayConfig::default()).await;
    for (method, path, status) in [
        ("GET", "/health", 200),
        ("HEAD", "/health", 200),
        ("GET", "/metrics", 200),
        ("GET", "/", 200),
        ("GET", "/nowhere", 404),
        ("POST", "/health", 405),
    ] {
        let (resp, closed) = get10(relay.port, method, path).await;
        assert_eq!(
            resp.status, status,
            "HTTP/1.0 {method} {path}: {}",
            resp.head
        );
        assert_eq!(
            resp.header("connection")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("close"),
            "HTTP/1.0 {method} {path}: {}",
            resp.head
        );
        assert!(closed, "HTTP/1.0 {method} {path}: connection left open");
    }
    let (resp, _) = get10(relay.port, "GET", "/health").await;
    assert_eq!(resp.json()["status"], "ok");
    let (resp, _) = get10(relay.port, "GET", "/metrics").await;
    assert!(
        resp.body_str().contains("ws_relay_"),
        "metrics body: {}",
        resp.body_str()
    );
}

#[tokio::test]
async fn an_http_1_0_upgrade_is_refused_with_a_reason() {
    let relay = Relay::start(RelayConfig::default()).await;
    let raw = "GET /?token=x&target=ws%3A%2F%2F127.0.0.1%3A9%2F HTTP/1.0\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (resp, _) = within(STEP, "upgrade", request(relay.port, raw.as_bytes()))
        .await
        .unwrap();
    assert_eq!(resp.status, 400, "{}", resp.head);
    assert!(
        resp.body_str().contains("needs HTTP/1.1"),
        "body: {}",
        resp.body_str()
    );
}

fn push10(body: &str, keep_alive: bool) -> Vec<u8> {
    let conn = if keep_alive {
        "Connection: keep-alive\r\n"
    } else {
        ""
    };
    format!(
        "POST /api/push HTTP/1.0\r\nContent-Type: application/json\r\nX-API-KEY: {API_KEY}\r\nContent-Length: {}\r\n{conn}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn push_api_answers_http_1_0_and_keeps_alive_only_when_asked() {
    let relay = Relay::start(hub_config(&[])).await;
    let body = json!({"event_name": "e", "subject": 1}).to_string();

    let (resp, mut stream) = within(STEP, "push", request(relay.port, &push10(&body, false)))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.json()["code"], 0, "{}", resp.body_str());
    assert_eq!(resp.header("connection"), Some("close"), "{}", resp.head);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);

    // Asked for keep-alive (ApacheBench -k): the connection serves a second
    // request, and closes after one that does not ask.
    let (resp, mut stream) = within(STEP, "push", request(relay.port, &push10(&body, true)))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(
        resp.header("connection"),
        Some("keep-alive"),
        "{}",
        resp.head
    );
    stream.write_all(&push10(&body, false)).await.unwrap();
    let resp = within(STEP, "second push", read_response(&mut stream))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.head);
    assert_eq!(resp.header("connection"), Some("close"), "{}", resp.head);
    assert!(closed_within(&mut stream, Duration::from_secs(3)).await);
}

/// A real HAProxy in front of the relay, checking it with `option httpchk`
/// (HTTP/1.0 unless told otherwise): the server must come up.
#[tokio::test]
async fn haproxy_http_check_sees_the_relay_up() {
    let Some(haproxy) = which("haproxy") else {
        let why = "haproxy not installed (apt-get install haproxy)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run every test, but {why}"
        );
        common::python::skip(why);
        return;
    };
    let relay = Relay::start(RelayConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stats.sock");
    let front = common::process::free_port();
    let cfg = format!(
        "global\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n\
         frontend f\n    bind 127.0.0.1:{front}\n    default_backend b\n\
         backend b\n    option httpchk GET /health\n    http-check expect status 200\n\
         \x20   server relay 127.0.0.1:{} check inter 200ms rise 1 fall 1\n",
        sock.display(),
        relay.port
    );
    let cfg_path = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut child = tokio::process::Command::new(haproxy)
        .arg("-f")
        .arg(&cfg_path)
        .arg("-db")
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start haproxy");
    let mut state = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        state = stat_line(&sock).await.unwrap_or_default();
        // A server starts UP before its first check: wait for a verdict
        // (check_status L7OK, or L7STS for a wrong status).
        if state.contains(",L7") {
            break;
        }
    }
    let _ = child.start_kill();
    assert!(
        state.contains(",UP,") && state.contains(",L7OK,"),
        "HAProxy's HTTP check did not see the relay up: {state}"
    );
}

/// The backend server's line from HAProxy's `show stat`.
async fn stat_line(sock: &std::path::Path) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::UnixStream::connect(sock).await.ok()?;
    s.write_all(b"show stat\n").await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    out.lines()
        .find(|l| l.starts_with("b,relay,"))
        .map(str::to_string)
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(program))
        .chain(["/usr/sbin", "/sbin"].map(|d| std::path::Path::new(d).join(program)))
        .find(|p| p.is_file())
}
