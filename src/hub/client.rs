//! One hub client on `ws_path`: upgrade checks, the `?token=` group, the
//! seed's `identify` message, and the session-end log line.
//!
//! Clients cannot send into the hub: anything but a well-formed identify is
//! answered with `{"event":"error","data":{"msg":…}}` on that connection
//! only, which stays open. Must not: log tokens.
//!
//! Recovery (docs/hub.md "Recovery"): `since`/`epoch` (the user's stream)
//! and `broadcast_since`/`broadcast_epoch`, in the query or an identify,
//! hold the connection's deliveries while a companion task beside the
//! connection asks the hub thread for what was missed, then queue the
//! `recovered` events, the missed messages and what was held, in that order.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::Value;
use tracing::{debug, info, warn};

use super::jwt::JwtError;
use super::message::resolve_user;
use super::presence::{Seat, TOO_MANY};
use super::request::EngineMsg;
use super::stream::{name_of, Kind, Recovered, Want};
use super::ShardHub;
use crate::ctx::{Accepted, ShardCtx};
use crate::fanout::{text_frame, End, Flow, Membership, Outbox, ServerWs};
use crate::http::head::RequestHead;
use crate::http::response;
use crate::http::url::query_param;
use crate::net::event::Notify;
use crate::ws::handshake::accept_response;
use crate::ws::message::{Message, Mode};

/// Runs a hub client from its upgrade request to the end.
pub async fn run(shard: &ShardCtx, hub: &ShardHub, req: Accepted) {
    let Accepted {
        client,
        peer,
        head,
        rest,
        over_capacity,
        deadline: _,
    } = req;
    if let Err((status, code, msg)) = check_upgrade(hub, &head, over_capacity) {
        debug!(shard = shard.id, peer = %peer.ip(), "hub upgrade refused: {msg}");
        return client
            .close_after(&response::error_json(status, code, msg), &shard.buffers)
            .await;
    }
    let key = head
        .header("sec-websocket-key")
        .unwrap_or("")
        .trim()
        .to_string();
    let token = head
        .query()
        .and_then(|q| query_param(q, "token"))
        .filter(|t| !t.is_empty());
    let (user, expires) = match authenticate(hub, token) {
        Ok(who) => who,
        Err((code, msg)) => {
            debug!(shard = shard.id, peer = %peer.ip(), "hub upgrade refused: {msg}");
            let answer = response::error_json(401, code, &msg);
            return client.close_after(&answer, &shard.buffers).await;
        }
    };
    let asked = head
        .query()
        .map(|q| Asked::from_fields(|k| query_param(q, k)))
        .unwrap_or_default();
    drop(head);
    if client
        .write_all(&accept_response(&key, None))
        .await
        .is_err()
    {
        return;
    }
    let outbox = Rc::new(Outbox::new(hub.shared.cfg.max_queue_messages));
    let member = hub.registry.join(outbox.clone());
    let started = Instant::now();
    let mut identified = user.is_some();
    let recovery = Recovery::default();
    let mut seat = Seat::new(&hub.shared.presence);
    if seat.take(user.as_deref()) {
        recovery.ask(hub, &member, &outbox, user.as_deref(), asked);
    } else {
        // Upgraded, so a browser sees why: the Close says so.
        outbox.end_with(TOO_MANY.0, TOO_MANY.1);
    }
    let expiry = Expiry::default();
    expiry.set(expires);
    let mut ws = ServerWs::new(
        &client,
        outbox.clone(),
        Mode::Whole,
        hub.shared.cfg.max_client_message_bytes,
        rest,
    );
    let on_message = |m: Message<'_>| {
        let identity = identify(m).and_then(|(token, asked)| {
            let (user, expires) = resolve(hub, &token)?;
            Ok((user, expires, asked))
        });
        let identity = identity.and_then(|(user, expires, asked)| {
            if seat.take(user.as_deref()) {
                Ok((user, expires, asked))
            } else {
                Err(TOO_MANY.1.to_string())
            }
        });
        match identity {
            Ok((user, expires, asked)) => {
                identified |= user.is_some();
                expiry.set(expires);
                recovery.ask(hub, &member, &outbox, user.as_deref(), asked);
            }
            Err(why) => {
                debug!(shard = shard.id, peer = %peer.ip(), "hub client message refused: {why}");
                outbox.push_own(&error_event(&why));
            }
        };
        Flow::Continue
    };
    let end = monoio::select! {
        end = ws.run(&shard.close_all, on_message) => end,
        never = recovery.serve(hub, &member) => match never {},
        never = expiry.watch(&outbox) => match never {},
    };
    drop(member);
    drop(seat);
    if end == End::Slow {
        let total = hub.shared.count_slow();
        warn!(
            shard = shard.id,
            peer = %peer.ip(),
            slow_closed_total = total,
            max_queue_messages = hub.shared.cfg.max_queue_messages,
            "hub client too slow: queue full, closed with 1013"
        );
    }
    info!(
        shard = shard.id,
        peer = %peer.ip(),
        identified,
        duration_ms = started.elapsed().as_millis() as u64,
        end = ?end,
        "hub client end"
    );
}

