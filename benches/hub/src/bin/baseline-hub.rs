//! A minimal hub of the seed's design for comparison: tokio +
//! tokio-tungstenite, one shared `Mutex<HashMap<token, senders>>`, a bounded
//! channel per client, the seed's push API (`POST /api/push`, `X-API-KEY`,
//! `{"code":0,"msg":"ok","delivered":N}`). Usage: baseline-hub PORT WORKERS.
//! Only what the benchmark uses: no delays, no Redis, no limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Tx = mpsc::Sender<Message>;

#[derive(Default)]
struct Hub {
    next: u64,
    all: HashMap<u64, Tx>,
    users: HashMap<String, HashMap<u64, Tx>>,
}

type Shared = Arc<Mutex<Hub>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port: u16 = args.get(1).and_then(|p| p.parse().ok()).unwrap_or(3000);
    let workers: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(serve(port));
}

async fn serve(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let hub: Shared = Arc::default();
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        let _ = s.set_nodelay(true);
        tokio::spawn(conn(s, hub.clone()));
    }
}

async fn conn(s: TcpStream, hub: Shared) {
    let mut first = [0u8; 4];
    if s.peek(&mut first).await.is_err() {
        return;
    }
    if &first == b"POST" {
        push_api(s, hub).await
    } else {
        client(s, hub).await
    }
}

async fn client(s: TcpStream, hub: Shared) {
    let mut token = None;
    let cb = |req: &Request, resp: Response| {
        token = req.uri().query().and_then(|q| {
            q.split('&').find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
        });
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(s, cb).await else { return };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let id = {
        let mut h = hub.lock().unwrap();
        h.next += 1;
        let id = h.next;
        h.all.insert(id, tx.clone());
        if let Some(t) = &token {
            h.users.entry(t.clone()).or_default().insert(id, tx.clone());
        }
        id
    };
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(m)) = stream.next().await {
        if let Message::Text(t) = m {
            if let Ok(v) = serde_json::from_str::<Value>(&t) {
                if v["event"] == "identify" {
                    if let Some(new) = v["data"]["token"].as_str() {
                        let mut h = hub.lock().unwrap();
                        if let Some(old) = token.take() {
                            if let Some(m) = h.users.get_mut(&old) {
                                m.remove(&id);
                            }
                        }
                        h.users.entry(new.to_string()).or_default().insert(id, tx.clone());
                        token = Some(new.to_string());
                    }
                }
            }
        }
    }
    let mut h = hub.lock().unwrap();
    h.all.remove(&id);
    if let Some(t) = token {
        if let Some(m) = h.users.get_mut(&t) {
            m.remove(&id);
        }
    }
    writer.abort();
}

async fn push_api(mut s: TcpStream, hub: Shared) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    loop {
        let (head_end, len) = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (end + 4, len);
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        while buf.len() < head_end + len {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
        buf.drain(..head_end + len);
        let out = serde_json::json!({
            "event": body["event_name"],
            "data": {"subject": body["subject"], "ts": 0, "token": body["token"]},
        });
        let msg = Message::text(out.to_string());
        let targets: Vec<Tx> = {
            let h = hub.lock().unwrap();
            match body["token"].as_str() {
                Some(t) => h.users.get(t).map(|m| m.values().cloned().collect()).unwrap_or_default(),
                None => h.all.values().cloned().collect(),
            }
        };
        let delivered = targets.iter().filter(|tx| tx.try_send(msg.clone()).is_ok()).count();
        let body = format!(r#"{{"code":0,"msg":"ok","delivered":{delivered}}}"#);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
