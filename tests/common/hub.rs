//! Push-hub helpers: a hub config, clients that give a token either way,
//! push requests over raw HTTP, and a real `redis-server` on a free port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::client::{next_msg, send, try_next, upgrade, Next, Ws, STEP};
use super::http::{read_response, urlencode, HttpResponse};
use super::relay::RelayConfig;

pub const API_KEY: &str = "test-api-key-0123456789";

/// A relay config with the hub on (2 shards) and extra `[hub]` lines.
pub fn hub_config(extra: &[&str]) -> RelayConfig {
    let mut cfg = RelayConfig::default();
    let mut hub = vec![
        "[hub]".to_string(),
        "enabled = true".into(),
        format!("api_key = {API_KEY:?}"),
    ];
    hub.extend(extra.iter().map(|s| s.to_string()));
    cfg.extra_toml = hub;
    cfg
}

/// A client on `/ws`, with `?token=` when given, fenced so the hub has
/// registered it before this returns.
pub async fn hub_client(port: u16, token: Option<&str>) -> Ws {
    let path = match token {
        Some(t) => format!("/ws?token={}", urlencode(t)),
        None => "/ws".into(),
    };
    let mut ws = upgrade(port, &path).await;
    fence(&mut ws).await;
    ws
}

/// Sends the seed's identify message, then fences.
pub async fn identify(ws: &mut Ws, token: Value) {
    let msg = serde_json::json!({"event": "identify", "data": {"token": token}});
    send(ws, Message::text(msg.to_string())).await;
    fence(ws).await;
}

/// A ping answered means every frame sent before it was handled.
pub async fn fence(ws: &mut Ws) {
    let tag = format!("fence-{}", rand_u64());
    send(ws, Message::Ping(tag.clone().into_bytes().into())).await;
    loop {
        match next_msg(ws, STEP).await {
            Message::Pong(p) if p.as_ref() == tag.as_bytes() => return,
            Message::Pong(_) => {}
            other => panic!("expected the fence pong, got {other:?}"),
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// The next text message as JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    next_json_within(ws, STEP).await
}

pub async fn next_json_within(ws: &mut Ws, limit: Duration) -> Value {
    loop {
        match next_msg(ws, limit).await {
            Message::Text(t) => {
                return serde_json::from_str(&t).unwrap_or_else(|e| panic!("not JSON ({e}): {t}"))
            }
            Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A hub message's place in its stream (history on): offset and epoch.
pub fn position(msg: &Value) -> (u64, String) {
    let d = &msg["data"];
    let offset = d["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset: {msg}"));
    let epoch = d["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch: {msg}"));
    (offset, epoch.to_string())
}

/// Asserts nothing (but pongs) arrives within `limit`.
pub async fn expect_silence(ws: &mut Ws, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match try_next(ws, left).await {
            Next::Timeout => return,
            Next::Msg(Message::Pong(_)) => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }
}

/// Raw push request bytes.
pub fn push_request(port: u16, path_query: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut s = format!(
        "POST {path_query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

/// A keep-alive connection to the push API.
pub struct Pusher {
    pub port: u16,
    pub stream: TcpStream,
}

impl Pusher {
    pub async fn connect(port: u16) -> Pusher {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Pusher { port, stream }
    }

    pub async fn raw(&mut self, bytes: &[u8]) -> HttpResponse {
        self.stream.write_all(bytes).await.expect("write push");
        tokio::time::timeout(STEP, read_response(&mut self.stream))
            .await
            .expect("push answer in time")
            .expect("push answer")
    }

    /// POST `/api/push` with the key in `X-API-KEY`.
    pub async fn push(&mut self, body: &Value) -> HttpResponse {
        let req = push_request(
            self.port,
            "/api/push",
            &[("X-API-KEY", API_KEY)],
            &body.to_string(),
        );
        self.raw(&req).await
    }
}

/// One push on a fresh connection; returns the answer.
pub async fn push_once(port: u16, body: &Value) -> HttpResponse {
    Pusher::connect(port).await.push(body).await
}

/// Asserts `{"code":0,"msg":"ok","delivered":n}`.
pub fn assert_delivered(r: &HttpResponse, n: u64) {
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        r.json(),
        serde_json::json!({"code": 0, "msg": "ok", "delivered": n})
    );
}

/// Checks the message a client got for a push.
pub fn assert_push(msg: &Value, event: &str, subject: &Value, token: &Value) {
    assert_eq!(msg["event"], *event, "{msg}");
    assert_eq!(msg["data"]["subject"], *subject, "{msg}");
    assert_eq!(msg["data"]["token"], *token, "{msg}");
    let ts = msg["data"]["ts"].as_u64().expect("ts in ms");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        ts <= now && now - ts < 60_000,
        "ts {ts} not a recent ms timestamp"
    );
}

/// Closes a client politely.
pub async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
}

/// `true` when a program is on PATH. Under `CI=true` a missing one panics.
pub fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{program} is required under CI=true (.ci/run installs it)");
        }
        eprintln!("SKIP: {program} not found on PATH");
    }
    found
}

/// A real `redis-server` on a free loopback port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// `None` (after a visible SKIP) when redis-server is absent.
    pub async fn start() -> Option<RedisServer> {
        if !have("redis-server") {
            return None;
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        let mut r = RedisServer {
            port,
            child: None,
            _dir: tempfile::tempdir().unwrap(),
        };
        r.spawn().await;
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(self._dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Raw RESP `PING`.
    pub async fn ping(&self) -> bool {
        self.command("PING\r\n")
            .await
            .is_some_and(|r| r.starts_with("+PONG"))
    }

    /// An inline command; the raw reply.
    pub async fn command(&self, inline: &str) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        s.write_all(inline.as_bytes()).await.ok()?;
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// A raw RESP subscriber on `channel`: an independent witness of what
    /// the instances publish.
    pub async fn watch(&self, channel: &str) -> Watcher {
        use tokio::io::AsyncReadExt;
        let mut s = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect redis");
        s.write_all(format!("SUBSCRIBE {channel}\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).contains("subscribe"),
            "SUBSCRIBE failed"
        );
        Watcher {
            stream: s,
            seen: String::new(),
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: `--save ''`).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a raw subscriber has seen on the channel.
pub struct Watcher {
    stream: TcpStream,
    pub seen: String,
}

impl Watcher {
    /// Reads for `limit`; returns how often `needle` was published so far.
    pub async fn count_after(&mut self, limit: Duration, needle: &str) -> usize {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        let until = Instant::now() + limit;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                _ => break,
            }
        }
        self.seen.matches(needle).count()
    }
}
