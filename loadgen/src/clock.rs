//! Time for measurements: a raw `CLOCK_MONOTONIC` nanosecond clock (the value
//! carried inside every payload) and a sub-millisecond async timer.
//!
//! monoio's own timer wheel has 1 ms resolution, too coarse for pacing an
//! open-loop sender at tens of thousands of messages per second or for a
//! delay line that must add exactly 24 ms. [`PreciseTimer`] arms a `timerfd`
//! with an absolute deadline and waits for it to become readable through the
//! runtime (an io_uring `POLL_ADD`, or epoll readiness on the legacy driver),
//! so a waiting task never blocks its thread and never spins.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// Nanoseconds on `CLOCK_MONOTONIC`. Comparable across threads and across
/// processes on the same host (the echo server and the client agree).
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Milliseconds since the Unix epoch (for report headers only).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A one-shot, re-armable, nanosecond-precision timer for the current
/// monoio runtime. Create it inside the runtime that will await it.
pub struct PreciseTimer {
    /// The timerfd, registered with the runtime's driver. A datagram socket
    /// type is used only as a carrier for a pollable fd: nothing but
    /// readiness is ever asked of it, never a socket operation.
    carrier: monoio::net::UnixDatagram,
    fd: RawFd,
}

impl PreciseTimer {
    /// Creates the timerfd and registers it with the current runtime.
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own; ownership moves into the
        // std wrapper and from there into monoio, which closes it on drop.
        let std = unsafe { std::os::unix::net::UnixDatagram::from_raw_fd(fd) };
        let carrier = monoio::net::UnixDatagram::from_std(std)?;
        Ok(Self {
            fd: carrier.as_raw_fd(),
            carrier,
        })
    }

    /// Waits until `now_ns() >= deadline_ns`. Returns at once for a deadline
    /// that has already passed.
    pub async fn sleep_until(&mut self, deadline_ns: u64) -> io::Result<()> {
        if deadline_ns <= now_ns() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid fd and pointers; result checked.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Bounded: each pass either consumes the expiration or waits for the
        // next readiness edge; the deadline is absolute so it always comes.
        loop {
            if now_ns() >= deadline_ns {
                self.drain();
                return Ok(());
            }
            self.carrier.readable(false).await?;
            if self.drain() {
                return Ok(());
            }
        }
    }

    /// Consumes a pending expiration; true if there was one.
    fn drain(&self) -> bool {
        let mut expirations: u64 = 0;
        // SAFETY: reading 8 bytes into a u64 from our own non-blocking timerfd.
        let n = unsafe {
            libc::read(
                self.fd,
                (&mut expirations as *mut u64).cast::<libc::c_void>(),
                std::mem::size_of::<u64>(),
            )
        };
        n == std::mem::size_of::<u64>() as isize
    }
}

/// Converts a duration to whole nanoseconds, saturating.
pub fn dur_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
