//! The front door of every accepted connection: read the request head within
//! the auth deadline, answer plain requests, hand upgrades to the relay.
//!
//! Must not: wait without a deadline, or answer anything but
//! `Connection: close` responses (keep-alive only on the hub's push path,
//! which `hub::serve_push` owns).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use tracing::debug;

use super::Shard;
use crate::http::head::{parse_request_head, HeadError, RequestHead};
use crate::http::response;
use crate::net::endpoint::Endpoint;
use crate::net::sockopt::tune_stream;
use crate::relay::session::{self, close_after, UpgradeRequest};

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
    let Some(stream) = accept_tls(&shard, tcp, peer, deadline).await else {
        return;
    };
    let mut buf = Vec::with_capacity(1024);
    let read = read_head(
        &stream,
        &mut buf,
        cfg.max_request_head_bytes,
        cfg.max_request_headers,
    );
    let head = match monoio::time::timeout_at(deadline.into(), read).await {
        Err(_) => {
            debug!(peer = %peer.ip(), "request head not complete within auth_timeout_secs; closing");
            return close_after(
                &shard,
                &stream,
                &response::error_json(408, "auth_timeout", "request head not received in time"),
            )
            .await;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            debug!(peer = %peer.ip(), "bad request head: {e}");
            let body = response::error_json(e.status(), "bad_request", &e.to_string());
            return close_after(&shard, &stream, &body).await;
        }
        Ok(Ok(Some(h))) => h,
    };
    // Keep only what followed the head; the head buffer itself must not
    // live as long as the session.
    let rest = buf[head.len..].to_vec();
    drop(buf);
    let answer = match route(&head, &cfg.relay_path, shard.hub.as_ref()) {
        Route::Relay => {
            let req = UpgradeRequest {
                client: stream,
                peer,
                head,
                rest,
                deadline,
                over_capacity,
            };
            // Boxed: this future's size is every connection task's size, and
            // idle hub clients should not pay for the relay's state.
            return Box::pin(session::run(&shard, cfg.clone(), req)).await;
        }
        Route::HubClient(hub) => {
            return crate::hub::run_client(&shard, hub, stream, peer, head, rest, over_capacity)
                .await
        }
        Route::HubPush(hub) => {
            let push = crate::hub::serve_push(&shard, hub, stream, peer, head, rest, deadline);
            return Box::pin(push).await;
        }
        Route::Health => response::health(),
        Route::Status(status, msg) => response::error_json(status, "bad_request", msg),
    };
    close_after(&shard, &stream, &answer).await;
}

enum Route<'a> {
    Relay,
    /// A WebSocket client of the push hub (`hub.ws_path`).
    HubClient(&'a crate::hub::ShardHub),
    /// The push API (`hub.push_path`); keep-alive is allowed there only.
    HubPush(&'a crate::hub::ShardHub),
    Health,
    Status(u16, &'static str),
}

fn route<'a>(
    head: &RequestHead,
    relay_path: &str,
    hub: Option<&'a crate::hub::ShardHub>,
) -> Route<'a> {
    let upgrade = head.is_websocket_upgrade();
    let get = head.method == "GET";
    if let Some(hub) = hub {
        let cfg = &hub.shared.cfg;
        match head.path() {
            p if p == cfg.ws_path => {
                return match (get, upgrade) {
                    (true, true) => Route::HubClient(hub),
                    (true, false) => Route::Status(426, "this endpoint needs a WebSocket upgrade"),
                    (false, _) => Route::Status(405, "method not allowed"),
                }
            }
            // The push handler answers wrong methods itself, in the seed's shape.
            p if p == cfg.push_path && !upgrade => return Route::HubPush(hub),
            _ => {}
        }
    }
    match head.path() {
        "/health" if !upgrade && (get || head.method == "HEAD") => Route::Health,
        "/health" if !upgrade => Route::Status(405, "method not allowed"),
        p if p == relay_path => match (get, upgrade) {
            (true, true) => Route::Relay,
            (true, false) => Route::Status(426, "this endpoint needs a WebSocket upgrade"),
            (false, _) => Route::Status(405, "method not allowed"),
        },
        _ => Route::Status(404, "not found"),
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
        Ok(Ok(ep)) => Some(ep),
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
    loop {
        match stream.recv_some(buf, 2048).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
        if let Some(head) = parse_request_head(buf, max_bytes, max_headers)? {
            return Ok(Some(head));
        }
    }
}
