//! Load client for push hubs (ws-relay-core's hub or baseline-hub).
//!
//! hub-load latency  PORT KEY CLIENTS ITERS [broadcast]  push→last-client p50/p99
//! hub-load pushes   PORT KEY CONNS SECS PUSHERS         pushes/s to one user
//! hub-load broadcast PORT KEY CLIENTS SECS PUSHERS      deliveries/s
//! hub-load idle     PORT KEY CLIENTS PID                hub RSS per idle client
//! hub-load recover  PORT KEY N                        pushes N to "rec", then times a
//!                                                       client recovering all N
//! hub-load listen   PORT KEY CLIENTS SECS               frames CLIENTS clients of
//!                                                       "bench" got in SECS (for
//!                                                       a push load run elsewhere)
//!
//! Clients are raw TCP WebSockets that only count complete text frames, so
//! the client side costs little; prints one JSON line per run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

struct Counter {
    frames: AtomicU64,
    notify: Notify,
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let workers = std::env::var("HUB_LOAD_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let port: u16 = a[2].parse().unwrap();
    let key = a[3].clone();
    let n = |i: usize| a[i].parse::<u64>().unwrap();
    rt.block_on(async {
        match a[1].as_str() {
            "latency" => latency(port, &key, n(4), n(5), a.get(6).is_some_and(|s| s == "broadcast")).await,
            "pushes" => rate(port, &key, n(4), n(5), n(6), false).await,
            "broadcast" => rate(port, &key, n(4), n(5), n(6), true).await,
            "idle" => idle(port, n(4), n(5)).await,
            "listen" => listen(port, n(4), n(5)).await,
            "recover" => recover(port, &key, n(4)).await,
            other => panic!("unknown mode {other}"),
        }
    });
}

async fn clients(port: u16, count: u64, token: Option<&str>, counter: &Arc<Counter>) -> Vec<tokio::task::JoinHandle<()>> {
    // Clients may sit on another instance than the pushes go to (Redis rows).
    let port = std::env::var("HUB_LOAD_CLIENT_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(port);
    let mut handles = Vec::new();
    let path = match token {
        Some(t) => format!("/ws?token={t}"),
        None => "/ws".into(),
    };
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(1024);
    for _ in 0..count {
        let (path, c, sem, ready) = (path.clone(), counter.clone(), sem.clone(), ready_tx.clone());
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await.unwrap();
            let s = ws_connect(port, &path).await;
            drop(permit);
            let _ = ready.send(()).await;
            read_frames(s, &c).await;
        }));
    }
    for _ in 0..count {
        ready_rx.recv().await.unwrap();
    }
    // Let the hub register the last upgrades (the 101 precedes registration).
    tokio::time::sleep(Duration::from_millis(200)).await;
    handles
}

async fn ws_connect(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.set_nodelay(true).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "closed during upgrade");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    s
}

/// Counts complete server frames (unmasked) until EOF.
async fn read_frames(mut s: TcpStream, c: &Counter) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut skip: u64 = 0;
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        let mut done = 0;
        while !data.is_empty() {
            if skip > 0 {
                let k = skip.min(data.len() as u64);
                skip -= k;
                data = &data[k as usize..];
                if skip == 0 {
                    done += 1;
                }
                continue;
            }
            let before = pending.len();
            let take = (14 - before).min(data.len());
            pending.extend_from_slice(&data[..take]);
            match header(&pending) {
                None => data = &data[take..],
                Some((hlen, plen)) => {
                    data = &data[hlen - before..];
                    pending.clear();
                    if plen == 0 {
                        done += 1;
                    } else {
                        skip = plen;
                    }
                }
            }
        }
        if done > 0 {
            c.frames.fetch_add(done, Ordering::AcqRel);
            c.notify.notify_waiters();
        }
    }
}

fn header(b: &[u8]) -> Option<(usize, u64)> {
    if b.len() < 2 {
        return None;
    }
    let l7 = b[1] & 0x7f;
    match l7 {
        126 if b.len() >= 4 => Some((4, u16::from_be_bytes([b[2], b[3]]) as u64)),
        127 if b.len() >= 10 => Some((10, u64::from_be_bytes(b[2..10].try_into().unwrap()))),
        126 | 127 => None,
        n => Some((2, n as u64)),
    }
}

