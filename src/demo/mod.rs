//! The demo app (docs/demo.md "Demo app protocol", the Axum seed's protocol) at `[demo] path`: a
//! WebSocket endpoint that greets with a connection id and answers `echo`,
//! `broadcast` (to every demo connection on every shard) and
//! `get_connections` (process-wide).
//!
//! - this file: one demo session, from the upgrade to the close, and
//!   delivering broadcasts on a shard. The connection itself is the
//!   fan-out's `ServerWs` (the same as a hub client's): one outbox per
//!   session drains in order, a client that sends faster than it reads is
//!   slowed, one that reads too slowly for the broadcasts is closed with
//!   1013.
//! - `protocol`: the JSON messages.
//!
//! Must not: disconnect on a bad request (it gets an error response), or
//! let one slow client delay another.

pub mod protocol;

use std::rc::Rc;
use std::sync::Arc;

use tracing::{debug, info};

use self::protocol::Request;
use crate::config::ServerConfig;
use crate::ctx::{Accepted, ShardCtx};
use crate::fanout::{
    text_frame, Audience, Bus, Census, End, Flow, Frame, Outbox, Registry, ServerWs, Space,
};
use crate::http::response;
use crate::metrics::SessionKind;
use crate::msg::ShardMsg;
use crate::ws::handshake::{accept_response, upgrade_key};
use crate::ws::message::{Message, Mode};

/// The demo's part of a shard: its connections, and the way to the others.
pub struct ShardDemo {
    registry: Registry,
    bus: Bus,
}

impl ShardDemo {
    pub fn new(peers: &Arc<[flume::Sender<ShardMsg>]>, census: Arc<Census>) -> ShardDemo {
        ShardDemo {
            registry: Registry::new(Space::Demo, census),
            bus: Bus::new(peers.clone()),
        }
    }
}

pub async fn run(shard: &ShardCtx, demo: &ShardDemo, cfg: Rc<ServerConfig>, req: Accepted) {
    let Accepted {
        client,
        peer,
        head,
        rest,
        over_capacity,
        deadline: _,
    } = req;
    if over_capacity {
        let body = response::error_json(503, "over_capacity", "server is at max_connections");
        return client.close_after(&body, &shard.buffers).await;
    }
    let Some(key) = upgrade_key(&head) else {
        let body = response::error_json(
            400,
            "bad_request",
            "missing Sec-WebSocket-Key or version is not 13",
        );
        return client.close_after(&body, &shard.buffers).await;
    };
    drop(head);
    if client
        .write_all(&accept_response(&key, None))
        .await
        .is_err()
    {
        return;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let outbox = Rc::new(Outbox::new(cfg.demo.max_queue_messages));
    let member = demo.registry.join(outbox.clone());
    let _open = shard.metrics.session(SessionKind::Demo);
    debug!(shard = shard.id, peer = %peer.ip(), connection_id = %id, "demo connection open");
    outbox.push_own(&text_frame(protocol::connected(&id).as_bytes()));
    let limit = cfg.demo.max_message_bytes;
    let mut ws = ServerWs::new(&client, outbox.clone(), Mode::SkipOversize, limit, rest);
    let end = ws
        .run(&shard.close_all, |m| {
            let reply = match m {
                Message::Text(t) => return answer(shard, demo, &outbox, &id, t),
                Message::Binary(_) => {
                    refusal("binary_not_supported", "send requests as text messages")
                }
                _ => refusal(
                    "message_too_large",
                    &format!("messages are limited to {limit} bytes"),
                ),
            };
            outbox.push_own(&text_frame(reply.as_bytes()));
            Flow::Continue
        })
        .await;
    drop(member);
    if let End::Protocol(e) = &end {
        debug!(shard = shard.id, connection_id = %id, "demo framing error: {e}");
    }
    info!(shard = shard.id, connection_id = %id, end = ?end, "demo connection closed");
}

fn refusal(code: &'static str, message: &str) -> String {
    protocol::error_response(&protocol::Refusal {
        id: serde_json::Value::Null,
        code,
        message: message.into(),
    })
}

/// Answers one request. A broadcast yields, so the recipients' writers run
/// before this client's next request: a burst of broadcasts from one client
/// must not fill everyone's queue in a single poll.
fn answer(shard: &ShardCtx, demo: &ShardDemo, outbox: &Outbox, from: &str, text: &[u8]) -> Flow {
    let everywhere = demo.registry.everywhere();
    let reply = match protocol::parse(text) {
        Err(r) => {
            debug!(
                shard = shard.id,
                code = r.code,
                "demo request refused: {}",
                r.message
            );
            protocol::error_response(&r)
        }
        Ok(Request::Echo { id, message }) => protocol::echo_response(&id, &message),
        Ok(Request::GetConnections { id }) => protocol::connections_response(&id, everywhere),
        Ok(Request::Broadcast { id, message }) => {
            let reply = protocol::broadcast_response(&id, everywhere);
            outbox.push_own(&text_frame(reply.as_bytes()));
            // Serialized and framed once; every recipient shares the bytes.
            let note = protocol::broadcast_notification(from, &message);
            let frame = text_frame(note.as_bytes());
            demo.bus
                .send_to_others(shard.id, Space::Demo, &Audience::All, &frame);
            deliver(shard, demo, &frame);
            return Flow::Yield;
        }
    };
    outbox.push_own(&text_frame(reply.as_bytes()));
    Flow::Continue
}

/// Queues a broadcast for this shard's demo connections (from the sender's
/// own shard, or the shard's message loop); counts and logs the ones it
/// found too slow. Returns how many took it.
pub fn deliver(shard: &ShardCtx, demo: &ShardDemo, frame: &Frame) -> usize {
    let reach = demo.registry.deliver(&Audience::All, frame);
    for _ in 0..reach.overflowed {
        shard.metrics.slow_consumer(SessionKind::Demo);
        info!(
            shard = shard.id,
            "demo client too slow (queue full): closing with 1013"
        );
    }
    reach.took
}