fn check_upgrade(
    hub: &ShardHub,
    head: &RequestHead,
    over_capacity: bool,
) -> Result<(), (u16, &'static str, &'static str)> {
    let version_ok = head
        .header("sec-websocket-version")
        .is_some_and(|v| v.trim() == "13");
    if !version_ok
        || head
            .header("sec-websocket-key")
            .is_none_or(|k| k.trim().is_empty())
    {
        return Err((
            400,
            "bad_request",
            "missing Sec-WebSocket-Key or version is not 13",
        ));
    }
    let allowed = &hub.shared.cfg.allowed_origins;
    if let Some(origin) = head.header("origin") {
        if !allowed.is_empty() && !allowed.iter().any(|a| a == origin.trim()) {
            return Err((403, "origin_forbidden", "Origin not in hub.allowed_origins"));
        }
    }
    if over_capacity {
        return Err((503, "over_capacity", "server is at max_connections"));
    }
    Ok(())
}

/// What a client asked to recover: `since`/`epoch` for its user's stream,
/// `broadcast_since`/`broadcast_epoch` for the broadcast one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Asked {
    user: Option<(u64, String)>,
    broadcast: Option<(u64, String)>,
    /// A position that is not a number, or an offset without its epoch.
    malformed: bool,
}

impl Asked {
    fn from_fields(get: impl Fn(&str) -> Option<String>) -> Asked {
        let mut a = Asked::default();
        let mut pair = |since: &str, epoch: &str| match (get(since), get(epoch)) {
            (None, None) => None,
            (Some(s), Some(e)) => match s.trim().parse::<u64>() {
                Ok(n) => Some((n, e)),
                Err(_) => {
                    a.malformed = true;
                    None
                }
            },
            _ => {
                a.malformed = true;
                None
            }
        };
        let user = pair("since", "epoch");
        let broadcast = pair("broadcast_since", "broadcast_epoch");
        Asked {
            user,
            broadcast,
            ..a
        }
    }

    fn is_empty(&self) -> bool {
        self.user.is_none() && self.broadcast.is_none() && !self.malformed
    }
}

/// A connection's recoveries: what is asked, and the companion task that
/// serves it while the connection runs.
#[derive(Default)]
struct Recovery {
    wants: RefCell<Option<Vec<Want>>>,
    wake: Notify,
}

impl Recovery {
    /// Moves the connection to `user` and, when it asked, holds its
    /// deliveries and hands the wants to [`Recovery::serve`]. Both in one
    /// step, so nothing delivered after the move escapes the hold.
    fn ask(
        &self,
        hub: &ShardHub,
        member: &Membership<'_>,
        outbox: &Outbox,
        user: Option<&str>,
        asked: Asked,
    ) {
        member.set_group(user);
        if asked.is_empty() {
            return;
        }
        let refuse = |msg| outbox.push_own(&error_event(msg));
        if asked.malformed {
            return refuse(
                "since/epoch (and broadcast_since/broadcast_epoch) go together; since is an offset",
            );
        }
        if !hub.shared.history() {
            return refuse("history is off on this hub ([hub] history_size): nothing to recover");
        }
        let mut wants = Vec::new();
        if let Some((since, epoch)) = asked.user {
            let Some(u) = user else {
                return refuse("since/epoch recover a user's stream: connect with a token (broadcast_since/broadcast_epoch for broadcasts)");
            };
            wants.push(Want {
                kind: Kind::User,
                stream: name_of(Some(u)),
                since,
                epoch,
            });
        }
        if let Some((since, epoch)) = asked.broadcast {
            wants.push(Want {
                kind: Kind::Broadcast,
                stream: name_of(None),
                since,
                epoch,
            });
        }
        let cfg = &hub.shared.cfg;
        member.hold(cfg.history_size.max(cfg.max_queue_messages));
        *self.wants.borrow_mut() = Some(wants);
        self.wake.notify();
    }

