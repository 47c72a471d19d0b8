//! Each shard's own `SO_REUSEPORT` listener, so the kernel spreads new
//! connections across shards without any user-space hand-off.

use std::net::{SocketAddr, ToSocketAddrs};

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot resolve listen address {0}:{1}")]
    Resolve(String, u16),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The address to bind. Resolved once in the control plane, before shards
/// start, so no shard ever resolves.
pub fn listen_addr(cfg: &ServerConfig) -> Result<SocketAddr, ListenError> {
    (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ListenError::Resolve(cfg.host.clone(), cfg.port))
}

pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ListenError> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(backlog.min(i32::MAX as u32) as i32)
        .tcp_fast_open(true);
    TcpListener::bind_with_config(addr, &opts).map_err(|e| ListenError::Bind(addr, e))
}
