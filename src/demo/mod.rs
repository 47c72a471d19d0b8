//! The demo app (docs/demo.md "Demo app protocol", the Axum seed's protocol) at `[demo] path`: a
//! WebSocket endpoint that greets with a connection id and answers `echo`,
//! `broadcast` (to every demo connection on every shard) and
//! `get_connections` (process-wide).
//!
//! - this file: one demo session, from the upgrade to the close.
//! - `protocol`: the JSON messages.
//! - `fanout`: outboxes, the shard registry, cross-shard broadcast.
//!
//! One writer per session drains its [`fanout::Outbox`], so responses and
//! broadcasts leave in order and a full queue never blocks a reader.
//! Must not: disconnect on a bad request (it gets an error response), or
//! let one slow client delay another.

pub mod fanout;
pub mod protocol;

use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use self::fanout::{Next, Outbox, Registry};
use self::protocol::Request;
use crate::config::ServerConfig;
use crate::ctx::ShardCtx;
use crate::endpoint::Endpoint;
use crate::http::head::RequestHead;
use crate::http::response;
use crate::metrics::SessionKind;
use crate::ws::decoder::Role;
use crate::ws::frame::{build_frame, close_code, close_frame, opcode};
use crate::ws::handshake::accept_response;
use crate::ws::handshake::upgrade_key;
use crate::ws::message::{Message, MessageReader, Mode};

/// How long a closing session waits for its last frames to leave.
const LINGER: Duration = Duration::from_secs(2);
/// How long a client closed for being slow may take to read up to its Close
/// frame before the connection is dropped without one.
const SLOW_GRACE: Duration = Duration::from_secs(5);

/// A demo upgrade as the front door hands it over.
pub struct DemoRequest {
    pub client: Endpoint,
    pub peer: SocketAddr,
    pub head: RequestHead,
    /// Client bytes that arrived behind the request head.
    pub rest: Vec<u8>,
    /// The process was at `max_connections` when this one arrived.
    pub over_capacity: bool,
}

enum End {
    /// The reader saw the client's Close, EOF or a framing error.
    Reader,
    /// The writer sent the final Close (slow consumer).
    Writer,
    /// The final Close could not be written within [`SLOW_GRACE`].
    Stalled,
    Shutdown,
}

