//! `[[proxies]]`: reverse tunnels, client side. Each entry keeps one
//! control session to the relay (`publish://ADDR:PORT`); every stream the
//! relay opens on it is one public connection, carried to
//! `local_addr:local_port` on this machine.
//!
//! The session re-publishes by itself: a refusal, a lost connection or a
//! silent relay (keepalive) ends it, and after a backoff (250 ms doubling
//! to 30 s, reset once a session has lived 30 s) the client dials again.
//! Must not: give up (a relay restart must heal without the operator), or
//! let one stream's failure touch the others.

use std::rc::Rc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::config::Publish;
use super::{dial, Client, FIRST_BACKOFF};
use crate::endpoint::Endpoint;
use crate::forward::bridge::{Keepalive, Role};
use crate::forward::mux::{self, StreamSlots};

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A session that lived this long was healthy: the next failure starts the
/// backoff over.
const STABLE: Duration = Duration::from_secs(30);

/// Publishes `p` for as long as the process runs.
pub(super) async fn publish_forever(client: Rc<Client>, p: Publish) {
    let target = format!("publish://{}", p.publish);
    let mut wait = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        match dial::open(&client.cfg, client.tls.as_ref(), &client.dns, &target).await {
            Ok(tunnel) => {
                info!(name = %p.name, publish = %p.publish, local = %format_args!("{}:{}", p.local_host, p.local_port), "reverse tunnel published");
                let out = control_session(&client, &p, tunnel).await;
                warn!(
                    name = %p.name,
                    publish = %p.publish,
                    duration_ms = started.elapsed().as_millis() as u64,
                    closed_by = out.closed_by,
                    reason = %out.reason,
                    "reverse tunnel ended; publishing again"
                );
                if started.elapsed() >= STABLE {
                    wait = FIRST_BACKOFF;
                }
            }
            Err(e) => {
                warn!(name = %p.name, publish = %p.publish, "reverse tunnel not published: {e}; retrying in {wait:?}");
            }
        }
        monoio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

async fn control_session(
    client: &Rc<Client>,
    p: &Publish,
    tunnel: dial::Tunnel,
) -> crate::forward::Outcome {
    let ctx = client.forward_ctx();
    let keepalive = Keepalive::every(Duration::from_secs(client.cfg.keepalive_secs));
    let slots = StreamSlots::default();
    let work = |conn: std::rc::Rc<std::cell::RefCell<mux::Mux>>| async move {
        mux::drive(&conn, |stream| match slots.claim() {
            Some(slot) => {
                let (client, p) = (client.clone(), p.clone());
                monoio::spawn(async move {
                    let _slot = slot;
                    carry_to_local(&client, &p, stream).await;
                });
            }
            // Over the limit: dropping the stream resets it.
            None => warn!(name = %p.name, "reverse tunnel: stream limit reached; stream refused"),
        })
        .await
    };
    let roles = (Role::TUNNEL_CLIENT, mux::CLIENT_MODE);
    mux::control_session(&ctx, roles, &tunnel.ws, tunnel.early, keepalive, work).await
}

/// One public connection: dial the local service, then carry.
async fn carry_to_local(client: &Client, p: &Publish, stream: yamux::Stream) {
    let started = Instant::now();
    let local = match dial::connect(&client.dns, "local service", &p.local_host, p.local_port).await
    {
        Ok(s) => Endpoint::plain(s),
        Err(e) => {
            // Dropping the stream resets it: the public peer sees its
            // connection closed at once.
            warn!(name = %p.name, "reverse stream refused: {e}");
            return;
        }
    };
    let (moved, error) = mux::carry(stream, &local).await;
    info!(
        name = %p.name,
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_in = moved.to_tcp,
        bytes_out = moved.from_tcp,
        error = error.as_ref().map(|e| e.to_string()),
        "reverse stream end"
    );
}
