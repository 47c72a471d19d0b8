//! loadgen: the load generator of ws-relay-core. Thread-per-core on monoio
//! (io_uring, epoll fallback), with its own WebSocket client (masking,
//! fragmentation, ping/pong, both relay auth modes, wss://), a mock echo
//! target and a delay proxy, and the measuring modes `ping`, `throughput`,
//! `rate`, `connect` and `compare`. Every message carries a sequence number
//! and a send timestamp, and every echo is checked.
//!
//! Layout: `ws` (protocol pieces), `client` (connections), `server` (mock
//! targets), `payload` (the checked message), `engine` (measured sessions on
//! pinned threads), `stats`, `output` (tables, JSON, histograms, SVG), `cmd`
//! (the subcommands), `cli`, plus `clock`, `rt` and `rng` utilities.

pub mod cli;
pub mod client;
pub mod clock;
pub mod cmd;
pub mod engine;
pub mod output;
pub mod payload;
pub mod rng;
pub mod rt;
pub mod server;
pub mod stats;
pub mod ws;
