//! Upstream servers for the reverse-proxy tests, in the test process on
//! 127.0.0.1, each with a name so a test can tell which one a session
//! reached.
//!
//! An [`Upstream`] answers `GET /health` (200, or 503 once told it is
//! sick), `/forbid*` with a 403 carrying a body and its own header,
//! `/plain*` with a chunked 200 (and keeps the connection open afterwards,
//! as an HTTP/1.1 server may), and any other upgrade with a 101 that picks
//! `chat` or `superchat` when offered, then greets with its name and echoes.
//! It records every upgrade request head exactly as received. `stop` drops
//! the listener and every connection (the port then refuses, as if the
//! process died); `restart` binds the same port again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::target::head_header;

const PROTOCOLS: [&str; 2] = ["chat", "superchat"];

pub struct Upstream {
    pub name: String,
    pub port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    healthy: Arc<AtomicBool>,
    health_checks: Arc<Mutex<usize>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let mut up = Upstream {
            name: name.to_string(),
            port: listener.local_addr().unwrap().port(),
            heads: Arc::default(),
            healthy: Arc::new(AtomicBool::new(true)),
            health_checks: Arc::default(),
            task: None,
        };
        up.serve(listener);
        up
    }

    fn serve(&mut self, listener: TcpListener) {
        let name = self.name.clone();
        let heads = self.heads.clone();
        let healthy = self.healthy.clone();
        let checks = self.health_checks.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropping this task aborts the JoinSet, so `stop` ends every
            // open connection as a dying process would.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    res = listener.accept() => {
                        let Ok((tcp, _)) = res else { continue };
                        let ctx = Conn { name: name.clone(), heads: heads.clone(), healthy: healthy.clone(), checks: checks.clone() };
                        conns.spawn(ctx.run(tcp));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Binds the same port again (retrying while the kernel frees it).
    pub async fn restart(&mut self) {
        self.stop();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for _ in 0..100 {
            if let Ok(l) = TcpListener::bind(("127.0.0.1", self.port)).await {
                self.serve(l);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("upstream {}: cannot rebind port {}", self.name, self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// Upgrade request heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn upgrades(&self) -> usize {
        self.heads.lock().unwrap().len()
    }

    pub fn health_checks(&self) -> usize {
        *self.health_checks.lock().unwrap()
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
}

struct Conn {
    name: String,
    heads: Arc<Mutex<Vec<String>>>,
    healthy: Arc<AtomicBool>,
    checks: Arc<Mutex<usize>>,
}

impl Conn {
    async fn run(self, mut tcp: TcpStream) {
        let Ok((head, rest)) = super::target::read_head(&mut tcp).await else {
            return;
        };
        let head = String::from_utf8_lossy(&head).to_string();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let name = &self.name;
        if path.starts_with("/health") {
            *self.checks.lock().unwrap() += 1;
            let ok = self.healthy.load(Ordering::SeqCst);
            let status = if ok {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = tcp
                .write_all(
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                )
                .await;
            return;
        }
        if path.starts_with("/forbid") {
            let body = format!("forbidden by {name}");
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Upstream: {name}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            // Keep-alive: the relay must end the exchange itself.
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return;
        }
        if path.starts_with("/plain") {
            let chunk = format!("hello from {name}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nX-Upstream: {name}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
                chunk.len()
            );
            let _ = tcp.write_all(answer.as_bytes()).await;
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            return;
        }
        self.heads.lock().unwrap().push(head.clone());
        let key = head_header(&head, "sec-websocket-key").unwrap_or_default();
        let offered = head_header(&head, "sec-websocket-protocol").unwrap_or_default();
        let chosen = offered
            .split(',')
            .map(str::trim)
            .find(|p| PROTOCOLS.contains(p));
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Upstream: {name}\r\n",
            derive_accept_key(key.as_bytes())
        );
        if let Some(p) = chosen {
            answer.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        answer.push_str("\r\n");
        if tcp.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let mut ws = WebSocketStream::from_partially_read(tcp, rest, Role::Server, None).await;
        if ws.send(Message::text(name.clone())).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(_) = msg {
                let _ = ws.close(None).await;
                return;
            }
            let data = matches!(msg, Message::Text(_) | Message::Binary(_));
            if data && ws.send(msg).await.is_err() {
                return;
            }
        }
    }
}
