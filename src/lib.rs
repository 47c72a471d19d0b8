//! ws-relay-core: a thread-per-core io_uring WebSocket relay engine.
//!
//! The layout mirrors the architecture in SPEC.md §1:
//! - [`config`]: `config.toml` model and validation.
//! - [`shard`]: one pinned thread per core, its runtime, listener and state.
//! - [`http`]: the HTTP/1.1 front door (request heads, plain responses).
//! - [`ws`]: WebSocket frame headers and handshakes, parsed only where needed.
//! - [`relay`]: the relay session: auth, target dial, passthrough.
//! - [`net`]: socket options, DNS off the shard, buffer and pipe pools.
//! - [`tls`]: listener certificates and target trust (rustls, ring).
//! - [`control`]: the main thread's control plane (reload, signals, shutdown).
//! - [`hub`]: the push hub (user-grouped clients, push API, Redis).
//! - [`fanout`]: shared-frame delivery to many WebSocket clients.
//! - [`doctor`]: compares live kernel settings with `tuning/`.
//! - [`demo`]: the Axum seed's echo/broadcast demo app.
//! - [`page`]: the single-file browser test page.
//! - [`metrics`]: per-shard counters and the Prometheus `/metrics` text.

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