    /// Serves each ask in turn; never returns (the connection's end drops it).
    async fn serve(&self, hub: &ShardHub, member: &Membership<'_>) -> std::convert::Infallible {
        loop {
            let Some(wants) = self.wants.borrow_mut().take() else {
                self.wake.notified().await;
                continue;
            };
            let (tx, rx) = flume::bounded(1);
            let read = match hub.shared.engine.send(EngineMsg::Recover {
                wants: wants.clone(),
                reply: tx,
            }) {
                Ok(()) => rx
                    .recv_async()
                    .await
                    .unwrap_or_else(|_| Err("hub is shutting down".into())),
                Err(_) => Err("hub is shutting down".into()),
            };
            if self.wants.borrow().is_some() {
                // Asked again meanwhile (a new identify): that ask wins.
                continue;
            }
            let (backlog, floors) = match read {
                Ok(found) => queue_of(hub, found),
                Err(e) => {
                    debug!("hub recovery failed: {e}");
                    let failed = wants.iter().map(|w| Recovered {
                        kind: w.kind,
                        recovered: false,
                        top: 0,
                        epoch: String::new(),
                        frames: Vec::new(),
                    });
                    let mut q = vec![error_event("recovery failed: history unavailable")];
                    q.extend(failed.map(|r| r.event()));
                    (q, [0; 2])
                }
            };
            member.release(backlog, floors);
        }
    }
}

/// The frames a recovery queues (each stream's `recovered` event, then its
/// missed messages) and each lane's floor; counts them for `/metrics`.
fn queue_of(hub: &ShardHub, found: Vec<Recovered>) -> (Vec<crate::fanout::Frame>, [u64; 2]) {
    let c = &hub.shared.counters;
    let mut floors = [0; 2];
    let mut backlog = Vec::with_capacity(found.iter().map(|r| r.frames.len() + 1).sum());
    for r in found {
        let counter = if r.recovered {
            &c.recovered
        } else {
            &c.not_recovered
        };
        counter.fetch_add(1, Ordering::Relaxed);
        c.replayed
            .fetch_add(r.frames.len() as u64, Ordering::Relaxed);
        floors[r.kind.lane()] = r.top;
        backlog.push(r.event());
        backlog.extend(r.frames);
    }
    (backlog, floors)
}

