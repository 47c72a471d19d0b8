//! The WebSocket protocol pieces shared by the client and the echo server:
//! frame headers and masking, the HTTP upgrade, URLs, payload validation.

pub mod frame;
pub mod handshake;
pub mod url;

pub use frame::{FrameError, FrameHeader, OpCode};
pub use handshake::HandshakeError;
pub use url::{UrlError, WsUrl};
