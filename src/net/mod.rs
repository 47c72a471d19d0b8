//! Sockets and the resources around them: options, readiness-driven
//! non-blocking I/O, pooled buffers and pipes, and DNS that never blocks a
//! shard.

pub mod dns;
pub mod idle;
pub mod io;
pub mod pool;
pub mod sockopt;
