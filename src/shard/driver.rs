//! Choosing the monoio driver: io_uring when the kernel allows it, the epoll
//! ("legacy") driver otherwise, with one warning saying why.

use monoio::{IoUringDriver, RuntimeBuilder};

use crate::config::DriverChoice;

/// Environment override for `server.driver` (`auto`, `io_uring`, `legacy`),
/// so tests and operators can force a driver without editing the config.
pub const DRIVER_ENV: &str = "WS_RELAY_DRIVER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Legacy,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy (epoll)",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{DRIVER_ENV}={0:?}: expected auto, io_uring or legacy")]
    BadEnv(String),
    #[error("io_uring was required (driver = \"io_uring\") but is unavailable: {0}")]
    UringRequired(String),
}

/// The effective choice: env override first, then config.
pub fn requested(config: DriverChoice) -> Result<DriverChoice, DriverError> {
    match std::env::var(DRIVER_ENV) {
        Err(_) => Ok(config),
        Ok(v) => match v.trim() {
            "" | "auto" => Ok(DriverChoice::Auto),
            "io_uring" | "iouring" | "uring" => Ok(DriverChoice::IoUring),
            "legacy" | "epoll" => Ok(DriverChoice::Legacy),
            _ => Err(DriverError::BadEnv(v)),
        },
    }
}

/// Resolves the choice to a driver; the `String` is the fallback reason for
/// the one warning `Auto` logs when io_uring is unavailable.
pub fn resolve(choice: DriverChoice) -> Result<(Driver, Option<String>), DriverError> {
    match choice {
        DriverChoice::Legacy => Ok((Driver::Legacy, None)),
        DriverChoice::IoUring => probe_uring()
            .map(|_| (Driver::IoUring, None))
            .map_err(DriverError::UringRequired),
        DriverChoice::Auto => match probe_uring() {
            Ok(()) => Ok((Driver::IoUring, None)),
            Err(why) => Ok((Driver::Legacy, Some(why))),
        },
    }
}

/// Builds (and drops) a throwaway io_uring runtime, the same way shards do.
fn probe_uring() -> Result<(), String> {
    match RuntimeBuilder::<IoUringDriver>::new()
        .with_entries(8)
        .build()
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|v| format!("kernel.io_uring_disabled = {}", v.trim()))
                .unwrap_or_else(|_| "kernel.io_uring_disabled not present".into());
            let hint = match e.raw_os_error() {
                Some(libc::ENOSYS) => "the kernel has no io_uring",
                Some(libc::EPERM) => "denied by sysctl or a seccomp profile",
                Some(libc::ENOMEM) => "RLIMIT_MEMLOCK too low for the ring",
                _ => "setup failed",
            };
            Err(format!("{e} ({hint}; {sysctl})"))
        }
    }
}
