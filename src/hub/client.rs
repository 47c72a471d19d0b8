//! One hub client on `ws_path`: upgrade checks, the `?token=` group, the
//! seed's `identify` message, and the session-end log line.
//!
//! Clients cannot send into the hub: anything but a well-formed identify is
//! answered with `{"event":"error","data":{"msg":…}}` on that connection
//! only, which stays open. Must not: log tokens.

use std::rc::Rc;
use std::time::Instant;

use serde_json::Value;
use tracing::{debug, info, warn};

use super::message::resolve_user;
use super::ShardHub;
use crate::ctx::{Accepted, ShardCtx};
use crate::fanout::{text_frame, End, Flow, Outbox, ServerWs};
use crate::http::head::RequestHead;
use crate::http::response;
use crate::http::url::query_param;
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
    member.set_group(token.as_deref());
    let started = Instant::now();
    let mut identified = token.is_some();
    let mut ws = ServerWs::new(
        &client,
        outbox.clone(),
        Mode::Whole,
        hub.shared.cfg.max_client_message_bytes,
        rest,
    );
    let end = ws
        .run(&shard.close_all, |m| {
            match identify(m) {
                Ok(user) => {
                    identified |= user.is_some();
                    member.set_group(user.as_deref());
                }
                Err(why) => {
                    debug!(shard = shard.id, peer = %peer.ip(), "hub client message refused: {why}");
                    outbox.push_own(&error_event(why));
                }
            };
            Flow::Continue
        })
        .await;
    drop(member);
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

/// The user an identify message names (`None`: no token, broadcasts only).
fn identify(m: Message<'_>) -> Result<Option<String>, &'static str> {
    let Message::Text(payload) = m else {
        return Err("only text identify messages are accepted");
    };
    let v: Value = serde_json::from_slice(payload).map_err(|_| "message is not JSON")?;
    if v.get("event").and_then(Value::as_str) != Some("identify") {
        return Err("clients may only send {\"event\":\"identify\",\"data\":{\"token\":…}}");
    }
    let token = v
        .get("data")
        .and_then(|d| d.get("token"))
        .ok_or("identify needs data.token")?;
    Ok(resolve_user(token))
}

fn error_event(msg: &str) -> crate::fanout::Frame {
    let v = serde_json::json!({ "event": "error", "data": { "msg": msg } });
    text_frame(v.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_rules() {
        let id = |s: &str| identify(Message::Text(s.as_bytes()));
        assert_eq!(
            id(r#"{"event":"identify","data":{"token":"U1"}}"#),
            Ok(Some("U1".into()))
        );
        assert_eq!(
            id(r#"{"event":"identify","data":{"token":7}}"#),
            Ok(Some("7".into()))
        );
        assert_eq!(
            id(r#"{"event":"identify","data":{"token":null}}"#),
            Ok(None)
        );
        assert!(id(r#"{"event":"identify"}"#).is_err());
        assert!(id(r#"{"event":"push","data":{}}"#).is_err());
        assert!(id("nope").is_err());
        assert!(identify(Message::Binary(b"{}")).is_err());
    }
}