struct Pusher {
    s: TcpStream,
    buf: Vec<u8>,
    port: u16,
    key: String,
}

impl Pusher {
    async fn new(port: u16, key: &str) -> Pusher {
        let s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.set_nodelay(true).unwrap();
        Pusher { s, buf: Vec::new(), port, key: key.into() }
    }

    /// One push; returns `delivered`.
    async fn push(&mut self, token: Option<&str>, i: u64) -> u64 {
        let body = match token {
            Some(t) => format!(r#"{{"event_name":"bench","subject":{{"i":{i}}},"token":"{t}"}}"#),
            None => format!(r#"{{"event_name":"bench","subject":{{"i":{i}}}}}"#),
        };
        let req = format!(
            "POST /api/push HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nX-API-KEY: {}\r\nContent-Length: {}\r\n\r\n{body}",
            self.port, self.key, body.len()
        );
        self.s.write_all(req.as_bytes()).await.unwrap();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + len {
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    let body: serde_json::Value = serde_json::from_slice(&self.buf[end + 4..end + 4 + len]).unwrap();
                    self.buf.drain(..end + 4 + len);
                    return body["delivered"].as_u64().unwrap_or(0);
                }
            }
            let n = self.s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "push connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn counter() -> Arc<Counter> {
    Arc::new(Counter { frames: AtomicU64::new(0), notify: Notify::new() })
}

async fn wait_for(c: &Counter, target: u64, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let notified = c.notify.notified();
        if c.frames.load(Ordering::Acquire) >= target {
            return true;
        }
        if tokio::time::timeout_at(until.into(), notified).await.is_err() {
            return c.frames.load(Ordering::Acquire) >= target;
        }
    }
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(port: u16, key: &str, n: u64, iters: u64, broadcast: bool) {
    let c = counter();
    let token = (!broadcast).then_some("bench");
    let _h = clients(port, n, Some("bench"), &c).await;
    let mut p = Pusher::new(port, key).await;
    let mut lat = Vec::with_capacity(iters as usize);
    let mut expected = 0;
    for i in 0..iters + 20 {
        let t0 = Instant::now();
        let d = p.push(token, i).await;
        if std::env::var("HUB_LOAD_CLIENT_PORT").is_err() {
            assert_eq!(d, n, "delivered {d} of {n}");
        }
        expected += n;
        assert!(wait_for(&c, expected, Duration::from_secs(10)).await, "messages missing");
        if i >= 20 {
            lat.push(t0.elapsed().as_micros() as u64);
        }
    }
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(r#"{{"mode":"latency","clients":{n},"iters":{iters},"broadcast":{broadcast},"p50_us":{p50},"p99_us":{p99}}}"#);
}

async fn rate(port: u16, key: &str, n: u64, secs: u64, pushers: u64, broadcast: bool) {
    let c = counter();
    let _h = clients(port, n, (!broadcast).then_some("bench"), &c).await;
    let server = std::env::var("HUB_LOAD_SERVER_PID").ok().and_then(|p| p.parse::<u64>().ok());
    let cpu0 = server.map(cpu_secs);
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..pushers {
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut p = Pusher::new(port, &key).await;
            let (mut pushes, mut delivered) = (0u64, 0u64);
            while Instant::now() < until {
                delivered += p.push(if broadcast { None } else { Some("bench") }, pushes).await;
                pushes += 1;
            }
            (pushes, delivered)
        }));
    }
    let (mut pushes, mut delivered) = (0, 0);
    for t in tasks {
        let (p, d) = t.await.unwrap();
        pushes += p;
        delivered += d;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Everything acknowledged must arrive (across instances: every push
    // reaches all `n` clients).
    let expect = if std::env::var("HUB_LOAD_CLIENT_PORT").is_ok() { pushes * n } else { delivered };
    let arrived = wait_for(&c, expect, Duration::from_secs(30)).await;
    let wall = started.elapsed().as_secs_f64();
    let got = c.frames.load(Ordering::Acquire);
    // The hub's own CPU time over the run: deliveries per CPU-second is the
    // per-core figure even when this client, not the hub, is the bottleneck.
    let per_cpu = match (server, cpu0) {
        (Some(pid), Some(t0)) => {
            let cpu = cpu_secs(pid) - t0;
            format!(r#","server_cpu_s":{cpu:.2},"delivered_per_cpu_s":{:.0}"#, got as f64 / cpu.max(0.01))
        }
        _ => String::new(),
    };
    println!(
        r#"{{"mode":"{}","conns":{n},"pushers":{pushers},"pushes_per_s":{:.0},"delivered_per_s":{:.0},"received":{got},"acknowledged":{delivered},"all_arrived":{arrived}{per_cpu}}}"#,
        if broadcast { "broadcast" } else { "pushes" },
        pushes as f64 / elapsed,
        got as f64 / wall
    );
}

/// Pushes `n` messages to user "rec" (4 pushers), then times a client
/// that connects with since=0 and the stream's epoch until it holds the
/// `recovered` event and all `n` (HUB_LOAD_CLIENT_PORT: on another instance).
async fn recover(port: u16, key: &str, n: u64) {
    let pushed = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let mut p = Pusher::new(port, &key).await;
            let mut i = w;
            while i < n {
                p.push(Some("rec"), i).await;
                i += 4;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let push_secs = pushed.elapsed().as_secs_f64();
    let cport = std::env::var("HUB_LOAD_CLIENT_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(port);
    // A foreign epoch: the answer names the real one.
    let mut s = ws_connect(cport, "/ws?token=rec&since=0&epoch=none").await;
    let first = first_text(&mut s).await;
    let v: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let epoch = v["data"]["epoch"].as_str().unwrap().to_string();
    assert_eq!(v["data"]["offset"].as_u64(), Some(n), "{v}");
    drop(s);
    let c = counter();
    let t0 = Instant::now();
    let s = ws_connect(cport, &format!("/ws?token=rec&since=0&epoch={epoch}")).await;
    let c2 = c.clone();
    let reader = tokio::spawn(async move { read_frames(s, &c2).await });
    let all = wait_for(&c, n + 1, Duration::from_secs(120)).await;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    reader.abort();
    println!(
        r#"{{"mode":"recover","missed":{n},"recover_ms":{ms:.1},"all_arrived":{all},"push_s":{push_secs:.2}}}"#
    );
}

/// The payload of the first text frame on `s` (unmasked, not fragmented).
async fn first_text(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((hlen, plen)) = header(&buf) {
            if buf.len() >= hlen + plen as usize {
                return buf[hlen..hlen + plen as usize].to_vec();
            }
        }
        let k = s.read(&mut chunk).await.unwrap();
        assert!(k > 0, "closed before the first message");
        buf.extend_from_slice(&chunk[..k]);
    }
}

/// Connects the clients, says so on stderr, counts for `secs`.
async fn listen(port: u16, n: u64, secs: u64) {
    let c = counter();
    let _h = clients(port, n, Some("bench"), &c).await;
    eprintln!("listening");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    println!(r#"{{"mode":"listen","clients":{n},"received":{}}}"#, c.frames.load(Ordering::Acquire));
}

/// User + system CPU seconds `pid` has used (/proc/PID/stat, 100 Hz ticks).
fn cpu_secs(pid: u64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').skip(11).take(2).map(|v| v.parse().unwrap()).collect();
    (f[0] + f[1]) as f64 / 100.0
}

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn idle(port: u16, n: u64, pid: u64) {
    let c = counter();
    let warm = clients(port, 100, Some("warm"), &c).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    let _h = clients(port, n, Some("idle"), &c).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    drop(warm);
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(r#"{{"mode":"idle","clients":{n},"rss_before_kib":{before},"rss_after_kib":{after},"bytes_per_client":{per:.0}}}"#);
}
