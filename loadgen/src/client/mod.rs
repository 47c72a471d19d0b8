//! The loadgen WebSocket client: open a connection along a [`Route`] (TCP,
//! optional TLS, HTTP upgrade, optional relay auth), timing every phase,
//! and hand back the stream with its framing state.

pub mod conn;
pub mod relay;
pub mod tls;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

pub use conn::{Event, FrameReader, FrameWriter, WsError};
pub use relay::{AuthMode, Route, CONNECTED_STATUS};
pub use transport::Transport;

use crate::clock::now_ns;
use crate::rng::Rng;
use crate::ws::handshake::{self, HandshakeError};
use ws_relay_core::ws::frame::opcode;

/// Largest HTTP head accepted from a server.
const MAX_HEAD: usize = 16 * 1024;
/// Largest error body read after a refused upgrade.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a connection could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TCP connect to {addr}: {source}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake: {0}")]
    Tls(#[from] monoio_rustls::TlsError),
    #[error("TLS setup: {0}")]
    TlsSetup(#[from] tls::TlsSetupError),
    #[error("WebSocket handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("relay refused the session: {code}: {error}")]
    Relay { code: String, error: String },
    #[error("unexpected relay reply: {0}")]
    RelayProtocol(String),
    #[error("{0}")]
    Ws(#[from] WsError),
    #[error("connection not established within {0:?}")]
    Timeout(Duration),
}

/// Everything needed to open client connections; shared by all threads.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    pub route: Route,
    /// Present when the first hop is `wss://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    pub max_message: usize,
    /// Frame payload limit for outgoing messages (0 = no fragmentation).
    pub fragment: usize,
}

/// Phase timings of one connection, in nanoseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub tcp_ns: u64,
    pub tls_ns: Option<u64>,
    pub upgrade_ns: u64,
    pub auth_ns: Option<u64>,
    pub total_ns: u64,
    /// TLS only: whether the session was resumed.
    pub resumed: Option<bool>,
}

/// An established WebSocket connection.
pub struct Connection {
    pub io: Transport,
    /// The TCP socket under `io` (TLS hides it), for socket options such as
    /// `SO_LINGER` on an abortive close.
    pub raw_fd: std::os::fd::RawFd,
    pub reader: FrameReader,
    pub writer: FrameWriter,
    pub timings: Timings,
}

/// Opens a connection, bounded by `setup.connect_timeout`. With
/// `inspect_tls`, reports whether a TLS session was resumed.
pub async fn connect(setup: &ClientSetup, inspect_tls: bool) -> Result<Connection, ClientError> {
    match monoio::time::timeout(setup.connect_timeout, connect_inner(setup, inspect_tls)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Timeout(setup.connect_timeout)),
    }
}

