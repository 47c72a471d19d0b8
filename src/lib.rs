//! ws-relay-core: a thread-per-core io_uring WebSocket relay engine.
//!
//! The layout is docs/architecture.md "Architecture", floors from the bottom up (imports
//! point down only):
//! - [`net`], [`http`], [`ws`], [`config`], [`tls`]: sockets, pools, DNS,
//!   address policy; HTTP heads; WebSocket frames, handshakes, the error
//!   codes and target URLs; the config model; TLS identities, trust and
//!   the record layer. No feature is imported here.
//! - [`endpoint`], [`msg`], [`dial`], [`forward`], [`fanout`], [`metrics`]:
//!   one side of a session (plain or TLS); what a shard hears; reaching a
//!   target; the data plane and its session-end policy; shared-frame
//!   delivery; counters and `/metrics`.
//! - [`ctx`]: the narrow per-shard context every feature takes.
//! - Features: [`relay`], [`proxy`] (routes), [`hub`], [`demo`], [`tunnel`],
//!   and [`page`], [`doctor`], [`logging`].
//! - [`shard`]: one pinned thread per core, its listener and the one
//!   routing point (`shard/conn.rs`); [`control`]: the main thread.

pub mod config;
pub mod control;
pub mod ctx;
pub mod demo;
pub mod dial;
pub mod doctor;
pub mod endpoint;
pub mod fanout;
pub mod forward;
pub mod http;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod msg;
pub mod net;
pub mod page;
pub mod proxy;
pub mod relay;
pub mod shard;
pub mod tls;
pub mod tunnel;
pub mod ws;
