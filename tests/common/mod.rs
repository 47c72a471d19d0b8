//! The one harness of the over-the-wire tests (`tests/*.rs`), loaded once
//! per test binary as `mod common;`.
//!
//! - [`process`]: the relay as a child process (temp dir, free port, log,
//!   CLI, restart, stop on drop), under both [`relay`] and [`tls`].
//! - [`relay`]: the relay's config and plain `/health` probe.
//! - [`tls`]: the TLS relay (certificate files beside the config), PKI,
//!   rustls clients and TLS targets (`tests/tls_*.rs` and others).
//! - [`target`]: WebSocket targets in the test process (echo, recorder,
//!   greeter, subprotocol, vanishing) and failure targets (silent, non-101,
//!   blackhole, closed port).
//! - [`client`]: both auth modes and assertions with timeouts.
//! - [`frame`], [`http`]: raw frames and raw HTTP for byte-exact tests.
//! - [`browser`]: a real headless Chromium over CDP (`headless_chrome`).
//! - [`prom`]: `/metrics` parsed by Python's `prometheus_client`;
//!   [`python`]: finding a Python with the test packages.
//! - [`hub`]: push-hub configs, clients, push requests, a real redis-server.
//! - [`tap`]: records Close codes as sent (tungstenite rewrites 1014).
//! - [`Variant`] and the `matrix!` macros: one scenario run under each
//!   driver × forward mode × auth mode, each as its own `#[tokio::test]`.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod browser;
pub mod client;
pub mod frame;
pub mod http;
pub mod hub;
pub mod process;
pub mod prom;
pub mod python;
pub mod relay;
pub mod tap;
pub mod target;
pub mod tcp;
pub mod tls;
pub mod upstream;

pub use client::*;
pub use frame::*;
pub use relay::*;
pub use tap::*;
pub use target::*;
pub use upstream::*;

/// One cell of the test matrix.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub driver: Driver,
    pub forward: Forward,
    pub auth: AuthMode,
}

impl Variant {
    pub const fn new(driver: Driver, forward: Forward, auth: AuthMode) -> Variant {
        Variant {
            driver,
            forward,
            auth,
        }
    }

    /// The default config with this variant's driver and forward mode.
    pub fn config(&self) -> RelayConfig {
        RelayConfig::default()
            .with_driver(self.driver)
            .with_forward(self.forward)
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (inherited by the relay).
pub fn raise_nofile_limit() -> u64 {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        lim.rlim_cur as u64
    }
}

/// `matrix!(full: a, b)`: each scenario `async fn a(v: Variant)` runs as 10
/// tests (io_uring|legacy × copy|splice × first_message|header, and
/// io_uring ring × both auth modes);
/// `matrix!(engine: c)`: 6 tests (driver × copy|splice, first-message auth;
/// ring on io_uring, and on legacy where it reads as copy);
/// `matrix!(copy: d)`: 3 tests (driver, copy, first-message; io_uring ring);
/// `matrix!(auth: e)`: 2 tests (auth mode, io_uring, copy).
#[macro_export]
macro_rules! matrix {
    (full: $($s:ident),+ $(,)?) => { $(
        mod $s {
            use $crate::common::{AuthMode, Driver, Forward, Variant};
            #[tokio::test] async fn uring_copy_first_message() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_copy_header() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::Header)).await }
            #[tokio::test] async fn uring_splice_first_message() { super::$s(Variant::new(Driver::IoUring, Forward::Splice, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_splice_header() { super::$s(Variant::new(Driver::IoUring, Forward::Splice, AuthMode::Header)).await }
            #[tokio::test] async fn uring_ring_first_message() { super::$s(Variant::new(Driver::IoUring, Forward::Ring, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_ring_header() { super::$s(Variant::new(Driver::IoUring, Forward::Ring, AuthMode::Header)).await }
            #[tokio::test] async fn legacy_copy_first_message() { super::$s(Variant::new(Driver::Legacy, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_copy_header() { super::$s(Variant::new(Driver::Legacy, Forward::Copy, AuthMode::Header)).await }
            #[tokio::test] async fn legacy_splice_first_message() { super::$s(Variant::new(Driver::Legacy, Forward::Splice, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_splice_header() { super::$s(Variant::new(Driver::Legacy, Forward::Splice, AuthMode::Header)).await }
        }
    )+ };
    (engine: $($s:ident),+ $(,)?) => { $(
        mod $s {
            use $crate::common::{AuthMode, Driver, Forward, Variant};
            #[tokio::test] async fn uring_copy() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_splice() { super::$s(Variant::new(Driver::IoUring, Forward::Splice, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_ring() { super::$s(Variant::new(Driver::IoUring, Forward::Ring, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_copy() { super::$s(Variant::new(Driver::Legacy, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_splice() { super::$s(Variant::new(Driver::Legacy, Forward::Splice, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_ring() { super::$s(Variant::new(Driver::Legacy, Forward::Ring, AuthMode::FirstMessage)).await }
        }
    )+ };
    (copy: $($s:ident),+ $(,)?) => { $(
        mod $s {
            use $crate::common::{AuthMode, Driver, Forward, Variant};
            #[tokio::test] async fn uring_copy() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn legacy_copy() { super::$s(Variant::new(Driver::Legacy, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn uring_ring() { super::$s(Variant::new(Driver::IoUring, Forward::Ring, AuthMode::FirstMessage)).await }
        }
    )+ };
    (auth: $($s:ident),+ $(,)?) => { $(
        mod $s {
            use $crate::common::{AuthMode, Driver, Forward, Variant};
            #[tokio::test] async fn first_message() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::FirstMessage)).await }
            #[tokio::test] async fn header() { super::$s(Variant::new(Driver::IoUring, Forward::Copy, AuthMode::Header)).await }
        }
    )+ };
}
