//! The relay (SPEC §2): authenticate a client, dial the target it names, and
//! pass bytes through without re-framing them.
//!
//! - `session`: one session from upgrade request to session-end log line.
//! - `auth`: both auth modes' credential extraction.
//! - `target`: dial and upgrade a parsed target.
//! - `policy`: private addresses, auth-failure throttle.
//! - `forward`: passthrough (copy and splice pumps, session-end policy).

pub mod auth;
pub mod forward;
pub mod policy;
pub mod session;
pub mod target;