async fn connect_inner(setup: &ClientSetup, inspect_tls: bool) -> Result<Connection, ClientError> {
    let hop = setup.route.first_hop();
    let t0 = now_ns();
    let tcp = TcpStream::connect(hop.addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: hop.addr,
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let raw_fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let t_tcp = now_ns();
    let mut timings = Timings {
        tcp_ns: t_tcp - t0,
        ..Timings::default()
    };

    let mut io = if hop.secure {
        let config = setup.tls.clone().ok_or(tls::TlsSetupError::NoTrust)?;
        let connector = monoio_rustls::TlsConnector::from(config);
        let stream = connector.connect(tls::server_name(&hop.host)?, tcp).await?;
        let stream = if inspect_tls {
            // Look at the session right after the handshake. The handshake
            // loop has fed every byte it read to rustls, and TLS 1.3 tickets
            // arrive only after our Finished, so no buffered input is lost by
            // re-wrapping the parts.
            let (io, session) = stream.into_parts();
            timings.resumed =
                Some(session.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
            monoio_rustls::ClientTlsStream::new(io, session)
        } else {
            stream
        };
        timings.tls_ns = Some(now_ns() - t_tcp);
        Transport::Tls(Box::new(stream))
    } else {
        Transport::Plain(tcp)
    };
    let t_tls = now_ns();

    // HTTP upgrade.
    let mut rng = Rng::new();
    let key = handshake::new_key(&mut rng);
    let extra = setup.route.upgrade_headers();
    let extra: Vec<(&str, &str)> = extra.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut writer = FrameWriter::new(setup.fragment);
    let mut req = Vec::with_capacity(512);
    handshake::write_request(&mut req, hop, &key, &extra);
    let (res, _) = monoio::io::AsyncWriteRentExt::write_all(&mut io, req).await;
    res.map_err(HandshakeError::Io)?;
    let mut buf = Vec::with_capacity(8192);
    let head_len = handshake::read_head(&mut io, &mut buf, MAX_HEAD).await?;
    let head = handshake::check_response(&buf[..head_len], &key)?;
    if head.status != 101 {
        return Err(refused(&mut io, buf, head_len, head).await);
    }
    buf.drain(..head_len);
    let mut reader = FrameReader::new(buf, setup.max_message);
    let t_up = now_ns();
    timings.upgrade_ns = t_up - t_tls;

    // First-message relay auth.
    if let Some(auth) = setup.route.auth_message() {
        writer.push_message(opcode::TEXT, auth.as_bytes());
        writer.flush(&mut io).await.map_err(WsError::Io)?;
        await_status(&mut io, &mut reader, &mut writer).await?;
        timings.auth_ns = Some(now_ns() - t_up);
    }
    timings.total_ns = now_ns() - t0;
    Ok(Connection {
        io,
        raw_fd,
        reader,
        writer,
        timings,
    })
}

/// Reads the error body of a refused upgrade and turns it into an error.
async fn refused(
    io: &mut Transport,
    mut buf: Vec<u8>,
    head_len: usize,
    head: handshake::ResponseHead,
) -> ClientError {
    let want = head.content_length.unwrap_or(0).min(MAX_ERROR_BODY);
    // Bounded: each read adds bytes or ends the loop.
    while buf.len() - head_len < want {
        if handshake::read_more(io, &mut buf, 4096).await.is_err() {
            break;
        }
    }
    let body = &buf[head_len..buf.len().min(head_len + want)];
    if let Some(r) = relay::parse_refusal(body) {
        return ClientError::Relay {
            code: r.code,
            error: r.error,
        };
    }
    HandshakeError::Refused {
        status: head.status,
        body: String::from_utf8_lossy(body).into_owned(),
    }
    .into()
}

/// Waits for `{"status":"已连接"}` (answering at most a few pings meanwhile).
async fn await_status(
    io: &mut Transport,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
) -> Result<(), ClientError> {
    for _ in 0..8 {
        match reader.next(io).await? {
            Event::Message {
                opcode: opcode::TEXT,
                payload,
                ..
            } => {
                if payload == CONNECTED_STATUS.as_bytes() {
                    return Ok(());
                }
                if let Some(r) = relay::parse_refusal(payload) {
                    return Err(ClientError::Relay {
                        code: r.code,
                        error: r.error,
                    });
                }
                return Err(ClientError::RelayProtocol(
                    String::from_utf8_lossy(payload).into_owned(),
                ));
            }
            Event::Message { .. } => {
                return Err(ClientError::RelayProtocol(
                    "binary message before the status message".into(),
                ))
            }
            Event::Ping(p) => {
                let p = p.to_vec();
                writer.push_control(opcode::PONG, &p);
                writer.flush(io).await.map_err(WsError::Io)?;
            }
            Event::Pong(_) => {}
            Event::Close { code, reason } => {
                return Err(ClientError::RelayProtocol(format!(
                    "closed before the status message (code {code:?}, {})",
                    String::from_utf8_lossy(reason)
                )))
            }
        }
    }
    Err(ClientError::RelayProtocol("no status message".into()))
}
