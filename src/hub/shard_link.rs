//! A shard's own Redis connections (docs/hub.md "Several instances with
//! Redis"), on the shard's io_uring like any socket:
//!
//! - **commands**: every push this shard accepts writes its `PUBLISH` (or,
//!   with history, the append script) into one outgoing buffer; one write
//!   carries all that piled up, and replies are matched to requests in
//!   order. Many pushes in flight, no thread in between.
//! - **subscription**: the shard subscribes to the channel itself and hands
//!   each message straight to its registry: one read carries many messages,
//!   and none crosses a thread to reach a client.
//!
//! Each reconnects by itself (`RETRY` apart) and is counted in
//! [`super::HubShared`] so the instance logs once when all shards are
//! subscribed or one is lost. Delayed pushes, recoveries and presence stay
//! on the hub thread (`redis.rs`): they are rare, and may be large.
//!
//! Must not: block the shard, log the URL (it may hold a password), or let
//! a reply reach the wrong request.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::net::TcpStream;
use redis::{Cmd, IntoConnectionInfo, Value};
use tracing::{info, warn};

use super::message::{now_ms, Push};
use super::resp::{self, Reply};
use super::ShardHub;
use crate::endpoint::Endpoint;
use crate::net::dns::DnsCache;
use crate::net::event::Notify;

const RETRY: Duration = Duration::from_millis(200);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// A command whose reply takes longer fails (503); the connection stays.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 16 * 1024;

/// Where and how to log in: from `redis_url`, TCP only.
#[derive(Clone)]
pub struct Target {
    host: String,
    port: u16,
    /// `AUTH`, `SELECT` as packed commands, sent first on every connection.
    hello: Vec<Vec<u8>>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let info = url
            .into_connection_info()
            .map_err(|e| format!("hub.redis_url: {e}"))?;
        let redis::ConnectionAddr::Tcp(host, port) = info.addr else {
            return Err("hub.redis_url: only redis://host:port is supported".into());
        };
        let mut hello = Vec::new();
        if let Some(pass) = &info.redis.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &info.redis.username {
                auth.arg(user);
            }
            hello.push(auth.arg(pass).get_packed_command());
        }
        if info.redis.db != 0 {
            hello.push(redis::cmd("SELECT").arg(info.redis.db).get_packed_command());
        }
        Ok(Target { host, port, hello })
    }
}

/// Connects and logs in; the connection then speaks only RESP.
async fn open(target: &Target, dns: &DnsCache) -> Result<Conn, String> {
    let addrs = dns
        .resolve(&target.host, target.port)
        .await
        .map_err(|e| format!("cannot resolve the redis host: {e}"))?;
    let addr: SocketAddr = *addrs.first().ok_or("no address")?;
    let stream = monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut conn = Conn {
        ep: Endpoint::plain(stream),
        input: Vec::new(),
    };
    for cmd in &target.hello {
        conn.ep.write_all(cmd).await.map_err(|e| e.to_string())?;
        conn.next()
            .await?
            .map_err(|e| format!("redis refused the login: {e}"))?;
    }
    Ok(conn)
}

/// One RESP connection: what was read and not yet parsed.
struct Conn {
    ep: Endpoint,
    input: Vec<u8>,
}

impl Conn {
    /// The next reply or message, reading as needed.
    async fn next(&mut self) -> Result<Reply, String> {
        loop {
            if let Some(r) = self.parsed()? {
                return Ok(r);
            }
            self.fill().await?;
        }
    }

