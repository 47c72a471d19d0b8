//! The front door of every accepted connection: read the request head within
//! the auth deadline, answer plain requests (health, metrics, the test page),
//! hand upgrades to the relay, the demo app or a `[[routes]]` entry.
//! `route()` is the one place that decides.
//!
//! Must not: wait without a deadline, or answer anything but
//! `Connection: close` responses (keep-alive only on the hub's push path,
//! which `hub::serve_push` owns).

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::debug;

use super::Shard;
use crate::config::ServerConfig;
use crate::ctx::Accepted;
use crate::demo;
use crate::endpoint::Endpoint;
use crate::http::head::{self, parse_request_head, HeadError, RequestHead};
use crate::http::response;
use crate::metrics::{self, TlsSide};
use crate::net::sockopt::tune_stream;
use crate::page;
use crate::proxy::session::Routed;
use crate::proxy::table::ShardRoutes;
use crate::{hub, proxy, relay};

/// Counts a connection on its shard and process-wide while it lives.
struct ConnGuard<'a>(&'a Shard);

impl<'a> ConnGuard<'a> {
    /// Returns the guard and whether the process was already at capacity.
    fn enter(shard: &'a Shard, max: usize) -> (ConnGuard<'a>, bool) {
        shard.open.set(shard.open.get() + 1);
        let before = shard.shared.connections.fetch_add(1, Ordering::AcqRel);
        (ConnGuard(shard), max != 0 && before >= max)
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
        self.0.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn handle(shard: Rc<Shard>, tcp: TcpStream, peer: SocketAddr) {
    let cfg = shard.settings();
    let (_guard, over_capacity) = ConnGuard::enter(&shard, cfg.max_connections);
    tune_stream(tcp.as_raw_fd());
    let deadline = Instant::now() + Duration::from_secs(cfg.auth_timeout_secs);
    // This task lives as long as its connection and is as large as the
    // largest future it awaits inline, so it awaits two boxes: the opening
    // (TLS handshake and head read, the largest, ended first) and the
    // session `dispatch` builds without awaiting anything. An idle hub
    // client then pays for its own state only (docs/hub.md "Benchmarks").
    let Some(opened) = Box::pin(open(&shard, &cfg, tcp, peer, deadline)).await else {
        return;
    };
    let req = Accepted {
        client: opened.stream,
        peer,
        head: opened.head,
        rest: opened.rest,
        deadline,
        over_capacity,
    };
    dispatch(&shard, cfg, req, opened.buf).await;
}

/// The session that serves `req`, as one boxed future: the feature the
/// request is routed to, or the plain answer that closes the connection.
fn dispatch<'a>(
    shard: &'a Shard,
    cfg: Rc<ServerConfig>,
    req: Accepted,
    raw_head: Vec<u8>,
) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    let routes = shard.routes.borrow().clone();
    let answer = match route(&req.head, &cfg, &routes, shard.hub.as_deref()) {
        Route::Relay => return Box::pin(relay::session::run(shard, cfg, req)),
        Route::HubClient(hub) => return Box::pin(hub::run_client(shard, hub, req)),
        Route::HubPush(hub) => return Box::pin(hub::serve_push(shard, hub, req)),
        Route::Demo => return Box::pin(demo::run(shard, &shard.demo, cfg, req)),
        Route::Proxy(index) => {
            // Only the reverse proxy forwards the head's raw bytes.
            let routed = Routed {
                routes,
                index,
                raw_head,
            };
            return Box::pin(proxy::session::run(shard, cfg, req, routed));
        }
        Route::Metrics => {
            return Box::pin(async move {
                let answer = metrics_response(shard, &cfg, req.peer, &req.head).await;
                req.client.close_after(&answer, &shard.buffers).await
            })
        }
        Route::Page => page::response(req.head.method == "HEAD"),
        Route::Health => response::health(),
        Route::Status(status, msg) => response::error_json(status, "bad_request", msg),
    };
    Box::pin(async move { req.client.close_after(&answer, &shard.buffers).await })
}

/// A connection whose TLS handshake (if any) is done and whose request head
/// has arrived whole.
struct Opened {
    stream: Endpoint,
    head: RequestHead,
    /// The head's bytes (the proxy forwards them as they came).
    buf: Vec<u8>,
    /// What followed the head.
    rest: Vec<u8>,
}

