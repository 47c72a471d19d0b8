//! Reaching a target: resolving and policing the address of a parsed
//! `ws::target::TargetUrl`, connecting with a timeout, and performing the
//! WebSocket upgrade.
//!
//! Must not: open any connection for a URL it refuses, or connect to an
//! address that failed the private-address rule (checked after resolution,
//! and only checked addresses are dialed, so DNS cannot swap one in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::endpoint::Endpoint;
use crate::http::head::read_head;
use crate::net::dns::DnsCache;
use crate::net::policy::is_private;
use crate::net::sockopt::tune_stream;
use crate::ws::error::{ErrorCode, RelayError};
use crate::ws::handshake::{check_target_response, client_request, generate_key};
use crate::ws::target::TargetUrl;

/// Resolves and connects, honouring `allow_private` and the connect timeout.
pub async fn connect(
    dns: &DnsCache,
    url: &TargetUrl,
    allow_private: bool,
    timeout: Duration,
) -> Result<TcpStream, RelayError> {
    let attempt = async {
        let addrs = dns.resolve(&url.host, url.port).await.map_err(|e| {
            RelayError::new(
                ErrorCode::TargetUnreachable,
                format!("cannot resolve {}: {e}", url.host),
            )
        })?;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| allow_private || !is_private(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(RelayError::new(
                ErrorCode::TargetForbidden,
                format!("{} resolves to a private address", url.host),
            ));
        }
        let mut last = None;
        for addr in allowed {
            match TcpStream::connect_addr(addr).await {
                Ok(s) => {
                    tune_stream(std::os::fd::AsRawFd::as_raw_fd(&s));
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
        Err(RelayError::new(
            ErrorCode::TargetUnreachable,
            format!("cannot connect to {}:{}: {e}", url.host, url.port),
        ))
    };
    monoio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(RelayError::new(
                ErrorCode::TargetTimeout,
                format!(
                    "connect to {}:{} timed out after {timeout:?}",
                    url.host, url.port
                ),
            ))
        })
}

/// The upgrade request for a target, with the key its answer must match.
pub struct TargetRequest {
    key: String,
    bytes: Vec<u8>,
    protocols: Option<String>,
}

impl TargetRequest {
    pub fn new(url: &TargetUrl, protocols: Option<&str>) -> TargetRequest {
        let key = generate_key();
        let bytes = client_request(&url.host_header, &url.path, &key, protocols);
        TargetRequest {
            key,
            bytes,
            protocols: protocols.map(str::to_string),
        }
    }
}

/// Runs the TLS handshake toward a `wss://` target (`tls` is `Some` exactly
/// then); SNI and verification use the URL's host. When the config enables
/// early data and a resumed session allows it, `request` rides in the 0-RTT
/// flight; returns whether the target accepted it (then it must not be sent
/// again).
pub async fn secure(
    tcp: TcpStream,
    url: &TargetUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: &TargetRequest,
    timeout: Duration,
) -> Result<(Endpoint, bool), RelayError> {
    let Some(config) = tls else {
        return Ok((Endpoint::plain(tcp), false));
    };
    let failed = |d: String| RelayError::new(ErrorCode::TargetHandshakeFailed, d);
    let name = crate::tls::target::server_name(&url.host)
        .ok_or_else(|| failed(format!("{} is not a valid TLS server name", url.host)))?;
    let handshake = Endpoint::tls_client(tcp, config, name, &request.bytes);
    match monoio::time::timeout(timeout, handshake).await {
        Err(_) => Err(failed(format!(
            "TLS handshake with {} timed out after {timeout:?}",
            url.host
        ))),
        Ok(Err(e)) => Err(failed(format!(
            "TLS handshake with {} failed: {e}",
            url.host
        ))),
        Ok(Ok(done)) => Ok(done),
    }
}

/// What the target said when it accepted the upgrade.
#[derive(Debug)]
pub struct TargetUpgrade {
    pub protocol: Option<String>,
    /// Frames the target sent right behind its 101, to be relayed first.
    pub early: Vec<u8>,
}

/// Sends the upgrade request and validates the 101 within `timeout`.
/// Sends the upgrade request (unless it already went as early data) and
/// validates the 101 within `timeout`.
pub async fn upgrade(
    stream: &Endpoint,
    request: TargetRequest,
    already_sent: bool,
    timeout: Duration,
) -> Result<TargetUpgrade, RelayError> {
    let failed = |d: String| RelayError::new(ErrorCode::TargetHandshakeFailed, d);
    let (key, protocols) = (request.key.as_str(), request.protocols.as_deref());
    let exchange = async {
        if !already_sent {
            stream
                .write_all(&request.bytes)
                .await
                .map_err(|e| failed(format!("sending upgrade request: {e}")))?;
        }
        let mut buf = Vec::with_capacity(1024);
        let read_more = async |b: &mut Vec<u8>| {
            let e = |e| failed(format!("reading upgrade response: {e}"));
            stream.recv_some(b, 1024).await.map_err(e)
        };
        let check = |b: &[u8]| check_target_response(b, key, protocols);
        let up = read_head(&mut buf, read_more, |b| {
            check(b).map_err(|e| failed(e.to_string()))
        })
        .await?
        .ok_or_else(|| failed("target closed the connection during the handshake".into()))?;
        let early = buf.split_off(up.head_len);
        Ok(TargetUpgrade {
            protocol: up.protocol,
            early,
        })
    };
    monoio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(failed(format!("no upgrade response within {timeout:?}"))))
}
