//! One relay session, from a WebSocket upgrade request on `relay_path` to the
//! session-end log line: pick the auth mode, authenticate, police the
//! target, dial and upgrade it, then hand both sockets to passthrough.
//!
//! Must not: log tokens, hold the user table borrowed across an await, or
//! write to a target before the client is authenticated.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use tracing::info;

use super::auth::{self, Credentials, FirstMessageError};
use crate::config::{ServerConfig, SessionSlot, User};
use crate::ctx::{Accepted, ShardCtx};
use crate::dial::{self, TargetUpgrade};
use crate::endpoint::Endpoint;
use crate::forward::passthrough;
use crate::http::head::RequestHead;
use crate::http::response;
use crate::metrics::{SessionKind, TlsSide};
use crate::ws::error::{ErrorCode, RelayError};
use crate::ws::frame::{build_frame, close_frame, opcode};
use crate::ws::handshake::{accept_response, upgrade_key};
use crate::ws::target::{parse_target, TargetUrl};

/// The exact status message of the original protocol.
pub const CONNECTED: &str = r#"{"status":"已连接"}"#;

/// A dialed, upgraded target (or a published port) with the user it was
/// opened for.
struct Opened {
    /// Dial + TLS + upgrade toward the target.
    setup: std::time::Duration,
    user: Arc<User>,
    _slot: SessionSlot,
    url: TargetUrl,
    far: Far,
}

/// What the client's session is relayed to.
enum Far {
    /// A `ws://`, `wss://` or `tcp://` target.
    Target {
        stream: Endpoint,
        upgrade: TargetUpgrade,
    },
    /// A reverse tunnel's published port (`publish://`).
    Published(monoio::net::TcpListener),
}

impl Opened {
    /// The subprotocol to answer the client with.
    fn protocol(&self) -> Option<&str> {
        match &self.far {
            Far::Target { upgrade, .. } => upgrade.protocol.as_deref(),
            Far::Published(_) => None,
        }
    }
}

/// Runs a relay session on an upgrade request.
pub async fn run(shard: &ShardCtx, cfg: Rc<ServerConfig>, req: Accepted) {
    // Boxed: the handshake's states (refusals, the first-message read,
    // the request's leftovers) end before the session's idle life, and an
    // idle session's future should not carry their room.
    let Some(s) = Box::pin(handshake(shard, &cfg, req)).await else {
        return;
    };
    relay_opened(
        shard,
        &cfg,
        s.client,
        s.opened,
        s.rest,
        s.started,
        s.keepalive,
    )
    .await;
}

/// A client that got its 101 and whose target is open.
struct Handshaken {
    client: Endpoint,
    opened: Opened,
    /// Client bytes already read behind its request (or auth message).
    rest: Vec<u8>,
    started: Instant,
    keepalive: crate::forward::bridge::Keepalive,
}

