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
