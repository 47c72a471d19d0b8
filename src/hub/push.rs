//! `POST push_path`: the seed's push API over HTTP/1.1 with keep-alive
//! (HTTP/1.0 too, kept alive only when it asks, RFC 9112 §9.3).
//!
//! Owns request framing (Content-Length bodies, pipelined requests), the key
//! check and the answers. Delivery goes to every shard over the per-core
//! channels; Redis and delayed pushes go to the hub thread. Must not: log
//! keys or bodies, wait without a deadline, or block the shard.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::message::{self, now_ms, BodyError};
use super::request::{Assigned, EngineMsg};
use super::{random_id, ShardHub};
use crate::ctx::{Accepted, ShardCtx};
use crate::endpoint::Endpoint;
use crate::http::head::{parse_request_head, read_head, HeadError, RequestHead};
use crate::http::response::{error_json, error_object, reason};
use crate::http::url::query_param;

/// One answer and whether the connection stays open after it.
struct Answer {
    status: u16,
    body: String,
    keep: bool,
}

impl Answer {
    fn json(status: u16, body: String) -> Answer {
        Answer {
            status,
            body,
            keep: true,
        }
    }

    fn refuse(status: u16, msg: &str) -> Answer {
        Answer::json(
            status,
            serde_json::json!({ "code": -1, "msg": msg }).to_string(),
        )
    }

