//! One side of a session: a TCP socket, optionally with TLS on top. Every
//! read and write of every feature goes through here, so plain and TLS
//! sides share one readiness-driven model: wait for the socket, then move
//! bytes with non-blocking calls. TLS sessions run on the relay's own record
//! layer (`tls::stream`), except 0-RTT ones toward targets (`tls::buffered`).
//! Also the two ways a side is closed politely (`close_after`,
//! `discard_until_eof`) and the way a reset is passed on (`reset`).
//!
//! Sits above `net/` and `tls/`, below every feature. Must not: block, or
//! allocate per message on a plain or record-layer side.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::server::UnbufferedServerConnection;
use rustls::{ClientConfig, ClientConnection, ServerConfig};

use crate::net::io::{send_all, try_recv};
use crate::net::pool::BufferPool;
use crate::net::sockopt::{reset_on_close, shutdown_write, unsent_bytes};
use crate::tls::buffered::BufferedStream;
use crate::tls::handshake::{self, tls_error};
use crate::tls::stream::RecordStream;

pub struct Endpoint {
    stream: TcpStream,
    tls: Option<Box<Tls>>,
}

// Always boxed (`Endpoint::tls`), so the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Tls {
    /// The relay's own record layer: no allocation per message.
    Records(RecordStream),
    /// rustls end to end, for 0-RTT toward targets (see `tls::buffered`).
    Buffered(BufferedStream),
}

impl Endpoint {
    pub fn plain(stream: TcpStream) -> Endpoint {
        Endpoint { stream, tls: None }
    }

    /// Completes a listener-side TLS handshake on `stream`.
    pub async fn tls_server(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Endpoint> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let est = handshake::server(&stream, conn).await?;
        Ok(Endpoint::with_tls(
            stream,
            Tls::Records(RecordStream::new(est)?),
        ))
    }

    fn with_tls(stream: TcpStream, tls: Tls) -> Endpoint {
        Endpoint {
            stream,
            tls: Some(Box::new(tls)),
        }
    }

    /// Completes a TLS handshake toward a target. With early data enabled
    /// in `config` and a resumable session, `early` rides in the 0-RTT
    /// flight; returns whether the server accepted it (then it must not be
    /// sent again).
    pub async fn tls_client(
        stream: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        early: &[u8],
    ) -> io::Result<(Endpoint, bool)> {
        if !config.enable_early_data {
            let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
            let est = handshake::client(&stream, conn).await?;
            let ep = Endpoint::with_tls(stream, Tls::Records(RecordStream::new(est)?));
            return Ok((ep, false));
        }
        let mut conn = ClientConnection::new(config, name).map_err(tls_error)?;
        // All or nothing: a ticket allowing fewer bytes than the request
        // would leave half of it in 0-RTT and the rest to be guessed at.
        let sent = match conn.early_data() {
            Some(mut ed) if ed.bytes_left() >= early.len() => {
                io::Write::write(&mut ed, early).unwrap_or(0)
            }
            _ => 0,
        };
        let buffered = BufferedStream::handshake(&stream, conn).await?;
        let accepted = sent == early.len() && buffered.early_data_accepted();
        Ok((
            Endpoint::with_tls(stream, Tls::Buffered(buffered)),
            accepted,
        ))
    }

    /// The socket of a plain endpoint (a TLS one would lose its session:
    /// only the tunnel client's proxy step uses this, before any TLS).
    pub fn into_stream(self) -> TcpStream {
        debug_assert!(self.tls.is_none(), "into_stream on a TLS endpoint");
        self.stream
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

    /// Whether the TLS handshake was a resumption (`None` for plain TCP).
    pub fn tls_resumed(&self) -> Option<bool> {
        Some(match self.tls.as_deref()? {
            Tls::Records(r) => r.resumed(),
            Tls::Buffered(b) => b.resumed(),
        })
    }

    /// A TLS 1.2 session close to its cipher's record limit (see
    /// `RecordStream::nearing_record_limit`); never for plain TCP.
    pub fn nearing_record_limit(&self) -> bool {
        matches!(self.tls.as_deref(), Some(Tls::Records(r)) if r.nearing_record_limit())
    }

    /// Waits until a read may make progress.
    pub async fn readable(&self) -> io::Result<()> {
        let buffered = match self.tls.as_deref() {
            Some(Tls::Records(r)) => r.has_buffered(),
            Some(Tls::Buffered(b)) => b.has_buffered(),
            None => false,
        };
        if buffered {
            return Ok(());
        }
        self.stream.readable(false).await
    }

    /// One non-blocking read of application bytes. `Ok(Some(0))` = EOF,
    /// `Ok(None)` = nothing now.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.tls.as_deref() {
            None => try_recv(self.fd(), buf),
            Some(Tls::Records(r)) => r.try_read(self.fd(), buf),
            Some(Tls::Buffered(b)) => b.try_read(self.fd(), buf),
        }
    }

    /// Writes all of `buf`; a full socket makes this wait (backpressure).
    pub async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self.tls.as_deref() {
            None => send_all(&self.stream, buf).await,
            Some(Tls::Records(r)) => r.write_all(&self.stream, buf).await,
            Some(Tls::Buffered(b)) => b.write_all(&self.stream, buf).await,
        }
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

    /// Passes on a reset: once what was already written here has left the
    /// socket (acknowledged by the peer, waiting at most `within`), arms the
    /// socket so that closing it sends a TCP reset. No Close frame, no
    /// close_notify, no FIN: the peer sees the connection end the way the
    /// other side's ended. The reset goes out when the endpoint is dropped.
    pub async fn reset(&self, within: Duration) {
        let until = Instant::now() + within;
        let mut pause = Duration::from_micros(200);
        while matches!(unsent_bytes(self.fd()), Ok(n) if n > 0) && Instant::now() < until {
            monoio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
        reset_on_close(self.fd());
    }

    /// Writes `bytes` (a refusal, a plain HTTP answer), then closes
    /// politely: our FIN, and the peer's bytes read and dropped until its
    /// EOF, so the close cannot turn into a reset that destroys the answer.
    /// Each step is bounded by one second: the peer may not read at all.
    pub async fn close_after(&self, bytes: &[u8], pool: &BufferPool) {
        let linger = Duration::from_secs(1);
        if monoio::time::timeout(linger, self.write_all(bytes))
            .await
            .is_err()
        {
            return;
        }
        self.shutdown_write().await;
        let _ = monoio::time::timeout(linger, self.discard_until_eof(pool)).await;
    }

    /// Reads and drops bytes until EOF or error, so closing never turns into
    /// a reset that could destroy the Close frame or answer just sent.
    /// Unbounded: callers put a timeout around it.
    pub async fn discard_until_eof(&self, pool: &BufferPool) {
        loop {
            if self.readable().await.is_err() {
                return;
            }
            let mut buf = pool.borrow();
            loop {
                match self.try_read(&mut buf) {
                    Ok(Some(0)) | Err(_) => return,
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                }
            }
        }
    }

    /// Ends our sending side: close_notify for TLS, then a TCP FIN.
    pub async fn shutdown_write(&self) {
        match self.tls.as_deref() {
            None => {}
            Some(Tls::Records(r)) => r.close_notify(&self.stream).await,
            Some(Tls::Buffered(b)) => b.close_notify(&self.stream).await,
        }
        shutdown_write(self.fd());
    }
}
