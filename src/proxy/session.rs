//! One proxied session: from an upgrade request that matched a route to
//! the session-end log line. Authenticate (token routes), claim the route's
//! and the user's slots, try upstreams round robin within the connect
//! timeout, return the upstream's answer, then pass bytes through on the
//! relay's data path.
//!
//! Must not: forward a relay credential, log a token, or hold the route
//! table borrowed across an await (the session keeps its own `Rc`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::request::{route_token, upstream_request, Forwarding, UpstreamRequest};
use super::response::{read_answer, relay_refusal, upgrade_head, Answer};
use super::table::{Rejection, ShardRoute, ShardRoutes};
use crate::config::{RouteAuth, RouteSlot, ServerConfig, SessionSlot, Upstream};
use crate::ctx::{Accepted, ShardCtx};
use crate::dial;
use crate::endpoint::Endpoint;
use crate::forward::{passthrough, ForwardCtx};
use crate::metrics::SessionKind;
use crate::ws::error::{ErrorCode, RelayError};

/// The `[[routes]]` entry an upgrade request matched: `routes.routes[index]`.
pub struct Routed {
    pub routes: Rc<ShardRoutes>,
    pub index: usize,
    /// The request head exactly as received (header spelling and order),
    /// which the upstream gets.
    pub raw_head: Vec<u8>,
}

/// Slots a session holds until it ends.
struct Admission {
    user: Option<String>,
    _user_slot: Option<SessionSlot>,
    _route_slot: RouteSlot,
}

/// An upstream that answered.
struct Reached<'a> {
    upstream: &'a Upstream,
    stream: Endpoint,
    answer: Answer,
    setup: Duration,
    /// See `UpstreamRequest::echo_protocol`.
    echo: Option<String>,
}

pub async fn run(shard: &ShardCtx, cfg: Rc<ServerConfig>, req: Accepted, routed: Routed) {
    let Routed {
        routes,
        index,
        raw_head,
    } = routed;
    let route = &routes.routes[index];
    let started = Instant::now();
    let admission = match admit(shard, &cfg, route, &req) {
        Ok(a) => a,
        Err((why, e)) => {
            route.stats.reject(why);
            info!(shard = shard.id, route = %route.spec.name, peer = %req.peer.ip(), code = e.code.as_str(), "route refused: {}", e.detail);
            return shard.refuse_http(&req.client, req.peer, &e).await;
        }
    };
    let client_tls = req.client.is_tls();
    let reached = match reach_upstream(shard, &cfg, route, &req, &raw_head, client_tls).await {
        Ok(r) => r,
        Err((why, e)) => {
            route.stats.reject(why);
            info!(shard = shard.id, route = %route.spec.name, peer = %req.peer.ip(), code = e.code.as_str(), "no upstream answered: {}", e.detail);
            return shard.refuse_http(&req.client, req.peer, &e).await;
        }
    };
    let Accepted {
        client,
        peer,
        head,
        rest,
        ..
    } = req;
    // Nothing of either handshake may live as long as the session.
    drop((head, raw_head));
    if !reached.answer.is_upgrade() {
        return relay_answer(shard, route, client, peer, reached).await;
    }
    let Reached {
        upstream,
        stream,
        answer,
        setup,
        echo,
    } = reached;
    let mut first = upgrade_head(&answer, echo.as_deref());
    let early = answer.buf[answer.head.len..].to_vec();
    let reserved_bits = answer.negotiated_extensions();
    drop((answer, echo));
    first.extend_from_slice(&early);
    if client.write_all(&first).await.is_err() {
        return;
    }
    drop(first);
    let stats = route.stats.clone();
    stats.open.set(stats.open.get() + 1);
    stats.total.set(stats.total.get() + 1);
    let _open = shard.metrics.session(SessionKind::Route);
    shard.metrics.target_setup(setup);
    let ctx = ForwardCtx {
        reserved_bits,
        ..shard.forward_ctx(&cfg)
    };
    let out = passthrough(&ctx, &client, &stream, rest, early).await;
    stats.open.set(stats.open.get() - 1);
    info!(
        shard = shard.id,
        route = %route.spec.name,
        upstream = %upstream.url,
        user = admission.user.as_deref().unwrap_or("-"),
        peer = %peer.ip(),
        client_tls,
        upstream_tls = stream.is_tls(),
        upstream_setup_us = setup.as_micros() as u64,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_up = out.bytes_up,
        bytes_down = out.bytes_down,
        closed_by = out.closed_by,
        reason = %out.reason,
        "session end"
    );
}

