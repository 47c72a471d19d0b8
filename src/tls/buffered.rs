//! A TLS session kept on rustls's buffered API for its whole life. Used only
//! toward targets with `target_early_data = true`: rustls 0.23 reports
//! whether 0-RTT data was accepted on its buffered client alone, and a
//! relay that cannot tell must not guess (a rejected upgrade request would
//! be lost, an accepted one must not be sent twice). The price is rustls's
//! own record buffers: about one small allocation per record each way.
//!
//! Must not: block, or hold the connection borrowed across an await (both
//! directions of a session use it from one task).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::net::TcpStream;
use rustls::{ClientConnection, HandshakeKind};

use super::handshake::{closed_mid_handshake, tls_error};
use crate::net::io::{try_recv, try_send};

pub struct BufferedStream {
    conn: RefCell<ClientConnection>,
    /// rustls may hold decrypted bytes that no readiness event will announce.
    plaintext_pending: Cell<bool>,
}

/// `std::io` over a non-blocking socket, for rustls's `read_tls`/`write_tls`.
struct FdIo(RawFd);

impl Read for FdIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        try_recv(self.0, buf)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }
}

impl Write for FdIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        try_send(self.0, buf)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BufferedStream {
    /// Completes the handshake of `conn` (which may carry early data).
    pub async fn handshake(stream: &TcpStream, conn: ClientConnection) -> io::Result<Self> {
        let s = BufferedStream {
            conn: RefCell::new(conn),
            plaintext_pending: Cell::new(true),
        };
        loop {
            s.flush(stream).await?;
            let (handshaking, wants_read) = {
                let c = s.conn.borrow();
                (c.is_handshaking(), c.wants_read())
            };
            if !handshaking {
                return Ok(s);
            }
            if wants_read && !s.read_tls_once(stream.as_raw_fd())? {
                stream.readable(false).await?;
            }
        }
    }

    pub fn early_data_accepted(&self) -> bool {
        self.conn.borrow().is_early_data_accepted()
    }

    pub fn resumed(&self) -> bool {
        self.conn.borrow().handshake_kind() == Some(HandshakeKind::Resumed)
    }

    pub fn has_buffered(&self) -> bool {
        self.plaintext_pending.get()
    }

    /// Feeds one non-blocking read of ciphertext to rustls. Returns false if
    /// the socket had nothing.
    fn read_tls_once(&self, fd: RawFd) -> io::Result<bool> {
        let mut conn = self.conn.borrow_mut();
        match conn.read_tls(&mut FdIo(fd)) {
            // rustls would keep asking to read: without this the handshake
            // loop would spin on EOF and starve the shard.
            Ok(0) if conn.is_handshaking() => Err(closed_mid_handshake()),
            // `Ok(0)` is EOF: rustls notes it and the next read reports it.
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // Let the peer hear the alert before the error surfaces.
                    let _ = conn.write_tls(&mut FdIo(fd));
                    return Err(tls_error(e));
                }
                self.plaintext_pending.set(true);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes out everything rustls has queued, waiting for writability.
    async fn flush(&self, stream: &TcpStream) -> io::Result<()> {
        loop {
            let wrote = {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(&mut FdIo(stream.as_raw_fd()))
            };
            match wrote {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => stream.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn try_read(&self, fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            let read = self.conn.borrow_mut().reader().read(buf);
            match read {
                Ok(n) => return Ok(Some(n)),
                // Peer closed TCP without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.plaintext_pending.set(false);
                    if !self.read_tls_once(fd)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn write_all(&self, stream: &TcpStream, buf: &[u8]) -> io::Result<()> {
        self.conn.borrow_mut().writer().write_all(buf)?;
        self.flush(stream).await
    }

    pub async fn close_notify(&self, stream: &TcpStream) {
        self.conn.borrow_mut().send_close_notify();
        let _ = monoio::time::timeout(Duration::from_secs(1), self.flush(stream)).await;
    }
}