pub async fn run(shard: &ShardCtx, registry: &Registry, cfg: Rc<ServerConfig>, req: DemoRequest) {
    let DemoRequest {
        client,
        peer,
        head,
        rest,
        over_capacity,
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
    let _member = fanout::join(shard, registry, outbox.clone());
    let _open = shard.metrics.session(SessionKind::Demo);
    debug!(shard = shard.id, peer = %peer.ip(), connection_id = %id, "demo connection open");
    outbox.push_own(text_frame(&protocol::connected(&id)));

    let mut writer = pin!(write_loop(&client, &outbox));
    let end = monoio::select! {
        _ = read_loop(shard, registry, &client, rest, &outbox, &id) => End::Reader,
        _ = &mut writer => End::Writer,
        _ = stall_deadline(&outbox) => End::Stalled,
        _ = shard.close_all.wait() => End::Shutdown,
    };
    match end {
        End::Writer => {}
        End::Stalled => {
            debug!(shard = shard.id, connection_id = %id, "demo client never read up to its Close; dropping");
            return;
        }
        End::Reader | End::Shutdown => {
            if !outbox.is_finishing() {
                let why = "server shutting down";
                outbox.finish(close_frame(close_code::GOING_AWAY, why, None));
            }
            let _ = monoio::time::timeout(LINGER, &mut writer).await;
        }
    }
    client.shutdown_write().await;
    let _ = monoio::time::timeout(LINGER, client.discard_until_eof(&shard.buffers)).await;
    info!(shard = shard.id, connection_id = %id, "demo connection closed");
}

/// Completes [`SLOW_GRACE`] after the outbox started finishing.
async fn stall_deadline(outbox: &Outbox) {
    outbox.finishing().await;
    monoio::time::sleep(SLOW_GRACE).await;
}

fn text_frame(text: &str) -> Vec<u8> {
    build_frame(opcode::TEXT, text.as_bytes(), None)
}

/// Writes queued frames until the final Close has gone out.
async fn write_loop(client: &Endpoint, outbox: &Outbox) {
    loop {
        match outbox.next().await {
            Next::Frame(f) => {
                if client.write_all(f.bytes()).await.is_err() {
                    return;
                }
            }
            Next::Final(close) => {
                let _ = client.write_all(&close).await;
                return;
            }
        }
    }
}

/// Reads and answers requests until the client closes; queues the Close
/// reply (or the Close a framing error calls for) before returning.
async fn read_loop(
    shard: &ShardCtx,
    registry: &Registry,
    client: &Endpoint,
    mut buf: Vec<u8>,
    outbox: &Outbox,
    id: &str,
) {
    let limit = reader_limit(shard);
    let mut reader = MessageReader::new(Role::FromClient, Mode::SkipOversize, limit);
    let mut pos = 0;
    loop {
        outbox.room().await;
        if outbox.is_finishing() {
            return std::future::pending().await;
        }
        match reader.next(&mut buf, &mut pos) {
            Ok(None) => {
                // The reader holds what it needs of a frame in progress.
                buf.clear();
                pos = 0;
                match client.recv_some(&mut buf, 4096).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            Ok(Some(Message::Text(t))) => {
                if answer(shard, registry, outbox, id, t) {
                    // Let the recipients' writers run before the next
                    // request: a burst of broadcasts from one client must
                    // not fill everyone's queue in a single poll.
                    yield_now().await;
                }
            }
            Ok(Some(Message::Binary(_))) => refuse(
                outbox,
                "binary_not_supported",
                "send requests as text messages",
            ),
            Ok(Some(Message::TooLarge)) => refuse(
                outbox,
                "message_too_large",
                &format!("messages are limited to {limit} bytes"),
            ),
            Ok(Some(Message::Ping(p))) => outbox.push_own(build_frame(opcode::PONG, p, None)),
            Ok(Some(Message::Close { code, .. })) => {
                // Echo the client's code (RFC 6455 §5.5.1); keep it short.
                outbox.finish(close_frame(code.unwrap_or(1000), "", None));
                return;
            }
            Ok(Some(_)) => {}
            Err(e) => {
                debug!(shard = shard.id, connection_id = %id, "demo framing error: {e}");
                outbox.finish(close_frame(e.close_code(), &e.to_string(), None));
                return;
            }
        }
    }
}

fn reader_limit(shard: &ShardCtx) -> usize {
    shard.settings().demo.max_message_bytes
}

fn refuse(outbox: &Outbox, code: &'static str, message: &str) {
    let r = protocol::Refusal {
        id: serde_json::Value::Null,
        code,
        message: message.into(),
    };
    outbox.push_own(text_frame(&protocol::error_response(&r)));
}

/// Answers one request; `true` when it was a broadcast.
fn answer(shard: &ShardCtx, registry: &Registry, outbox: &Outbox, from: &str, text: &[u8]) -> bool {
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
        Ok(Request::GetConnections { id }) => {
            protocol::connections_response(&id, fanout::connections(shard))
        }
        Ok(Request::Broadcast { id, message }) => {
            let reply = protocol::broadcast_response(&id, fanout::connections(shard));
            outbox.push_own(text_frame(&reply));
            // Serialized and framed once; every recipient shares the bytes.
            let note = protocol::broadcast_notification(from, &message);
            let frame: Arc<[u8]> = text_frame(&note).into();
            fanout::broadcast(shard, registry, frame);
            return true;
        }
    };
    outbox.push_own(text_frame(&reply));
    false
}

/// Returns to the scheduler once (monoio has no `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