/// Throttle, capacity, token and slots; every refusal here opens nothing.
fn admit(
    shard: &ShardCtx,
    cfg: &ServerConfig,
    route: &ShardRoute,
    req: &Accepted,
) -> Result<Admission, (Rejection, RelayError)> {
    let spec = &route.spec;
    let ip = req.peer.ip();
    if req.over_capacity {
        return Err((
            Rejection::Capacity,
            capacity("server is at max_connections"),
        ));
    }
    let (user, user_slot) = match spec.auth {
        RouteAuth::None => (None, None),
        RouteAuth::Token => {
            shard
                .not_throttled(cfg, req.peer)
                .map_err(|e| (Rejection::Auth, e))?;
            let Some(token) = route_token(&req.head.headers, req.head.query()) else {
                let e = RelayError::new(
                    ErrorCode::AuthFailed,
                    "this route needs a token (Authorization: Bearer, ?token= or a bearer.<token> subprotocol)",
                );
                return Err((Rejection::Auth, e));
            };
            let found = shard.users.borrow().authenticate(token.as_bytes());
            let Some(user) = found else {
                shard.shared.throttle.record_failure(ip);
                return Err((
                    Rejection::Auth,
                    RelayError::new(ErrorCode::AuthFailed, "unknown token"),
                ));
            };
            if !user.may_use_route(&spec.name) {
                let e = RelayError::new(
                    ErrorCode::TargetForbidden,
                    format!("user {} may not use route {}", user.name, spec.name),
                );
                return Err((Rejection::Forbidden, e));
            }
            let Some(slot) = user.claim_session() else {
                let e = capacity(&format!(
                    "user {} has reached max_sessions ({})",
                    user.name, user.max_sessions
                ));
                return Err((Rejection::Capacity, e));
            };
            (Some(user.name.clone()), Some(slot))
        }
    };
    let Some(route_slot) = spec.claim() else {
        let e = capacity(&format!(
            "route {} is at max_connections ({})",
            spec.name, spec.max_connections
        ));
        return Err((Rejection::Capacity, e));
    };
    Ok(Admission {
        user,
        _user_slot: user_slot,
        _route_slot: route_slot,
    })
}

fn capacity(detail: &str) -> RelayError {
    RelayError::new(ErrorCode::OverCapacity, detail)
}

/// The forwarded request toward `upstream`.
fn request_for(
    route: &ShardRoute,
    upstream: &Upstream,
    req: &Accepted,
    raw_head: &[u8],
    client_tls: bool,
) -> Result<UpstreamRequest, RelayError> {
    let client_host = req.head.header("host").unwrap_or("");
    let host = if route.spec.upstream_host || client_host.is_empty() {
        upstream.target.host_header.as_str()
    } else {
        client_host
    };
    let fwd = Forwarding {
        client_ip: req.peer.ip(),
        client_tls,
        host,
        strip_credentials: route.spec.auth == RouteAuth::Token,
    };
    upstream_request(raw_head, &fwd)
        .map_err(|e| RelayError::new(ErrorCode::BadRequest, e.to_string()))
}

