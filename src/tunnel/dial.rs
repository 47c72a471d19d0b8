//! Opening one tunnel session to the relay: TCP (through an HTTP CONNECT
//! proxy when configured), TLS for `wss://`, then the WebSocket upgrade with
//! handshake-time auth (`Authorization: Bearer`, `X-Relay-Target`).
//!
//! Must not: send the token anywhere but inside the (TLS) upgrade request,
//! or log it or the proxy's credentials.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use monoio::net::TcpStream;

use super::config::{ClientConfig, HttpProxy};
use crate::endpoint::Endpoint;
use crate::http::head::{parse_response_head, read_head};
use crate::net::dns::DnsCache;
use crate::net::sockopt::tune_stream;
use crate::ws::handshake::{check_target_response, generate_key};
use crate::ws::target::TargetUrl;

#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("cannot connect to {what} {addr}: {source}")]
    Connect {
        what: &'static str,
        addr: String,
        source: std::io::Error,
    },
    #[error("the HTTP proxy refused our credentials or wants some (HTTP {0}; 407 Proxy Authentication Required): check user:pass in client.http_proxy")]
    ProxyAuth(u16),
    #[error("the HTTP proxy refused CONNECT to {target}: HTTP {status}")]
    ProxyRefused { target: String, status: u16 },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("the relay refused the tunnel: HTTP {status} {code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("the relay's upgrade answer is invalid: {0}")]
    Upgrade(String),
    #[error("I/O with the relay: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

impl DialError {
    /// A refusal (auth, policy, proxy auth) will not change by retrying.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            DialError::ProxyAuth(_) | DialError::ProxyRefused { .. }
        ) || matches!(self, DialError::Refused { status, .. } if *status < 500)
    }
}

/// An open tunnel: the WebSocket to the relay and frames that arrived with
/// its 101.
pub struct Tunnel {
    pub ws: Endpoint,
    pub early: Vec<u8>,
}

/// Opens a tunnel session to `target` (`tcp://host:port`).
pub async fn open(
    cfg: &ClientConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
    dns: &DnsCache,
    target: &str,
) -> Result<Tunnel, DialError> {
    let limit = Duration::from_secs(cfg.connect_timeout_secs);
    monoio::time::timeout(limit, open_inner(cfg, tls, dns, target))
        .await
        .unwrap_or(Err(DialError::Timeout(limit)))
}

async fn open_inner(
    cfg: &ClientConfig,
    tls: Option<&Arc<rustls::ClientConfig>>,
    dns: &DnsCache,
    target: &str,
) -> Result<Tunnel, DialError> {
    let server = &cfg.server;
    let tcp = match &cfg.proxy {
        None => connect(dns, "relay", &server.host, server.port).await?,
        Some(p) => through_proxy(dns, p, server).await?,
    };
    let ws = match tls {
        None => Endpoint::plain(tcp),
        Some(config) => {
            let failed = |source| DialError::Tls {
                host: server.host.clone(),
                source,
            };
            let name = crate::tls::target::server_name(&server.host)
                .ok_or_else(|| failed(std::io::Error::other("not a valid TLS server name")))?;
            Endpoint::tls_client(tcp, config.clone(), name, &[])
                .await
                .map_err(failed)?
                .0
        }
    };
    let key = generate_key();
    ws.write_all(&upgrade_request(cfg, target, &key)).await?;
    let early = read_upgrade(&ws, &key).await?;
    Ok(Tunnel { ws, early })
}