/// TLS, then the request head, both within the auth deadline. `None` when
/// the connection ended here (answered with 408/400 where that helps).
async fn open(
    shard: &Shard,
    cfg: &ServerConfig,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<Opened> {
    let stream = accept_tls(shard, tcp, peer, deadline).await?;
    let mut buf = Vec::with_capacity(1024);
    let read = read_head(
        &stream,
        &mut buf,
        cfg.max_request_head_bytes,
        cfg.max_request_headers,
    );
    let answer = match monoio::time::timeout_at(deadline.into(), read).await {
        Ok(Ok(Some(head))) => {
            // Keep only what followed the head; the head buffer itself must
            // not live as long as the session.
            let rest = buf[head.len..].to_vec();
            buf.truncate(head.len);
            return Some(Opened {
                stream,
                head,
                buf,
                rest,
            });
        }
        Ok(Ok(None)) => return None,
        Err(_) => {
            debug!(peer = %peer.ip(), "request head not complete within auth_timeout_secs; closing");
            response::error_json(408, "auth_timeout", "request head not received in time")
        }
        Ok(Err(e)) => {
            debug!(peer = %peer.ip(), "bad request head: {e}");
            response::error_json(e.status(), "bad_request", &e.to_string())
        }
    };
    stream.close_after(&answer, &shard.buffers).await;
    None
}

enum Route<'a> {
    Relay,
    /// `[[routes]]` entry by index in the shard's route table.
    Proxy(usize),
    Demo,
    Page,
    /// A WebSocket client of the push hub (`hub.ws_path`).
    HubClient(&'a crate::hub::ShardHub),
    /// The push API (`hub.push_path`); keep-alive is allowed there only.
    HubPush(&'a crate::hub::ShardHub),
    Health,
    Metrics,
    Status(u16, &'static str),
}

/// The one routing point. Exact engine paths first (the hub's paths,
/// `/health`, `/metrics`, the test page, the relay path, the demo app), then
/// `[[routes]]` by host and longest prefix, else 404.
fn route<'a>(
    head: &RequestHead,
    cfg: &ServerConfig,
    routes: &ShardRoutes,
    hub: Option<&'a crate::hub::ShardHub>,
) -> Route<'a> {
    let upgrade = head.is_websocket_upgrade();
    if upgrade && head.version == 0 {
        // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 request.
        return Route::Status(400, "a WebSocket upgrade needs HTTP/1.1");
    }
    let get = head.method == "GET";
    let page = cfg.page.enabled && (get || head.method == "HEAD");
    let needs_upgrade = |to: Route<'a>| match (get, upgrade) {
        (true, true) => to,
        (true, false) => Route::Status(426, "this endpoint needs a WebSocket upgrade"),
        (false, _) => Route::Status(405, "method not allowed"),
    };
    if let Some(hub) = hub {
        let hub_cfg = &hub.shared.cfg;
        match head.path() {
            p if p == hub_cfg.ws_path => return needs_upgrade(Route::HubClient(hub)),
            // The push handler answers wrong methods itself, in the seed's shape.
            p if p == hub_cfg.push_path && !upgrade => return Route::HubPush(hub),
            p if !upgrade && p.strip_prefix(hub_cfg.push_path.as_str()) == Some("/presence") => {
                return Route::HubPush(hub)
            }
            _ => {}
        }
    }
    match head.path() {
        "/health" if !upgrade && (get || head.method == "HEAD") => Route::Health,
        "/health" if !upgrade => Route::Status(405, "method not allowed"),
        "/metrics" if !upgrade && get => Route::Metrics,
        "/metrics" if !upgrade => Route::Status(405, "method not allowed"),
        // Plain GETs on a WebSocket path get the page when it lives there.
        p if page && !upgrade && p == cfg.page.path => Route::Page,
        p if p == cfg.relay_path => match (get, upgrade) {
            (true, false) if page => Route::Page,
            _ => needs_upgrade(Route::Relay),
        },
        p if cfg.demo.enabled && p == cfg.demo.path => needs_upgrade(Route::Demo),
        _ => match routes.find(head) {
            Some(i) => needs_upgrade(Route::Proxy(i)),
            None => Route::Status(404, "not found"),
        },
    }
}

/// `GET /metrics`: the gathered text for loopback or token holders, 403
/// for everyone else, 503 when the scrape could not be gathered.
async fn metrics_response(
    shard: &Shard,
    cfg: &ServerConfig,
    peer: SocketAddr,
    head: &RequestHead,
) -> Vec<u8> {
    if !metrics::access::allowed(cfg, peer.ip(), head) {
        debug!(peer = %peer.ip(), "/metrics refused: not loopback and no valid metrics_token");
        return response::error_json(
            403,
            "forbidden",
            "/metrics is served to loopback clients or with the metrics token",
        );
    }
    match metrics::gather::request(&shard.scrapes).await {
        Some(text) => response::with_body(
            200,
            metrics::encode::CONTENT_TYPE,
            &text,
            "Cache-Control: no-store\r\n",
        ),
        None => response::error_json(503, "unavailable", "metrics could not be gathered"),
    }
}

/// Completes the listener's TLS handshake (when TLS is on) within the auth
/// deadline: a stalled or garbage handshake is closed like a slow request.
async fn accept_tls(
    shard: &Shard,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<Endpoint> {
    let Some(config) = shard.listener_tls() else {
        return Some(Endpoint::plain(tcp));
    };
    match monoio::time::timeout_at(deadline.into(), Endpoint::tls_server(tcp, config)).await {
        Ok(Ok(ep)) => {
            if let Some(resumed) = ep.tls_resumed() {
                shard.metrics.tls_handshake(TlsSide::Listener, resumed);
            }
            Some(ep)
        }
        Ok(Err(e)) => {
            debug!(peer = %peer.ip(), "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            debug!(peer = %peer.ip(), "TLS handshake not complete within auth_timeout_secs; closing");
            None
        }
    }
}

/// Reads until a full head has arrived. `Ok(None)` when the client closed
/// first.
async fn read_head(
    stream: &Endpoint,
    buf: &mut Vec<u8>,
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    // A read error is the client gone, like EOF.
    let read_more = async |b: &mut Vec<u8>| Ok(stream.recv_some(b, 2048).await.unwrap_or(0));
    head::read_head(buf, read_more, |b| {
        parse_request_head(b, max_bytes, max_headers)
    })
    .await
}
