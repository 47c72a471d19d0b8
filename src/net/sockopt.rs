//! Socket options the relay sets on every socket it accepts or dials.
//! Failures are ignored where an option is only an optimisation.

use std::io;
use std::os::fd::RawFd;

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call and its size is passed alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `TCP_NODELAY` + `TCP_QUICKACK`, and `O_NONBLOCK` so the relay's own
/// readiness-driven `recv`/`send`/`splice` never block a shard.
pub fn tune_stream(fd: RawFd) {
    let _ = set_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    let _ = set_int(fd, libc::IPPROTO_TCP, libc::TCP_QUICKACK, 1);
    set_nonblocking(fd);
}

pub fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Half-closes the write side so the peer sees EOF after what was sent.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on an owned descriptor.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Bytes written to the socket that the peer has not acknowledged yet
/// (`SIOCOUTQ`).
pub fn unsent_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        Ok(n.max(0) as usize)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `SO_LINGER` 0: closing the socket sends a reset (RST) instead of a FIN
/// and drops anything still unsent.
pub fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` outlives the call and its size is passed alongside.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
