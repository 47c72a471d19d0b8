//! One side of a relay session: a TCP socket, optionally with a rustls
//! connection on top. Every read and write in the relay goes through here, so
//! plain and TLS sides share one readiness-driven model: wait for the socket,
//! then move bytes with non-blocking calls.
//!
//! Must not: block, or hold the rustls connection borrowed across an await
//! (both directions of a session use it from one task).

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

use monoio::net::TcpStream;
use rustls::{Connection, HandshakeKind};

use super::io::{send_all, try_recv, try_send};
use super::sockopt::shutdown_write;

pub struct Endpoint {
    stream: TcpStream,
    tls: Option<Box<Tls>>,
}

struct Tls {
    conn: RefCell<Connection>,
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

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Endpoint {
    pub fn plain(stream: TcpStream) -> Endpoint {
        Endpoint { stream, tls: None }
    }

    /// Wraps `stream` and completes the TLS handshake on it.
    pub async fn tls(stream: TcpStream, conn: Connection) -> io::Result<Endpoint> {
        let ep = Endpoint {
            stream,
            tls: Some(Box::new(Tls {
                conn: RefCell::new(conn),
                plaintext_pending: Cell::new(true),
            })),
        };
        ep.handshake().await?;
        Ok(ep)
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a client connection's 0-RTT data was accepted by the server.
    pub fn early_data_accepted(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| match &*t.conn.borrow() {
            Connection::Client(c) => c.is_early_data_accepted(),
            Connection::Server(_) => false,
        })
    }

    /// Whether the TLS handshake was a resumption (`None` for plain TCP).
    pub fn tls_resumed(&self) -> Option<bool> {
        let tls = self.tls.as_ref()?;
        let kind = tls.conn.borrow().handshake_kind();
        Some(kind == Some(HandshakeKind::Resumed))
    }

    async fn handshake(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        loop {
            self.flush_tls().await?;
            let (handshaking, wants_read) = {
                let c = tls.conn.borrow();
                (c.is_handshaking(), c.wants_read())
            };
            if !handshaking {
                return Ok(());
            }
            if wants_read && !self.read_tls_once()? {
                self.stream.readable(false).await?;
            }
        }
    }

    /// Feeds one non-blocking read of ciphertext to rustls. Returns false if
    /// the socket had nothing.
    fn read_tls_once(&self) -> io::Result<bool> {
        let Some(tls) = &self.tls else {
            return Ok(false);
        };
        let mut conn = tls.conn.borrow_mut();
        match conn.read_tls(&mut FdIo(self.fd())) {
            Ok(0) if conn.is_handshaking() => {
                // rustls would keep asking to read: without this the
                // handshake loop would spin on EOF and starve the shard.
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                ))
            }
            Ok(n) => {
                let state = conn.process_new_packets().map_err(tls_error);
                if let Err(e) = state {
                    // Let the peer hear the alert before the error surfaces.
                    let _ = conn.write_tls(&mut FdIo(self.fd()));
                    return Err(e);
                }
                // `n == 0` is EOF: rustls notes it and the next read reports it.
                let _ = n;
                tls.plaintext_pending.set(true);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes out everything rustls has queued, waiting for writability.
    async fn flush_tls(&self) -> io::Result<()> {
        let Some(tls) = &self.tls else { return Ok(()) };
        loop {
            let wrote = {
                let mut conn = tls.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(&mut FdIo(self.fd()))
            };
            match wrote {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stream.writable(false).await?
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        if self.tls.as_ref().is_some_and(|t| t.plaintext_pending.get()) {
            return Ok(());
        }
        self.stream.readable(false).await
    }

    /// One non-blocking read of application bytes. `Ok(Some(0))` = EOF,
    /// `Ok(None)` = nothing now.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(tls) = &self.tls else {
            return try_recv(self.fd(), buf);
        };
        loop {
            let read = tls.conn.borrow_mut().reader().read(buf);
            match read {
                Ok(n) => return Ok(Some(n)),
                // Peer closed TCP without close_notify: an end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Some(0)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tls.plaintext_pending.set(false);
                    if !self.read_tls_once()? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes all of `buf`; a full socket makes this wait (backpressure).
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        let Some(tls) = &self.tls else {
            return send_all(&self.stream, buf).await;
        };
        tls.conn.borrow_mut().writer().write_all(buf)?;
        self.flush_tls().await
    }

    /// Reads at least one byte into `out`'s spare capacity (handshake phase).
    /// Returns 0 at EOF.
    pub async fn recv_some(&self, out: &mut Vec<u8>, chunk: usize) -> io::Result<usize> {
        loop {
            let len = out.len();
            out.resize(len + chunk, 0);
            let got = self.try_read(&mut out[len..]);
            match got {
                Ok(Some(n)) => {
                    out.truncate(len + n);
                    return Ok(n);
                }
                Ok(None) => {
                    out.truncate(len);
                    self.readable().await?;
                }
                Err(e) => {
                    out.truncate(len);
                    return Err(e);
                }
            }
        }
    }

    /// Ends our sending side: close_notify for TLS, then a TCP FIN.
    pub async fn shutdown_write(&self) {
        if let Some(tls) = &self.tls {
            tls.conn.borrow_mut().send_close_notify();
            let _ =
                monoio::time::timeout(std::time::Duration::from_secs(1), self.flush_tls()).await;
        }
        shutdown_write(self.fd());
    }
}
