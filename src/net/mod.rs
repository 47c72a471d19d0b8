//! Sockets and the resources around them: options, readiness-driven
//! non-blocking I/O, pooled buffers and pipes, the provided-buffer ring,
//! DNS that never blocks a shard, the address policy and auth throttle, the
//! idle clock and the shard-local fire-once event. No feature is imported
//! here.

pub mod dns;
pub mod event;
pub mod idle;
pub mod io;
pub mod policy;
pub mod pool;
pub mod ring;
pub mod sockopt;
