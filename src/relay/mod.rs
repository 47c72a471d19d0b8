//! The relay (docs/relay.md "Using the relay"): authenticate a client, dial the
//! target it names (`crate::dial`), and pass bytes through without
//! re-framing them (`crate::forward`); `tcp://` targets are bridged
//! (`crate::forward::bridge`).
//!
//! - `session`: one session from upgrade request to session-end log line.
//! - `auth`: both auth modes' credential extraction.
//! - `publish`: `publish://` targets, the relay side of reverse tunnels.

pub mod auth;
pub mod publish;
pub mod session;
