//! WebSocket wire format, parsed only where a feature needs it (the auth
//! message, injected Close frames). Relayed frames are never re-framed.

pub mod frame;
pub mod handshake;
