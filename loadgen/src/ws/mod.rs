//! The client side of the WebSocket opening handshake and `ws://` URLs.
//! Frames, messages and payload rules are the engine's own layer
//! (`ws_relay_core::ws`), which the client and the echo server both use.

pub mod handshake;
pub mod url;

pub use handshake::HandshakeError;
pub use url::{UrlError, WsUrl};
