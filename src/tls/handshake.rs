//! Drives a rustls handshake (unbuffered API) over a non-blocking socket,
//! then takes the session's traffic keys out of rustls so that
//! `tls::stream` can protect records without allocating.
//!
//! The handshake itself may allocate (it runs once per session); nothing
//! here runs per message. Must not: block, or hand over keys before every
//! handshake record has been sent (rustls refuses, rightly).

use std::io;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, UnbufferedStatus};
use rustls::{
    ConnectionTrafficSecrets, ExtractedSecrets, HandshakeKind, ProtocolVersion,
    SupportedCipherSuite,
};

use super::record::Version;
use crate::net::io::{send_all, try_recv, try_send};

/// What rustls keeps after the handshake: the key schedule (for key updates)
/// and, toward targets, the ticket store.
pub enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    /// The next sending key (TLS 1.3 key update), sequence number restarting.
    pub fn next_tx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    /// The next receiving key, after the peer's KeyUpdate.
    pub fn next_rx_secret(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
}

/// A finished handshake, ready for the record layer.
pub struct Established {
    pub kernel: Kernel,
    pub secrets: ExtractedSecrets,
    pub version: Version,
    /// Records to send before rotating the sending key (the suite's
    /// confidentiality limit); `u64::MAX` when there is none.
    pub key_limit: u64,
    pub resumed: bool,
    /// Ciphertext that arrived behind the last handshake record.
    pub leftover: Vec<u8>,
    /// Application data that arrived with the final handshake flight.
    pub plaintext: Vec<u8>,
}

/// Handshake messages this large only come from a broken or hostile peer.
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024;

pub async fn server(
    stream: &TcpStream,
    conn: UnbufferedServerConnection,
) -> io::Result<Established> {
    drive(stream, conn).await
}

pub async fn client(
    stream: &TcpStream,
    conn: UnbufferedClientConnection,
) -> io::Result<Established> {
    drive(stream, conn).await
}

/// The two unbuffered connection types, as the handshake loop needs them.
trait Unbuffered {
    type Data;
    fn common(&self) -> &rustls::CommonState;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

impl Unbuffered for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, k) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(k)))
    }
}

impl Unbuffered for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, k) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(k)))
    }
}

/// What to do once rustls's borrow of the buffers has ended.
enum Step {
    Continue,
    Transmit,
    Read,
    Done,
    PeerClosed,
    Failed(rustls::Error),
}

async fn drive<C: Unbuffered>(stream: &TcpStream, mut conn: C) -> io::Result<Established> {
    let fd = stream.as_raw_fd();
    let mut incoming = vec![0u8; 8 * 1024];
    let mut filled = 0;
    let mut outgoing = Vec::new();
    let mut plaintext = Vec::new();
    loop {
        let status = conn.process(&mut incoming[..filled]);
        let mut discard = status.discard;
        let step = match status.state {
            Err(e) => Step::Failed(e),
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                encode(&mut enc, &mut outgoing);
                Step::Continue
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                // `done` only tells rustls we own the bytes now; they go out
                // below, before rustls is asked for anything else.
                t.done();
                Step::Transmit
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::ReadTraffic(mut data)) => {
                while let Some(record) = data.next_record() {
                    match record {
                        Ok(r) => {
                            discard += r.discard;
                            plaintext.extend_from_slice(r.payload);
                        }
                        Err(e) => return Err(tls_error(e)),
                    }
                }
                Step::Continue
            }
            Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::PeerClosed,
            Ok(other) => Step::Failed(rustls::Error::General(format!(
                "unexpected handshake state {other:?}"
            ))),
        };
        incoming.copy_within(discard..filled, 0);
        filled -= discard;
        match step {
            Step::Continue => {}
            Step::Transmit => {
                send_all(stream, &outgoing).await?;
                outgoing.clear();
            }
            Step::Read => {
                if filled == incoming.len() {
                    if incoming.len() >= MAX_HANDSHAKE_BUFFER {
                        return Err(invalid("TLS handshake message too large"));
                    }
                    incoming.resize(incoming.len() * 2, 0);
                }
                match try_recv(fd, &mut incoming[filled..])? {
                    Some(0) => return Err(closed_mid_handshake()),
                    Some(n) => filled += n,
                    None => stream.readable(false).await?,
                }
            }
            Step::PeerClosed => return Err(closed_mid_handshake()),
            Step::Failed(e) => {
                send_alert(&mut conn, fd, &mut incoming[..filled], &mut outgoing);
                return Err(tls_error(e));
            }
            Step::Done => break,
        }
    }
    incoming.truncate(filled);
    let common = conn.common();
    let resumed = common.handshake_kind() == Some(HandshakeKind::Resumed);
    let version = match common.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => Version::Tls13,
        _ => Version::Tls12,
    };
    let key_limit = common
        .negotiated_cipher_suite()
        .map_or(u64::MAX, confidentiality_limit)
        .min(record_limit_override());
    let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
    Ok(Established {
        kernel,
        secrets,
        version,
        key_limit,
        resumed,
        leftover: incoming,
        plaintext,
    })
}

fn encode<Data>(enc: &mut EncodeTlsData<'_, Data>, outgoing: &mut Vec<u8>) {
    let start = outgoing.len();
    loop {
        match enc.encode(&mut outgoing[start..]) {
            Ok(n) => {
                outgoing.truncate(start + n);
                return;
            }
            Err(EncodeError::InsufficientSize(need)) => {
                outgoing.resize(start + need.required_size, 0);
            }
            Err(EncodeError::AlreadyEncoded) => return,
        }
    }
}

/// Lets the peer hear why the handshake failed: rustls queues an alert
/// when its state machine errs. Best effort, never waits. `incoming` must be
/// the same bytes rustls saw last, less what it said to discard: its
/// deframer keeps offsets into them. `outgoing` may still hold records
/// rustls encoded but we have not sent (session tickets right after the
/// peer's Finished): they go first, or the alert's sequence number would
/// not be the one the peer expects and it could not decrypt it.
fn send_alert<C: Unbuffered>(conn: &mut C, fd: i32, incoming: &mut [u8], outgoing: &mut Vec<u8>) {
    if let Ok(ConnectionState::EncodeTlsData(mut enc)) = conn.process(incoming).state {
        encode(&mut enc, outgoing);
        let _ = try_send(fd, outgoing);
    }
}

/// `WS_RELAY_TLS_RECORD_LIMIT` lowers every suite's record limit (never
/// raises it): TLS 1.3 then rekeys sooner and TLS 1.2 ends sooner. It exists
/// so tests can reach the limit over the wire without sending 2^24 records;
/// read once, at the first handshake.
fn record_limit_override() -> u64 {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("WS_RELAY_TLS_RECORD_LIMIT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX)
    })
}

fn confidentiality_limit(suite: SupportedCipherSuite) -> u64 {
    match suite {
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
        SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
    }
}

pub(super) fn closed_mid_handshake() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection during the TLS handshake",
    )
}

pub(super) fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

pub fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
