//! WebSocket wire format: frame headers and the frames the engine builds
//! (`frame`), the streaming decoder every reader sits on (`decoder`, whose
//! `Passthrough` role follows relayed bytes without touching them), the one
//! message reader (`message`) with its payload rules (`validate`), the
//! handshake, the wire's error vocabulary (`error`: the codes peers see,
//! with their Close codes and HTTP statuses), the one session-end table
//! (`end`: who closed, why, which Close each side gets) and the target URL grammar
//! (`target`), which every feature shares.

pub mod decoder;
pub mod end;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod message;
pub mod target;
pub mod validate;
