//! Active health checks: one thread per process (started with the first
//! route that has a `health_check`) probes every upstream of every such
//! route, and tells each shard about each up/down transition over its
//! channel.
//!
//! Owns the process-wide verdicts (kept across reloads for upstreams that
//! stay). Blocking I/O is fine here: this is never a shard. Must not: touch
//! shard state other than through `ShardMsg::UpstreamHealth`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::{HealthCheck, RouteSpec, Upstream};
use crate::msg::ShardMsg;

/// What the checker needs to probe one route.
pub struct CheckedRoute {
    pub spec: Arc<RouteSpec>,
    /// Client config for `wss://` upstreams (the route's trust).
    pub tls: Arc<rustls::ClientConfig>,
}

/// Handle to the checker thread, which starts with the first route that has
/// a `health_check` (a relay without one runs no such thread); dropping the
/// handle stops it.
pub struct HealthChecker {
    shards: Vec<flume::Sender<ShardMsg>>,
    /// The thread's inbox, once it runs.
    thread: Mutex<Option<flume::Sender<Vec<CheckedRoute>>>>,
}

impl HealthChecker {
    pub fn new(routes: Vec<CheckedRoute>, shards: Vec<flume::Sender<ShardMsg>>) -> HealthChecker {
        let checker = HealthChecker {
            shards,
            thread: Mutex::new(None),
        };
        checker.update(routes);
        checker
    }

    /// Probe this route set from now on (at start and on each reload).
    pub fn update(&self, routes: Vec<CheckedRoute>) {
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if thread.is_none() {
            if !routes.iter().any(|r| r.spec.health_check.is_some()) {
                return;
            }
            let (tx, rx) = flume::unbounded();
            let shards = self.shards.clone();
            let spawned = std::thread::Builder::new()
                .name("health".into())
                .spawn(move || run(rx, shards));
            match spawned {
                Ok(_) => *thread = Some(tx),
                Err(e) => {
                    warn!("cannot start the health-check thread: {e}; active checks are off");
                    return;
                }
            }
        }
        if let Some(tx) = thread.as_ref() {
            let _ = tx.send(routes);
        }
    }
}

struct Probe {
    route: Arc<RouteSpec>,
    check: HealthCheck,
    upstream: Upstream,
    tls: Arc<rustls::ClientConfig>,
    up: bool,
    due: Instant,
}

fn run(rx: flume::Receiver<Vec<CheckedRoute>>, shards: Vec<flume::Sender<ShardMsg>>) {
    let mut probes: Vec<Probe> = Vec::new();
    loop {
        let next = probes.iter().map(|p| p.due).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(routes) => probes = replan(probes, routes),
            Err(flume::RecvTimeoutError::Disconnected) => return,
            Err(flume::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        for p in probes.iter_mut().filter(|p| p.due <= now) {
            let verdict = probe(&p.upstream, &p.check, &p.tls);
            p.due = Instant::now() + Duration::from_secs(p.check.interval_secs);
            let up = verdict.is_ok();
            if up == p.up {
                continue;
            }
            p.up = up;
            match &verdict {
                Ok(status) => {
                    info!(route = %p.route.name, upstream = %p.upstream.url, status, "upstream is up (health check)")
                }
                Err(why) => {
                    warn!(route = %p.route.name, upstream = %p.upstream.url, "upstream is down (health check): {why}")
                }
            }
            let (route, upstream): (Arc<str>, Arc<str>) =
                (p.route.name.as_str().into(), p.upstream.url.as_str().into());
            for tx in &shards {
                let _ = tx.send(ShardMsg::UpstreamHealth {
                    route: route.clone(),
                    upstream: upstream.clone(),
                    up,
                });
            }
        }
    }
}

/// The probe list for a new route set; upstreams that stay keep their
/// verdict, so a reload neither revives a dead upstream nor buries a live one.
fn replan(old: Vec<Probe>, routes: Vec<CheckedRoute>) -> Vec<Probe> {
    let mut kept: HashMap<(String, String), bool> = old
        .into_iter()
        .map(|p| ((p.route.name.clone(), p.upstream.url.clone()), p.up))
        .collect();
    let mut probes = Vec::new();
    for r in routes {
        let Some(check) = r.spec.health_check.clone() else {
            continue;
        };
        for u in &r.spec.upstreams {
            let up = kept
                .remove(&(r.spec.name.clone(), u.url.clone()))
                .unwrap_or(true);
            probes.push(Probe {
                route: r.spec.clone(),
                check: check.clone(),
                upstream: u.clone(),
                tls: r.tls.clone(),
                up,
                due: Instant::now(),
            });
        }
    }
    probes
}

/// `GET path` on the upstream; healthy on a 2xx or 3xx status.
fn probe(
    upstream: &Upstream,
    check: &HealthCheck,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    let url = &upstream.target;
    let timeout = Duration::from_secs(check.timeout_secs);
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("{} has no address", url.host))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ws-relay-core-health\r\nConnection: close\r\n\r\n",
        check.path, url.host_header
    );
    let head = if url.secure {
        let name = crate::tls::target::server_name(&url.host)
            .ok_or_else(|| format!("{} is not a TLS server name", url.host))?;
        let conn = rustls::ClientConnection::new(tls.clone(), name).map_err(|e| e.to_string())?;
        exchange(rustls::StreamOwned::new(conn, tcp), &request)?
    } else {
        exchange(tcp, &request)?
    };
    match status_of(&head) {
        Some(s) if (200..400).contains(&s) => Ok(s),
        Some(s) => Err(format!("{} answered {s}", check.path)),
        None => Err("answer is not HTTP".into()),
    }
}

fn exchange(mut stream: impl Read + Write, request: &str) -> Result<Vec<u8>, String> {
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 256];
    let mut have = 0;
    while have < 12 {
        match stream.read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => have += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    buf.truncate(have);
    Ok(buf)
}

/// The status code of `HTTP/1.x NNN ...`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.strip_prefix(b"HTTP/1.")?;
    let code = line.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn status_line() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 x"), Some(503));
        assert_eq!(status_of(b"SSH-2.0"), None);
        assert_eq!(status_of(b"HTTP/1.1 2"), None);
    }
}
