//! Readiness-driven non-blocking I/O on monoio sockets.
//!
//! Why not plain io_uring reads: a read parked on an idle socket pins a
//! buffer for as long as the socket is idle. Waiting for readiness first
//! (a POLL_ADD on io_uring, epoll on the legacy driver) lets an idle session
//! hold no buffer at all; the `recv` that follows completes at once.
//! Must not: block, or hold a buffer across a readiness wait it owns.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;

/// Runs a non-blocking syscall returning a byte count: retries `EINTR`,
/// maps `EAGAIN` to `Ok(None)`.
pub fn nonblocking(mut call: impl FnMut() -> isize) -> io::Result<Option<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        match io::Error::last_os_error() {
            e if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            e if e.kind() == io::ErrorKind::Interrupted => continue,
            e => return Err(e),
        }
    }
}

/// One non-blocking `recv`. `Ok(None)` = would block.
pub fn try_recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    nonblocking(|| unsafe {
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT)
    })
}

/// One non-blocking `send`. `Ok(None)` = would block.
pub fn try_send(fd: RawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
    nonblocking(|| unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
}

/// One non-blocking vectored `sendmsg`. `Ok(None)` = would block.
pub fn try_send_vectored(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<Option<usize>> {
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix; sendmsg only reads.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len() as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    // SAFETY: `msg` points at `bufs`, valid for reads for this call.
    nonblocking(|| unsafe { libc::sendmsg(fd, &msg, flags) })
}

/// Writes all of `buf`, waiting for writability whenever the socket is full.
/// A slow reader therefore slows the writer: this is the backpressure.
pub async fn send_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    while !buf.is_empty() {
        match try_send(fd, buf)? {
            Some(n) => buf = &buf[n..],
            None => stream.writable(false).await?,
        }
    }
    Ok(())
}