    fn closing(mut self) -> Answer {
        self.keep = false;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let conn = if self.keep { "keep-alive" } else { "close" };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

/// Serves push requests on one connection until it closes. `rest` holds
/// the bytes behind the first head; `deadline` bounds its body.
pub async fn serve(shard: &ShardCtx, hub: &ShardHub, req: Accepted) {
    let Accepted {
        client: stream,
        peer,
        mut head,
        mut rest,
        mut deadline,
        over_capacity: _,
    } = req;
    let cfg = shard.settings();
    loop {
        let answer = match read_body(
            &stream,
            &head,
            &mut rest,
            hub.shared.cfg.max_push_body_bytes,
            deadline,
        )
        .await
        {
            Err(BodyRead::Gone) => return,
            Err(BodyRead::Answer(a)) => a,
            Ok(body) => handle(hub, &head, &body, peer).await,
        };
        let close = !answer.keep || !head.keeps_alive();
        if close {
            return stream
                .close_after(&answer.closing().bytes(), &shard.buffers)
                .await;
        }
        if stream.write_all(&answer.bytes()).await.is_err() {
            return;
        }
        let keepalive = Duration::from_secs(hub.shared.cfg.keepalive_timeout_secs);
        let next = next_head(&stream, &mut rest, keepalive, &cfg).await;
        (head, deadline) = match next {
            Next::Head(h, d) => (h, d),
            Next::Closed => return,
            Next::Refuse(bytes) => return stream.close_after(&bytes, &shard.buffers).await,
        };
        if !is_api_path(hub, head.path()) {
            let a = Answer::refuse(
                404,
                "only the push API is served on a keep-alive connection",
            );
            return stream
                .close_after(&a.closing().bytes(), &shard.buffers)
                .await;
        }
    }
}

/// The push path or its presence endpoint.
fn is_api_path(hub: &ShardHub, path: &str) -> bool {
    let push = &hub.shared.cfg.push_path;
    path == push || path.strip_prefix(push.as_str()) == Some("/presence")
}

enum BodyRead {
    Gone,
    Answer(Answer),
}

/// Takes the request's body out of `rest`, reading more within `deadline`.
async fn read_body(
    stream: &Endpoint,
    head: &RequestHead,
    rest: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, BodyRead> {
    if head.header("transfer-encoding").is_some() {
        let a = Answer::refuse(400, "chunked bodies are not supported; send Content-Length");
        return Err(BodyRead::Answer(a.closing()));
    }
    let len = match head
        .header("content-length")
        .map(|v| v.trim().parse::<usize>())
    {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return Err(BodyRead::Answer(
                Answer::refuse(400, "invalid Content-Length").closing(),
            ))
        }
    };
    if len > max {
        let msg = BodyError::TooLarge(max).to_string();
        return Err(BodyRead::Answer(Answer::refuse(400, &msg).closing()));
    }
    let fill = async {
        while rest.len() < len {
            match stream
                .recv_some(rest, (len - rest.len()).min(16 * 1024))
                .await
            {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    };
    match monoio::time::timeout_at(deadline.into(), fill).await {
        Ok(true) => Ok(rest.drain(..len).collect()),
        Ok(false) => Err(BodyRead::Gone),
        Err(_) => {
            let body = error_object("request_timeout", "request body not received in time");
            Err(BodyRead::Answer(Answer::json(408, body).closing()))
        }
    }
}

enum Next {
    Head(RequestHead, Instant),
    Closed,
    Refuse(Vec<u8>),
}

/// Waits up to `keepalive` for the next request, then gives its head the
/// relay's limits: complete within `auth_timeout_secs`, size and header count.
async fn next_head(
    stream: &Endpoint,
    buf: &mut Vec<u8>,
    keepalive: Duration,
    cfg: &crate::config::ServerConfig,
) -> Next {
    if buf.is_empty() {
        // Just after an answer the next request is rarely there yet: wait
        // for readiness rather than make a recv that only says EAGAIN (one
        // syscall in four per push, `strace -c`).
        let next = async {
            stream.readable().await?;
            stream.recv_some(buf, 2048).await
        };
        match monoio::time::timeout(keepalive, next).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Next::Closed,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(cfg.auth_timeout_secs);
    let (max_bytes, max_headers) = (cfg.max_request_head_bytes, cfg.max_request_headers);
    let read = read_head(
        buf,
        async |b: &mut Vec<u8>| Ok::<_, HeadError>(stream.recv_some(b, 2048).await.unwrap_or(0)),
        |b| parse_request_head(b, max_bytes, max_headers),
    );
    match monoio::time::timeout_at(deadline.into(), read).await {
        Err(_) => Next::Refuse(error_json(
            408,
            "auth_timeout",
            "request head not received in time",
        )),
        Ok(Ok(None)) => Next::Closed,
        Ok(Err(e)) => Next::Refuse(error_json(e.status(), "bad_request", &e.to_string())),
        Ok(Ok(Some(h))) => {
            buf.drain(..h.len);
            Next::Head(
                h,
                Instant::now() + Duration::from_secs(cfg.auth_timeout_secs),
            )
        }
    }
}

/// The key from `X-API-KEY`, `API-KEY` or `?api_key=`, first non-empty.
fn presented_key(head: &RequestHead) -> Option<String> {
    let header = |n| {
        head.header(n)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    header("x-api-key")
        .or_else(|| header("api-key"))
        .or_else(|| {
            head.query()
                .and_then(|q| query_param(q, "api_key"))
                .filter(|v| !v.is_empty())
        })
}

async fn handle(hub: &ShardHub, head: &RequestHead, body: &[u8], peer: SocketAddr) -> Answer {
    let presence = head.path() != hub.shared.cfg.push_path;
    let method = if presence { "GET" } else { "POST" };
    if head.method != method {
        return Answer::refuse(405, &format!("method not allowed; use {method}"));
    }
    if !presented_key(head).is_some_and(|k| hub.shared.key_matches(&k)) {
        info!(peer = %peer.ip(), "push refused: invalid api key");
        return Answer::json(401, r#"{"code":-1,"msg":"invalid api key"}"#.into());
    }
    if presence {
        return presence_of(hub, head).await;
    }
    let req = match message::parse(body, String::new()) {
        Ok(r) => r,
        Err(e) => {
            debug!(peer = %peer.ip(), "push refused: {e}");
            return Answer::refuse(400, &e.to_string());
        }
    };
    let mut push = req.push;
    if req.delay_seconds > 0 {
        // Only stored pushes need an id (distinct sorted-set members).
        push.id = random_id();
        let delay = Duration::from_secs(req.delay_seconds.min(i64::from(u32::MAX)) as u64);
        let (tx, rx) = flume::bounded(1);
        let msg = EngineMsg::Schedule {
            push,
            delay,
            reply: tx,
        };
        return match ask(hub, msg, rx).await {
            Ok(()) => Answer::json(200, r#"{"code":0,"msg":"ok","scheduled":true}"#.into()),
            Err(e) => Answer::refuse(503, &e),
        };
    }
    push.ts = Some(now_ms());
    match (&hub.redis, hub.shared.history()) {
        (Some(link), true) => return append_redis(hub, link, push).await,
        (None, true) => return append(hub, push).await,
        (Some(link), false) => {
            // Delivered here directly; the other instances hear it through
            // Redis (their subscribers skip this instance's own).
            push.origin = hub.shared.instance.clone();
            let channel = super::redis::names(&hub.shared.cfg.redis_prefix).0;
            let json = super::redis::to_json(&push);
            let publish = redis::cmd("PUBLISH").arg(channel).arg(json).to_owned();
            if let Err(e) = link.call(&publish).await {
                return Answer::refuse(503, &format!("redis unavailable: {e}"));
            }
            let frame = push.frame(0);
            let n = hub.send_counted(&push.audience(), &frame).await;
            return delivered(n);
        }
        (None, false) => {}
    }
    let frame = push.frame(0);
    let n = hub.send_counted(&push.audience(), &frame).await;
    delivered(n)
}

/// History in Redis: one script on this shard's connection gives the push
/// its offset, keeps it and publishes it; every instance's subscribers
/// deliver it (this one's too), so nobody counts.
async fn append_redis(
    hub: &ShardHub,
    link: &super::shard_link::Commands,
    push: super::message::Push,
) -> Answer {
    let stream = super::stream::name_of(push.user.as_deref());
    let epoch = hub.epochs.borrow_mut().fresh();
    let cmd = super::redis::append_cmd(&hub.shared.cfg, &hub.append_sha, &push, &stream, epoch);
    let assigned = match link.call(&cmd).await {
        Ok(v) => super::redis::assigned(v, stream),
        Err(e) => Err(format!("redis unavailable: {e}")),
    };
    match assigned {
        Ok(a) => landed(&a, None),
        Err(e) => Answer::refuse(503, &e),
    }
}

/// Where an appended push landed, and how many connections here took it
/// when that is known.
fn landed(a: &Assigned, delivered: Option<usize>) -> Answer {
    let mut body = serde_json::json!({
        "code": 0,
        "msg": "ok",
        "stream": a.stream,
        "offset": a.offset,
        "epoch": a.epoch,
    });
    if let Some(n) = delivered {
        body["delivered"] = n.into();
    }
    Answer::json(200, body.to_string())
}

/// History in memory: the hub thread gives the push its offset, keeps it
/// and delivers it; the answer says where it landed.
async fn append(hub: &ShardHub, push: super::message::Push) -> Answer {
    // Room for every shard's count, so no shard waits to answer.
    let (counts, counted) = flume::bounded(hub.bus.len());
    let (tx, rx) = flume::bounded(1);
    let msg = EngineMsg::Append {
        push,
        counts,
        reply: tx,
    };
    let assigned = match ask(hub, msg, rx).await {
        Ok(a) => a,
        Err(e) => return Answer::refuse(503, &e),
    };
    let mut delivered = None;
    if let Some(shards) = assigned.shards {
        let mut n = 0;
        for _ in 0..shards {
            match counted.recv_async().await {
                Ok(c) => n += c,
                Err(_) => break,
            }
        }
        delivered = Some(n);
    }
    landed(&assigned, delivered)
}

/// `GET {push_path}/presence?token=U`: `U`'s connections, here and (with
/// Redis) on every other live instance.
async fn presence_of(hub: &ShardHub, head: &RequestHead) -> Answer {
    let Some(user) = head
        .query()
        .and_then(|q| query_param(q, "token"))
        .filter(|t| !t.is_empty())
    else {
        return Answer::refuse(400, "presence needs ?token=<user>");
    };
    let here = hub.shared.presence.count(&user);
    let mut instances = Vec::new();
    if here > 0 {
        instances.push((hub.shared.instance.clone(), here));
    }
    if hub.shared.redis() {
        let (tx, rx) = flume::bounded(1);
        let asked = EngineMsg::Presence {
            user: user.clone(),
            reply: tx,
        };
        if hub.shared.engine.send(asked).is_err() {
            return Answer::refuse(503, "hub is shutting down");
        }
        match rx.recv_async().await {
            Ok(Ok(others)) => instances.extend(others),
            Ok(Err(e)) => return Answer::refuse(503, &format!("redis unavailable: {e}")),
            Err(_) => return Answer::refuse(503, "hub is shutting down"),
        }
    }
    let total: usize = instances.iter().map(|(_, n)| n).sum();
    let body = serde_json::json!({
        "code": 0,
        "msg": "ok",
        "token": user,
        "connections": total,
        "instances": instances
            .iter()
            .map(|(id, n)| serde_json::json!({"instance": id, "connections": n}))
            .collect::<Vec<_>>(),
    });
    Answer::json(200, body.to_string())
}

fn delivered(n: usize) -> Answer {
    Answer::json(200, format!(r#"{{"code":0,"msg":"ok","delivered":{n}}}"#))
}

/// Sends `msg` to the hub thread and waits for its verdict.
async fn ask<T>(
    hub: &ShardHub,
    msg: EngineMsg,
    rx: flume::Receiver<Result<T, String>>,
) -> Result<T, String> {
    if hub.shared.engine.send(msg).is_err() {
        return Err("hub is shutting down".into());
    }
    rx.recv_async()
        .await
        .unwrap_or_else(|_| Err("hub is shutting down".into()))
}
