//! The narrow per-shard context every feature works with: which shard it
//! runs on, the session settings and users as of now, the pools, DNS, the
//! target TLS config, the counters, the shutdown event, every shard's
//! channel, and the process-wide counters and auth throttle. Also the two
//! ways a feature refuses a session before its upgrade (the throttle check
//! and the HTTP refusal), so every feature refuses alike, and the request
//! the front door hands every feature (`Accepted`).
//!
//! Features (relay, routes, hub, demo, tunnels) take a `&ShardCtx`; the
//! shard (`shard/`) owns one and the rest of its own state (listener,
//! routes, registries) and is the one place that routes connections to the
//! features. Must not: import a feature or `shard/`; hold anything only one
//! feature needs.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use crate::config::{ServerConfig, UserTable};
use crate::endpoint::Endpoint;
use crate::fanout::Census;
use crate::forward::ForwardCtx;
use crate::http::head::RequestHead;
use crate::http::response;
use crate::metrics::ShardMetrics;
use crate::msg::ShardMsg;
use crate::net::dns::DnsCache;
use crate::net::event::Event;
use crate::net::policy::AuthThrottle;
use crate::net::pool::{BufferPool, PipePool};
use crate::net::ring::RecvRing;
use crate::ws::error::{ErrorCode, RelayError};

/// Process-wide counters and the auth throttle.
#[derive(Debug, Default)]
pub struct Shared {
    pub connections: AtomicUsize,
    pub throttle: AuthThrottle,
    /// Fan-out connections per space (the demo's `get_connections`).
    pub census: Arc<Census>,
}

/// A request the front door accepted, as it hands it to the feature that
/// serves it (relay, route, hub, demo): TLS is done and the head arrived
/// whole. The one request type every feature starts from; a feature takes
/// it apart at once (what it does not keep must not live as long as the
/// session).
pub struct Accepted {
    pub client: Endpoint,
    pub peer: SocketAddr,
    pub head: RequestHead,
    /// Client bytes that arrived behind the request head.
    pub rest: Vec<u8>,
    /// End of the auth window (accept + `auth_timeout_secs`).
    pub deadline: Instant,
    /// The process was at `max_connections` when this one arrived.
    pub over_capacity: bool,
}

/// What a feature may use of its shard. Shard-local: `Cell`/`RefCell`, no
/// locks (the throttle's mutex is touched once per connection attempt).
pub struct ShardCtx {
    pub id: usize,
    settings: RefCell<Rc<ServerConfig>>,
    pub users: RefCell<UserTable>,
    pub buffers: BufferPool,
    /// Larger buffers for tunnel bridges (`tcp://` and reverse tunnels).
    pub tunnel_buffers: BufferPool,
    /// The provided-buffer ring `forward = "ring"` receives through.
    pub ring: RecvRing,
    pub pipes: PipePool,
    pub dns: DnsCache,
    target_tls: RefCell<Arc<rustls::ClientConfig>>,
    pub shared: Arc<Shared>,
    /// Fired when the shard's shutdown grace is over.
    pub close_all: Event,
    pub metrics: ShardMetrics,
    /// Every shard's channel, indexed by shard id (this one's included),
    /// for cross-shard fan-out.
    pub peers: Arc<[flume::Sender<ShardMsg>]>,
}

/// The parts a shard builds its context from.
pub struct CtxParts {
    pub id: usize,
    pub settings: ServerConfig,
    pub users: UserTable,
    pub buffers: BufferPool,
    pub tunnel_buffers: BufferPool,
    pub ring: RecvRing,
    pub pipes: PipePool,
    pub dns: DnsCache,
    pub target_tls: Arc<rustls::ClientConfig>,
    pub shared: Arc<Shared>,
    pub peers: Arc<[flume::Sender<ShardMsg>]>,
}

impl ShardCtx {
    pub fn new(p: CtxParts) -> ShardCtx {
        ShardCtx {
            id: p.id,
            settings: RefCell::new(Rc::new(p.settings)),
            users: RefCell::new(p.users),
            buffers: p.buffers,
            tunnel_buffers: p.tunnel_buffers,
            ring: p.ring,
            pipes: p.pipes,
            dns: p.dns,
            target_tls: RefCell::new(p.target_tls),
            shared: p.shared,
            close_all: Event::default(),
            metrics: ShardMetrics::new(),
            peers: p.peers,
        }
    }

    /// Session settings as of now; a session keeps the snapshot it started
    /// with, so a reload never changes a live session's rules.
    pub fn settings(&self) -> Rc<ServerConfig> {
        self.settings.borrow().clone()
    }

    /// A reload's settings, for sessions that start from now on.
    pub fn set_settings(&self, settings: ServerConfig) {
        *self.settings.borrow_mut() = Rc::new(settings);
    }

    /// This shard's client config toward `wss://` targets.
    pub fn target_tls(&self) -> Arc<rustls::ClientConfig> {
        self.target_tls.borrow().clone()
    }

    pub fn set_target_tls(&self, config: Arc<rustls::ClientConfig>) {
        *self.target_tls.borrow_mut() = config;
    }

    /// What a session on this shard forwards with (see `ForwardCtx::new`).
    pub fn forward_ctx(&self, cfg: &ServerConfig) -> ForwardCtx<'_> {
        ForwardCtx::new(
            cfg,
            &self.metrics,
            &self.buffers,
            &self.ring,
            &self.pipes,
            &self.close_all,
        )
    }

    /// `auth_throttled` when this client's IP failed too often lately (the
    /// throttle is process-wide; relay and token routes share it).
    pub fn not_throttled(&self, cfg: &ServerConfig, peer: SocketAddr) -> Result<(), RelayError> {
        let blocked = self
            .shared
            .throttle
            .is_blocked(peer.ip(), cfg.auth_fail_limit_per_min);
        match blocked {
            false => Ok(()),
            true => Err(RelayError::new(
                ErrorCode::AuthThrottled,
                "too many failed authentications; retry later",
            )),
        }
    }

    /// Counts and logs a refused session (never a token: `e.detail` has none).
    pub fn log_refusal(&self, peer: SocketAddr, e: &RelayError) {
        self.metrics.refused(e.code.as_str());
        info!(shard = self.id, peer = %peer.ip(), code = e.code.as_str(), "session refused: {}", e.detail);
    }

    /// Refuses before the upgrade: an HTTP error with the JSON error object.
    pub async fn refuse_http(&self, client: &Endpoint, peer: SocketAddr, e: &RelayError) {
        self.log_refusal(peer, e);
        let body = response::error_json(e.code.http_status(), e.code.as_str(), &e.detail);
        client.close_after(&body, &self.buffers).await;
    }
}