/// Checks, authenticates and opens the target; refuses the client (and
/// returns `None`) when any of that fails.
async fn handshake(shard: &ShardCtx, cfg: &ServerConfig, req: Accepted) -> Option<Handshaken> {
    let Accepted {
        client,
        peer,
        head,
        mut rest,
        deadline,
        over_capacity,
    } = req;
    if let Err(e) = shard.not_throttled(cfg, peer) {
        shard.refuse_http(&client, peer, &e).await;
        return None;
    }
    let Some(key) = upgrade_key(&head) else {
        let e = RelayError::new(
            ErrorCode::BadRequest,
            "missing Sec-WebSocket-Key or version is not 13",
        );
        shard.refuse_http(&client, peer, &e).await;
        return None;
    };
    let creds = match auth::from_request(&head) {
        Err(e) => {
            shard.refuse_http(&client, peer, &e).await;
            return None;
        }
        Ok(c) => c,
    };
    let started = Instant::now();
    let protocols = offered_protocols(&head);
    let keepalive = crate::forward::mux::keepalive(&head);
    // Nothing of the request head may outlive the handshake.
    drop(head);
    let opened = if let Some(creds) = creds {
        // Handshake-time auth: the target is dialed before the client's 101.
        if over_capacity {
            shard.refuse_http(&client, peer, &capacity_error()).await;
            return None;
        }
        match open_target(shard, cfg, &creds, peer, protocols.as_deref()).await {
            Err(e) => {
                shard.refuse_http(&client, peer, &e).await;
                return None;
            }
            Ok(o) => {
                let answer = accept_response(&key, o.protocol());
                client.write_all(&answer).await.ok()?;
                o
            }
        }
    } else {
        // First-message auth (original protocol).
        client.write_all(&accept_response(&key, None)).await.ok()?;
        if over_capacity {
            refuse_ws(shard, &client, peer, &capacity_error()).await;
            return None;
        }
        let limit = cfg.max_auth_message_bytes;
        let read = auth::read_first_message(&client, &mut rest, limit);
        let creds = match monoio::time::timeout_at(deadline.into(), read).await {
            Err(_) => {
                let e = RelayError::new(
                    ErrorCode::AuthTimeout,
                    format!("no auth message within {}s", cfg.auth_timeout_secs),
                );
                refuse_ws(shard, &client, peer, &e).await;
                return None;
            }
            Ok(Err(FirstMessageError::ClientGone)) => return None,
            Ok(Err(FirstMessageError::Refused(e))) => {
                refuse_ws(shard, &client, peer, &e).await;
                return None;
            }
            Ok(Ok(c)) => c,
        };
        match open_target(shard, cfg, &creds, peer, None).await {
            Err(e) => {
                refuse_ws(shard, &client, peer, &e).await;
                return None;
            }
            Ok(o) => {
                let status = build_frame(opcode::TEXT, CONNECTED.as_bytes(), None);
                client.write_all(&status).await.ok()?;
                o
            }
        }
    };
    Some(Handshaken {
        client,
        opened,
        rest,
        started,
        keepalive,
    })
}

/// Flushes what each side sent early, relays, and logs the session end.
async fn relay_opened(
    shard: &ShardCtx,
    cfg: &ServerConfig,
    client: Endpoint,
    mut o: Opened,
    client_early: Vec<u8>,
    started: Instant,
    keepalive: crate::forward::bridge::Keepalive,
) {
    use crate::forward::bridge::{bridge, Role};
    let kind = match o.url.tcp {
        true => SessionKind::Tunnel,
        false => SessionKind::Relay,
    };
    let _open = shard.metrics.session(kind);
    let mut ctx = shard.forward_ctx(cfg);
    if kind == SessionKind::Tunnel || matches!(o.far, Far::Published(_)) {
        ctx.buffers = &shard.tunnel_buffers;
    }
    let (out, target_tls) = match o.far {
        Far::Published(listener) => {
            let out = super::publish::serve(&ctx, &client, listener, client_early, keepalive);
            (Box::pin(out).await, "none")
        }
        // A tcp:// target gets the client's frames decoded by the bridge.
        Far::Target { ref stream, .. } if o.url.tcp => {
            let out = bridge(&ctx, Role::RELAY, &client, stream, client_early, None);
            (Box::pin(out).await, "none")
        }
        Far::Target {
            ref stream,
            ref mut upgrade,
        } => {
            let target_early = std::mem::take(&mut upgrade.early);
            if stream.write_all(&client_early).await.is_err()
                || client.write_all(&target_early).await.is_err()
            {
                return;
            }
            let out = passthrough(&ctx, &client, stream, client_early, target_early).await;
            (out, tls_kind(stream))
        }
    };
    info!(
        shard = shard.id,
        user = %o.user.name,
        client_tls = tls_kind(&client),
        target_tls,
        target = %o.url.host_header,
        tcp = o.url.tcp,
        target_setup_us = o.setup.as_micros() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_up = out.bytes_up,
        bytes_down = out.bytes_down,
        closed_by = out.closed_by,
        reason = %out.reason,
        "session end"
    );
}