    /// A reply already in the input, if whole.
    fn parsed(&mut self) -> Result<Option<Reply>, String> {
        match resp::parse(&self.input).map_err(|e| e.to_string())? {
            Some((reply, used)) => {
                self.input.drain(..used);
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }

    async fn fill(&mut self) -> Result<(), String> {
        match self.ep.recv_some(&mut self.input, READ_CHUNK).await {
            Ok(0) => Err("redis closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The shard's command connection: requests queue here, one task writes
/// and reads.
pub struct Commands {
    target: Target,
    out: RefCell<Vec<u8>>,
    waiting: RefCell<VecDeque<flume::Sender<Reply>>>,
    wake: Notify,
    up: Cell<bool>,
    /// Script sources loaded on every new connection (`EVALSHA` needs them).
    scripts: Vec<String>,
}

impl Commands {
    pub fn new(target: Target, scripts: Vec<String>) -> Commands {
        Commands {
            target,
            out: RefCell::default(),
            waiting: RefCell::default(),
            wake: Notify::default(),
            up: Cell::new(false),
            scripts,
        }
    }

    /// Sends `cmd` with whatever else is queued and waits for its reply.
    pub async fn call(&self, cmd: &Cmd) -> Result<Value, String> {
        if !self.up.get() {
            return Err("redis unavailable (reconnecting)".into());
        }
        let (tx, rx) = flume::bounded(1);
        cmd.write_packed_command(&mut self.out.borrow_mut());
        self.waiting.borrow_mut().push_back(tx);
        self.wake.notify();
        // A reply that comes after the deadline goes to the dropped
        // sender: the queue stays in step.
        match monoio::time::timeout(REPLY_TIMEOUT, rx.recv_async()).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err("redis connection lost".into()),
            Err(_) => Err("redis did not answer in time".into()),
        }
    }

    /// Connects, serves, and reconnects, for the shard's life.
    pub async fn run(self: Rc<Self>, dns: Rc<DnsCache>) {
        let mut logged_down = false;
        loop {
            let err = match open(&self.target, &dns).await {
                Ok(conn) => match self.load_scripts(conn).await {
                    Ok(conn) => {
                        self.up.set(true);
                        logged_down = false;
                        let e = self.serve(conn).await;
                        self.up.set(false);
                        self.fail_all();
                        e
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            if !logged_down {
                warn!("hub: redis command connection lost on a shard: {err}; push requests get 503 until it is back");
                logged_down = true;
            }
            monoio::time::sleep(RETRY).await;
        }
    }

    async fn load_scripts(&self, mut conn: Conn) -> Result<Conn, String> {
        for source in &self.scripts {
            let load = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(source)
                .get_packed_command();
            conn.ep.write_all(&load).await.map_err(|e| e.to_string())?;
            conn.next()
                .await?
                .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        }
        Ok(conn)
    }

    /// Writes what is queued, reads what comes back, until the connection
    /// fails.
    async fn serve(&self, mut conn: Conn) -> String {
        loop {
            let pending = std::mem::take(&mut *self.out.borrow_mut());
            if !pending.is_empty() {
                if let Err(e) = conn.ep.write_all(&pending).await {
                    return e.to_string();
                }
                let mut spare = self.out.borrow_mut();
                if spare.capacity() < pending.capacity() && spare.is_empty() {
                    // Keep the bigger buffer for the next batch.
                    let mut pending = pending;
                    pending.clear();
                    *spare = pending;
                }
                continue;
            }
            loop {
                match conn.parsed() {
                    Ok(Some(reply)) => match self.waiting.borrow_mut().pop_front() {
                        Some(w) => {
                            let _ = w.send(reply);
                        }
                        None => return "redis sent a reply nobody asked for".into(),
                    },
                    Ok(None) => break,
                    Err(e) => return e,
                }
            }
            monoio::select! {
                _ = self.wake.notified() => {}
                r = conn.ep.readable() => {
                    if let Err(e) = r {
                        return e.to_string();
                    }
                    if let Err(e) = conn.fill().await {
                        return e;
                    }
                }
            }
        }
    }

    fn fail_all(&self) {
        self.out.borrow_mut().clear();
        for w in self.waiting.borrow_mut().drain(..) {
            let _ = w.send(Err("redis connection lost".into()));
        }
    }
}

/// The shard's subscription: every message on the channel, delivered to
/// this shard's own connections.
pub async fn subscribe(hub: Rc<ShardHub>, target: Target, dns: Rc<DnsCache>) {
    let channel = super::redis::names(&hub.shared.cfg.redis_prefix).0;
    let subscribe = redis::cmd("SUBSCRIBE").arg(&channel).get_packed_command();
    let mut subscribed = false;
    loop {
        let err = match open(&target, &dns).await {
            Err(e) => e,
            Ok(mut conn) => match conn.ep.write_all(&subscribe).await {
                Err(e) => e.to_string(),
                Ok(()) => listen(&hub, &mut conn, &channel, &mut subscribed).await,
            },
        };
        if subscribed {
            subscribed = false;
            let was = hub.shared.subscribed.fetch_sub(1, Ordering::AcqRel);
            if was == hub.bus.len() {
                warn!("hub: redis subscriber lost: {err}; reconnecting");
            }
        }
        monoio::time::sleep(RETRY).await;
    }
}

async fn listen(hub: &ShardHub, conn: &mut Conn, channel: &str, subscribed: &mut bool) -> String {
    loop {
        let reply = match conn.next().await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return format!("redis refused SUBSCRIBE: {e}"),
            Err(e) => return e,
        };
        let Value::Array(parts) = reply else {
            continue;
        };
        match parts.as_slice() {
            [Value::BulkString(kind), _, Value::BulkString(payload)] if kind == b"message" => {
                deliver(hub, payload);
            }
            [Value::BulkString(kind), _, Value::Int(_)] if kind == b"subscribe" => {
                *subscribed = true;
                let n = hub.shared.subscribed.fetch_add(1, Ordering::AcqRel) + 1;
                if n == hub.bus.len() {
                    info!(%channel, "hub: redis subscriber up, subscribed");
                }
            }
            _ => {}
        }
    }
}

/// A message any instance published, to this shard's connections (not
/// this instance's own when it already delivered them, history off).
fn deliver(hub: &ShardHub, payload: &[u8]) {
    if hub.registry.is_empty() {
        // Nobody here to reach: not even worth parsing.
        return;
    }
    let push: Push = match serde_json::from_slice(payload) {
        Ok(p) => p,
        Err(e) => {
            warn!("hub: ignoring a malformed message on the redis channel: {e}");
            return;
        }
    };
    if push.origin == hub.shared.instance {
        return;
    }
    let frame = push.frame(now_ms());
    hub.registry
        .deliver_at(&push.audience(), &frame, push.offset.unwrap_or(0));
}
