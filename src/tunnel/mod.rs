//! TCP over WebSocket (docs/tunnels.md "Tunnels"): `tcp://host:port` targets,
//! bridged websockify-style (binary messages ↔ stream bytes), so noVNC-style
//! browser clients and tunnel clients reach TCP services through the relay.
//!
//! - `bridge`: the two pumps and the session end (both WebSocket roles).
//! - `client`: `ws-relay-core tunnel`, the tunnel client (forwards, stdio,
//!   and the client side of reverse tunnels).
//! - `publish`, `mux`, `pipe`: reverse tunnels (`publish://ADDR:PORT`), the
//!   relay side, yamux over the control session, and the pipe joining them.

pub mod bridge;
pub mod client;
pub mod mux;
pub mod pipe;
pub mod publish;

/// Read size of a tunnel bridge, on the relay and in the tunnel client.
/// Each read leaves as one frame, and tunnels carry bulk (SSH, databases,
/// file copies): 64 KiB reads carried 1.4x the bytes of 16 KiB ones through
/// a forward tunnel (docs/tunnels.md "Tunnel performance"). Relayed WebSocket
/// sessions keep `server.buffer_size`, since a slow reader holds its buffer.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// Tunnel buffers a shard or a tunnel client keeps for reuse.
pub const BUFFERS_KEPT: usize = 64;

/// The subprotocol websockify offers and accepts for raw binary frames.
pub const BINARY_PROTOCOL: &str = "binary";

/// The protocol to answer with: `binary` when the client offered it.
pub fn choose_protocol(offered: Option<&str>) -> Option<&'static str> {
    offered?
        .split(',')
        .any(|p| p.trim() == BINARY_PROTOCOL)
        .then_some(BINARY_PROTOCOL)
}