/// Authenticates, checks the target, claims a session slot, then dials and
/// upgrades. Every refusal before the dial opens no connection.
async fn open_target(
    shard: &ShardCtx,
    cfg: &ServerConfig,
    creds: &Credentials,
    peer: SocketAddr,
    protocols: Option<&str>,
) -> Result<Opened, RelayError> {
    let user = shard.users.borrow().authenticate(creds.token.as_bytes());
    let Some(user) = user else {
        shard.shared.throttle.record_failure(peer.ip());
        return Err(RelayError::new(ErrorCode::AuthFailed, "unknown token"));
    };
    if let Some(addr) = super::publish::requested(&creds.target) {
        let addr = addr?;
        let slot = claim_slot(&user)?;
        let listener = super::publish::listen(&user, addr)?;
        return Ok(Opened {
            setup: std::time::Duration::ZERO,
            url: parse_target(&format!("tcp://{addr}"))?,
            user,
            _slot: slot,
            far: Far::Published(listener),
        });
    }
    let url = parse_target(&creds.target)?;
    if !user.may_reach(&creds.target) {
        return Err(RelayError::new(
            ErrorCode::TargetForbidden,
            format!("target not allowed for user {}", user.name),
        ));
    }
    let slot = claim_slot(&user)?;
    let timeout = std::time::Duration::from_secs(cfg.connect_timeout_secs);
    let dial_started = Instant::now();
    let tls = url.secure.then(|| shard.target_tls());
    let tcp = dial::connect(&shard.dns, &url, cfg.allow_private_targets, timeout).await?;
    if url.tcp {
        let protocol = crate::forward::bridge::choose_protocol(protocols).map(str::to_string);
        return Ok(Opened {
            setup: dial_started.elapsed(),
            user,
            _slot: slot,
            url,
            far: Far::Target {
                stream: Endpoint::plain(tcp),
                upgrade: TargetUpgrade {
                    protocol,
                    early: Vec::new(),
                },
            },
        });
    }
    let request = dial::TargetRequest::new(&url, protocols);
    let (stream, sent_early) = dial::secure(tcp, &url, tls, &request, timeout).await?;
    if let Some(resumed) = stream.tls_resumed() {
        shard.metrics.tls_handshake(TlsSide::Target, resumed);
    }
    let upgrade = dial::upgrade(&stream, request, sent_early, timeout).await?;
    let setup = dial_started.elapsed();
    shard.metrics.target_setup(setup);
    Ok(Opened {
        setup,
        user,
        _slot: slot,
        url,
        far: Far::Target { stream, upgrade },
    })
}

fn claim_slot(user: &Arc<User>) -> Result<SessionSlot, RelayError> {
    user.claim_session().ok_or_else(|| {
        RelayError::new(
            ErrorCode::OverCapacity,
            format!(
                "user {} has reached max_sessions ({})",
                user.name, user.max_sessions
            ),
        )
    })
}

fn tls_kind(ep: &Endpoint) -> &'static str {
    match ep.tls_resumed() {
        None => "none",
        Some(true) => "resumed",
        Some(false) => "full",
    }
}

fn capacity_error() -> RelayError {
    RelayError::new(ErrorCode::OverCapacity, "server is at max_connections")
}

/// All offered subprotocols, joined as one header value.
fn offered_protocols(head: &RequestHead) -> Option<String> {
    let all: Vec<&str> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "sec-websocket-protocol")
        .map(|(_, v)| v.as_str())
        .collect();
    (!all.is_empty()).then(|| all.join(", "))
}

/// Refuses after the upgrade: the error message, a Close frame, then TCP
/// close once the client answers the Close or after the linger.
async fn refuse_ws(shard: &ShardCtx, client: &Endpoint, peer: SocketAddr, e: &RelayError) {
    shard.log_refusal(peer, e);
    let text = response::error_object(e.code.as_str(), &e.detail);
    let mut out = build_frame(opcode::TEXT, text.as_bytes(), None);
    out.extend(close_frame(e.code.close_code(), e.code.as_str(), None));
    client.close_after(&out, &shard.buffers).await;
}
