//! Reverse tunnels, relay side: a tunnel client asks for the target
//! `publish://ADDR:PORT`; when the user's `publish_ports` lists the port,
//! the relay listens there for as long as the control session lives, and
//! carries each public connection as one yamux stream over it.
//!
//! The kernel is the port registry: the listener is bound without
//! `SO_REUSEPORT`, so a second owner (another session, another shard,
//! another process) gets `EADDRINUSE` and is refused with `port_in_use`.
//! Dropping the listener at the session's end releases the port.
//!
//! Must not: listen on a port the user was not given, keep the port after
//! the control session ends, or let one stream's failure end another.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};
use tracing::{debug, info, warn};

use crate::config::User;
use crate::endpoint::Endpoint;
use crate::forward::bridge::{Keepalive, Role};
use crate::forward::mux::{self, Mux, StreamSlots};
use crate::forward::{ForwardCtx, Outcome};
use crate::net::sockopt::tune_stream;
use crate::ws::error::{ErrorCode, RelayError};

/// The target scheme of a publish request.
pub const SCHEME: &str = "publish://";
/// `Some` when `target` asks to publish: the address to listen on.
pub fn requested(target: &str) -> Option<Result<SocketAddr, RelayError>> {
    let scheme = target.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &target[SCHEME.len()..];
    Some(rest.trim_end_matches('/').parse().map_err(|_| {
        RelayError::new(
            ErrorCode::BadRequest,
            "a publish target is publish://ADDR:PORT with an IP address (publish://0.0.0.0:2222)",
        )
    }))
}

/// Listens on `addr` for `user`, refusing ports it was not given and
/// ports someone else holds.
pub fn listen(user: &User, addr: SocketAddr) -> Result<TcpListener, RelayError> {
    if !user.may_publish(addr.port()) {
        return Err(RelayError::new(
            ErrorCode::TargetForbidden,
            format!(
                "port {} is not in publish_ports of user {}",
                addr.port(),
                user.name
            ),
        ));
    }
    let opts = ListenerOpts::new().reuse_port(false).reuse_addr(true);
    TcpListener::bind_with_config(addr, &opts).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => RelayError::new(
            ErrorCode::PortInUse,
            format!("{addr} is already published or in use"),
        ),
        _ => RelayError::new(
            ErrorCode::TargetUnreachable,
            format!("cannot listen on {addr}: {e}"),
        ),
    })
}

/// Serves a control session until it ends: the bridge carries yamux over
/// the WebSocket while the listener's connections become streams. The
/// listener (and so the port) goes when this returns.
pub async fn serve(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    listener: TcpListener,
    early: Vec<u8>,
    keepalive: Keepalive,
) -> Outcome {
    let slots = StreamSlots::default();
    let work = |conn: Rc<RefCell<Mux>>| async move {
        // The client opens no streams: any it tries are refused.
        monoio::select! {
            e = mux::drive(&conn, drop) => e,
            _ = accept_loop(&listener, &conn, &slots) => None,
        }
    };
    let roles = (Role::RELAY, mux::RELAY_MODE);
    mux::control_session(ctx, roles, client, early, keepalive, work).await
}

async fn accept_loop(listener: &TcpListener, conn: &RefCell<Mux>, slots: &StreamSlots) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                warn!(
                    port,
                    "reverse tunnel: accept failed: {e}; retrying in 100 ms"
                );
                monoio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = slots.claim() else {
            warn!(port, peer = %peer, open = slots.open(), "reverse tunnel: stream limit reached; connection refused");
            continue;
        };
        let stream = match mux::open(conn).await {
            Ok(s) => s,
            Err(e) => {
                debug!(port, "reverse tunnel: cannot open a stream: {e}");
                return;
            }
        };
        tune_stream(std::os::fd::AsRawFd::as_raw_fd(&tcp));
        monoio::spawn(async move {
            let _slot = slot;
            let started = Instant::now();
            let tcp = Endpoint::plain(tcp);
            let (moved, error) = mux::carry(stream, &tcp).await;
            info!(
                port,
                peer = %peer,
                duration_ms = started.elapsed().as_millis() as u64,
                bytes_in = moved.from_tcp,
                bytes_out = moved.to_tcp,
                error = error.as_ref().map(|e| e.to_string()),
                "reverse stream end"
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_targets_are_recognised_and_checked() {
        assert!(requested("tcp://127.0.0.1:22").is_none());
        assert!(requested("wss://example.com/").is_none());
        let a = requested("publish://0.0.0.0:2222").unwrap().unwrap();
        assert_eq!(a, "0.0.0.0:2222".parse().unwrap());
        let a = requested("PUBLISH://[::1]:9000/").unwrap().unwrap();
        assert_eq!(a, "[::1]:9000".parse().unwrap());
        let e = requested("publish://localhost:22").unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(requested("publish://0.0.0.0").unwrap().is_err());
    }
}