/// Tries the route's upstreams in round-robin order until one answers with
/// any HTTP response, all within `connect_timeout_secs`. A failed dial, TLS
/// handshake or unreadable answer marks that upstream down on this shard.
async fn reach_upstream<'r>(
    shard: &ShardCtx,
    cfg: &ServerConfig,
    route: &'r ShardRoute,
    req: &Accepted,
    raw_head: &[u8],
    client_tls: bool,
) -> Result<Reached<'r>, (Rejection, RelayError)> {
    let deadline = Instant::now() + Duration::from_secs(cfg.connect_timeout_secs);
    let candidates = route.candidates(Instant::now());
    let mut last = None;
    for (n, &i) in candidates.iter().enumerate() {
        let upstream = &route.spec.upstreams[i];
        let request = request_for(route, upstream, req, raw_head, client_tls)
            .map_err(|e| (Rejection::Unavailable, e))?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        // A silent upstream gets its share of the connect timeout, not all
        // of it, so the next one is still tried in time.
        let budget = left / (candidates.len() - n) as u32;
        let started = Instant::now();
        let attempt = try_upstream(shard, route, upstream, &request.bytes, &req.rest);
        let detail = match monoio::time::timeout(budget, attempt).await {
            Ok(Ok((stream, answer))) => {
                route.mark_succeeded(i);
                return Ok(Reached {
                    upstream,
                    stream,
                    answer,
                    setup: started.elapsed(),
                    echo: request.echo_protocol,
                });
            }
            Ok(Err(detail)) => detail,
            Err(_) => format!("no answer within {budget:?}"),
        };
        route.mark_failed(i);
        warn!(shard = shard.id, route = %route.spec.name, upstream = %upstream.url, "upstream failed, marked down on this shard: {detail}");
        last = Some(detail);
    }
    let name = &route.spec.name;
    if Instant::now() >= deadline {
        let e = RelayError::new(
            ErrorCode::TargetTimeout,
            format!("no upstream of route {name} answered within connect_timeout_secs"),
        );
        return Err((Rejection::Timeout, e));
    }
    let e = RelayError::new(
        ErrorCode::TargetUnreachable,
        format!(
            "no upstream of route {name} answered ({})",
            last.unwrap_or_default()
        ),
    );
    Err((Rejection::Unavailable, e))
}

/// Dial, TLS for `wss://`, send the request (and what the client sent
/// behind it), read the answer's head.
async fn try_upstream(
    shard: &ShardCtx,
    route: &ShardRoute,
    upstream: &Upstream,
    request: &[u8],
    rest: &[u8],
) -> Result<(Endpoint, Answer), String> {
    let url = &upstream.target;
    // Upstreams are the operator's own services, so private addresses are
    // the normal case here.
    let long = Duration::from_secs(3600);
    let tcp = dial::connect(&shard.dns, url, true, long)
        .await
        .map_err(|e| e.detail)?;
    let (stream, sent_early) = if url.secure {
        let config = route.tls.clone().unwrap_or_else(|| shard.target_tls());
        let name = crate::tls::target::server_name(&url.host)
            .ok_or_else(|| format!("{} is not a valid TLS server name", url.host))?;
        Endpoint::tls_client(tcp, config, name, request)
            .await
            .map_err(|e| format!("TLS handshake with {} failed: {e}", url.host))?
    } else {
        (Endpoint::plain(tcp), false)
    };
    if !sent_early {
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("sending the upgrade request: {e}"))?;
    }
    if !rest.is_empty() {
        stream
            .write_all(rest)
            .await
            .map_err(|e| format!("sending early client bytes: {e}"))?;
    }
    let answer = read_answer(&stream).await.map_err(|e| e.to_string())?;
    Ok((stream, answer))
}

/// The upstream refused the upgrade: return its answer as it is.
async fn relay_answer(
    shard: &ShardCtx,
    route: &ShardRoute,
    client: Endpoint,
    peer: SocketAddr,
    reached: Reached<'_>,
) {
    let status = reached.answer.head.status;
    let deadline = Instant::now() + Duration::from_secs(5);
    let sent = relay_refusal(reached.answer, &reached.stream, &client, deadline).await;
    info!(
        shard = shard.id,
        route = %route.spec.name,
        upstream = %reached.upstream.url,
        peer = %peer.ip(),
        status,
        bytes_down = sent.unwrap_or(0),
        "upstream answered without upgrading"
    );
    drop(reached.stream);
    client.close_after(&[], &shard.buffers).await;
}