/// The token an identify (or, the same, a `refresh`) message carries and
/// the recovery it asks for.
fn identify(m: Message<'_>) -> Result<(Value, Asked), String> {
    let Message::Text(payload) = m else {
        return Err("only text identify messages are accepted".into());
    };
    let v: Value = serde_json::from_slice(payload).map_err(|_| "message is not JSON")?;
    if !matches!(
        v.get("event").and_then(Value::as_str),
        Some("identify" | "refresh")
    ) {
        return Err(
            "clients may only send {\"event\":\"identify\",\"data\":{\"token\":…}} (or refresh)"
                .into(),
        );
    }
    let data = v.get("data");
    let token = data
        .and_then(|d| d.get("token"))
        .cloned()
        .ok_or("identify needs data.token")?;
    let asked = Asked::from_fields(|k| {
        data.and_then(|d| d.get(k)).and_then(|x| match x {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    });
    Ok((token, asked))
}

/// Who a token says a connection is: its user (`None`: broadcasts only)
/// and, with `[hub.jwt]`, when the token expires.
type Identity = (Option<String>, Option<Instant>);

/// The identity a connection presents at upgrade; a refusal is answered
/// 401 with (code, reason).
fn authenticate(hub: &ShardHub, token: Option<String>) -> Result<Identity, (&'static str, String)> {
    let Some(jwt) = hub.shared.jwt() else {
        return Ok((token, None));
    };
    match token {
        Some(t) => match jwt.verify(&t) {
            Ok(v) => Ok((Some(v.user), v.expires)),
            Err(JwtError::Expired) => Err(("token_expired", JwtError::Expired.to_string())),
            Err(e) => Err(("token_invalid", e.to_string())),
        },
        None if jwt.allows_anonymous() => Ok((None, None)),
        None => Err(("token_required", "a JWT is required (?token=…)".into())),
    }
}

/// The user an identify's token names: the seed's rules, or a verified
/// JWT's `sub` and expiry.
fn resolve(hub: &ShardHub, token: &Value) -> Result<Identity, String> {
    let Some(jwt) = hub.shared.jwt() else {
        return Ok((resolve_user(token), None));
    };
    match token {
        Value::String(t) => {
            let v = jwt.verify(t).map_err(|e| e.to_string())?;
            Ok((Some(v.user), v.expires))
        }
        Value::Null if jwt.allows_anonymous() => Ok((None, None)),
        _ => Err("data.token must be a JWT".into()),
    }
}

/// When the connection's token expires; a refresh moves it.
#[derive(Default)]
struct Expiry {
    at: std::cell::Cell<Option<Instant>>,
    moved: Notify,
}

impl Expiry {
    fn set(&self, at: Option<Instant>) {
        self.at.set(at);
        self.moved.notify();
    }

    /// Ends the connection with [`TOKEN_EXPIRED`] when the token runs out
    /// before a fresh one arrives; never returns.
    async fn watch(&self, outbox: &Outbox) -> std::convert::Infallible {
        loop {
            let Some(at) = self.at.get() else {
                self.moved.notified().await;
                continue;
            };
            monoio::select! {
                _ = monoio::time::sleep_until(at.into()) => {
                    if self.at.get() == Some(at) {
                        outbox.end_with(TOKEN_EXPIRED.0, TOKEN_EXPIRED.1);
                        self.at.set(None);
                    }
                }
                _ = self.moved.notified() => {}
            }
        }
    }
}

/// The Close a connection gets when its JWT expires unrefreshed.
pub const TOKEN_EXPIRED: (u16, &str) = (4001, "token expired");

fn error_event(msg: &str) -> crate::fanout::Frame {
    let v = serde_json::json!({ "event": "error", "data": { "msg": msg } });
    text_frame(v.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_rules() {
        let id = |s: &str| identify(Message::Text(s.as_bytes())).map(|(t, _)| resolve_user(&t));
        assert_eq!(
            id(r#"{"event":"identify","data":{"token":"U1"}}"#),
            Ok(Some("U1".into()))
        );
        assert_eq!(
            id(r#"{"event":"refresh","data":{"token":7}}"#),
            Ok(Some("7".into()))
        );
        assert_eq!(
            id(r#"{"event":"identify","data":{"token":null}}"#),
            Ok(None)
        );
        let asked = |s: &str| identify(Message::Text(s.as_bytes())).map(|(_, a)| a);
        assert_eq!(
            asked(r#"{"event":"identify","data":{"token":"U","since":7,"epoch":"e1"}}"#),
            Ok(Asked {
                user: Some((7, "e1".into())),
                ..Asked::default()
            })
        );
        let a = asked(r#"{"event":"identify","data":{"token":"U","broadcast_since":"3","broadcast_epoch":"b"}}"#).unwrap();
        assert_eq!(a.broadcast, Some((3, "b".into())));
        assert!(
            asked(r#"{"event":"identify","data":{"token":"U","since":7}}"#)
                .unwrap()
                .malformed
        );
        assert!(
            asked(r#"{"event":"identify","data":{"token":"U","since":"x","epoch":"e"}}"#)
                .unwrap()
                .malformed
        );
        assert!(asked(r#"{"event":"identify","data":{"token":"U"}}"#)
            .unwrap()
            .is_empty());
        assert!(id(r#"{"event":"identify"}"#).is_err());
        assert!(id(r#"{"event":"push","data":{}}"#).is_err());
        assert!(id("nope").is_err());
        assert!(identify(Message::Binary(b"{}")).is_err());
    }
}
