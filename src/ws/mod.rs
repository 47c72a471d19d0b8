//! WebSocket wire format, parsed only where a feature needs it (the auth
//! message, injected Close frames). Relayed frames are never re-framed.
//! Also the wire's error vocabulary (`error`: the codes peers see, with
//! their Close codes and HTTP statuses) and the target URL grammar
//! (`target`), which every feature shares.

pub mod error;
pub mod frame;
pub mod handshake;
pub mod target;
