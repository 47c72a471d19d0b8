//! TCP over WebSocket (SPEC §8), server side: `tcp://host:port` targets,
//! bridged websockify-style (binary messages ↔ stream bytes), so noVNC-style
//! browser clients and tunnel clients reach TCP services through the relay.
//!
//! - `decode`: client frames → payload bytes (streaming, unmasked in place).
//! - `bridge`: the two pumps and the session end (both WebSocket roles).
//! - `client`: `ws-relay-core tunnel`, the forward tunnel client.
//!
//! Multiplexed reverse tunnels are not built yet (see README "Tunnels").

pub mod bridge;
pub mod client;
pub mod decode;
pub mod mux;
pub mod pipe;
pub mod publish;

/// The subprotocol websockify offers and accepts for raw binary frames.
pub const BINARY_PROTOCOL: &str = "binary";

/// The protocol to answer with: `binary` when the client offered it.
pub fn choose_protocol(offered: Option<&str>) -> Option<&'static str> {
    offered?
        .split(',')
        .any(|p| p.trim() == BINARY_PROTOCOL)
        .then_some(BINARY_PROTOCOL)
}
