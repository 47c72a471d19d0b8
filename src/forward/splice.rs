//! `splice` forwarding for plain TCP on both sides: readiness first, then
//! non-blocking `splice(2)` socket → pooled pipe → socket. Bytes never enter
//! user space, so no frame tracking (the relay can only close TCP here).
//!
//! Must not: issue a blocking splice (io_uring would park it on a kernel
//! worker thread per idle direction), or keep a pipe while idle.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use monoio::net::TcpStream;

use super::{Direction, PumpEnd};
use crate::net::io::nonblocking;
use crate::net::pool::PipePool;

/// Bytes asked for per splice; the default pipe capacity.
const CHUNK: usize = 64 * 1024;

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let null = std::ptr::null_mut();
    // SAFETY: no memory is passed; both descriptors are owned and open.
    nonblocking(|| unsafe { libc::splice(from, null, to, null, len, flags) })
}

pub async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    pipes: &PipePool,
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> PumpEnd {
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    loop {
        if let Err(e) = src.readable(false).await {
            return PumpEnd::ReadError(e);
        }
        let mut pipe = match pipes.borrow() {
            Ok(p) => p,
            Err(e) => return PumpEnd::ReadError(e),
        };
        let (pr, pw) = pipe.fds();
        loop {
            let n = match splice(sfd, pw, CHUNK) {
                Ok(Some(0)) => return PumpEnd::Eof,
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return PumpEnd::ReadError(e),
            };
            pipe.pending = n;
            dir.mid_write.set(true);
            while pipe.pending > 0 {
                match splice(pr, dfd, pipe.pending) {
                    Ok(Some(m)) => pipe.pending -= m,
                    Ok(None) => {
                        if let Err(e) = dst.writable(false).await {
                            return PumpEnd::WriteError(e);
                        }
                    }
                    Err(e) => return PumpEnd::WriteError(e),
                }
            }
            dir.mid_write.set(false);
            dir.count(n, clock);
            if dir.stop.get() {
                return PumpEnd::Stopped;
            }
            if n < CHUNK {
                break;
            }
        }
    }
}