pub(super) async fn connect(
    dns: &DnsCache,
    what: &'static str,
    host: &str,
    port: u16,
) -> Result<TcpStream, DialError> {
    let addrs = dns
        .resolve(host, port)
        .await
        .map_err(|source| DialError::Resolve {
            host: host.to_string(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_addr(addr).await {
            Ok(s) => {
                tune_stream(std::os::fd::AsRawFd::as_raw_fd(&s));
                return Ok(s);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, source) = last.map_or_else(
        || {
            (
                format!("{host}:{port}"),
                std::io::Error::other("no address"),
            )
        },
        |(a, e)| (a.to_string(), e),
    );
    Err(DialError::Connect { what, addr, source })
}

/// `CONNECT host:port` through the proxy, with Basic auth when configured.
async fn through_proxy(
    dns: &DnsCache,
    proxy: &HttpProxy,
    server: &TargetUrl,
) -> Result<TcpStream, DialError> {
    let tcp = connect(dns, "HTTP proxy", &proxy.host, proxy.port).await?;
    let authority = match server.host.contains(':') {
        true => format!("[{}]:{}", server.host, server.port),
        false => format!("{}:{}", server.host, server.port),
    };
    let mut req = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ws-relay-core-tunnel\r\n"
    );
    if let Some(c) = &proxy.credentials {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        req.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    req.push_str("\r\n");
    let ep = Endpoint::plain(tcp);
    ep.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(512);
    let answer = read_head(
        &mut buf,
        async |b: &mut Vec<u8>| Ok::<_, DialError>(ep.recv_some(b, 1024).await?),
        |b| parse_response_head(b).map_err(|e| DialError::Upgrade(format!("proxy answer: {e}"))),
    );
    let Some(head) = answer.await? else {
        return Err(DialError::ProxyRefused {
            target: authority,
            status: 0,
        });
    };
    match head.status {
        200..=299 if buf.len() == head.len => Ok(ep.into_stream()),
        200..=299 => Err(DialError::Upgrade(
            "the proxy sent bytes after its 200".into(),
        )),
        // tinyproxy answers a CONNECT without valid credentials with 401.
        status @ (401 | 407) => Err(DialError::ProxyAuth(status)),
        status => Err(DialError::ProxyRefused {
            target: authority,
            status,
        }),
    }
}

/// The upgrade with handshake-time auth; `X-Relay-Keepalive` tells the
/// relay how often a reverse tunnel's control session pings.
fn upgrade_request(cfg: &ClientConfig, target: &str, key: &str) -> Vec<u8> {
    let (server, token, keepalive) = (&cfg.server, &cfg.token, cfg.keepalive_secs);
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\nAuthorization: Bearer {token}\r\nX-Relay-Target: {target}\r\nX-Relay-Keepalive: {keepalive}\r\nUser-Agent: ws-relay-core-tunnel\r\n\r\n",
        server.path, server.host_header
    )
    .into_bytes()
}

/// Reads the relay's answer; returns the bytes behind a valid 101.
async fn read_upgrade(ws: &Endpoint, key: &str) -> Result<Vec<u8>, DialError> {
    let mut buf = Vec::with_capacity(1024);
    let answer = read_head(
        &mut buf,
        async |b: &mut Vec<u8>| Ok::<_, DialError>(ws.recv_some(b, 2048).await?),
        |b| parse_response_head(b).map_err(|e| DialError::Upgrade(e.to_string())),
    );
    let Some(head) = answer.await? else {
        return Err(DialError::Upgrade("the relay closed the connection".into()));
    };
    if head.status != 101 {
        let want = head
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(64 * 1024);
        while buf.len() < head.len + want {
            if ws.recv_some(&mut buf, 2048).await? == 0 {
                break;
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&buf[head.len..]).unwrap_or_default();
        let field = |k: &str| body[k].as_str().unwrap_or("").to_string();
        return Err(DialError::Refused {
            status: head.status,
            code: field("code"),
            message: field("error"),
        });
    }
    match check_target_response(&buf, key, Some("binary")) {
        Ok(Some(up)) => Ok(buf.split_off(up.head_len)),
        Ok(None) => Err(DialError::Upgrade("incomplete upgrade response".into())),
        Err(e) => Err(DialError::Upgrade(e.to_string())),
    }
}
