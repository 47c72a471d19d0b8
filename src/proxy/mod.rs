//! The WebSocket reverse proxy (docs/proxy.md "Reverse proxy"): `[[routes]]` send matching
//! upgrade requests to upstream pools, return the upstream's answer, then
//! pass bytes through on the relay's data path (splice or copy; no
//! re-framing, so extensions both ends negotiate just work).
//!
//! - `table`: a shard's routes, matching, health view, round robin, counters.
//! - `request`: the forwarded upgrade request (hop-by-hop, X-Forwarded-*).
//! - `response`: the upstream's answer, 101 or anything else.
//! - `session`: one proxied session.
//! - `health`: the process-wide active health checker.

pub mod health;
pub mod request;
pub mod response;
pub mod session;
pub mod table;
