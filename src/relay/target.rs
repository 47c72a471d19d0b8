//! Reaching a target: parsing its URL, resolving and policing its address,
//! connecting with a timeout, and performing the WebSocket upgrade.
//!
//! Must not: open any connection for a URL it refuses, or connect to an
//! address that failed the private-address rule (checked after resolution,
//! and only checked addresses are dialed, so DNS cannot swap one in).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;

use super::error::{ErrorCode, RelayError};
use super::policy::is_private;
use crate::http::head::MAX_RESPONSE_HEAD;
use crate::net::dns::DnsCache;
use crate::net::endpoint::Endpoint;
use crate::net::sockopt::tune_stream;
use crate::ws::handshake::{check_target_response, client_request, generate_key};

/// A parsed `ws://`, `wss://` or `tcp://` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    pub secure: bool,
    /// `tcp://host:port`: a raw TCP service, bridged websockify-style.
    pub tcp: bool,
    /// Host without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query sent in the upgrade request.
    pub path: String,
    /// Value of the `Host` header.
    pub host_header: String,
}

fn bad(detail: impl Into<String>) -> RelayError {
    RelayError::new(ErrorCode::BadRequest, detail)
}

/// Parses a target URL, refusing anything but `ws://`, `wss://` and
/// `tcp://host:port` (which users must be allowed explicitly).
pub fn parse_target(s: &str) -> Result<TargetUrl, RelayError> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| bad("target must be a ws:// or wss:// URL"))?;
    let (secure, tcp) = match scheme.to_ascii_lowercase().as_str() {
        "ws" => (false, false),
        "wss" => (true, false),
        "tcp" => (false, true),
        other => {
            return Err(bad(format!(
                "unsupported target scheme {other:?}: use ws://, wss:// or tcp://"
            )))
        }
    };
    if tcp {
        return parse_tcp(rest);
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("target URL needs a host (and no user info)"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("target path contains spaces or control characters"));
    }
    let (host, port) = split_host_port(authority, if secure { 443 } else { 80 })?;
    if secure && crate::tls::target::server_name(&host).is_none() {
        return Err(bad("target host is not a valid TLS server name"));
    }
    let default_port = port == if secure { 443 } else { 80 };
    let bracketed = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let host_header = if default_port {
        bracketed
    } else {
        format!("{bracketed}:{port}")
    };
    Ok(TargetUrl {
        secure,
        tcp: false,
        host,
        port,
        path,
        host_header,
    })
}

/// `tcp://host:port`, with an explicit port and nothing after it.
fn parse_tcp(rest: &str) -> Result<TargetUrl, RelayError> {
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "a tcp:// target is tcp://host:port, with nothing after the port",
        ));
    }
    let explicit_port = authority
        .rsplit_once(':')
        .is_some_and(|(h, _)| !h.ends_with(':'))
        && !authority.ends_with(']');
    if !explicit_port {
        return Err(bad("a tcp:// target needs a port: tcp://host:port"));
    }
    let (host, port) = split_host_port(authority, 0)?;
    let shown = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(TargetUrl {
        secure: false,
        tcp: true,
        host_header: format!("{shown}:{port}"),
        host,
        port,
        path: String::new(),
    })
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), RelayError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in target host"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return Err(bad("junk after IPv6 address in target")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if !valid_host {
        return Err(bad("target host is not a valid name or address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("target port is not a number from 1 to 65535"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

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
        loop {
            if stream
                .recv_some(&mut buf, 1024)
                .await
                .map_err(|e| failed(format!("reading upgrade response: {e}")))?
                == 0
            {
                return Err(failed(
                    "target closed the connection during the handshake".into(),
                ));
            }
            match check_target_response(&buf, key, protocols) {
                Ok(Some(up)) => {
                    let early = buf.split_off(up.head_len);
                    return Ok(TargetUpgrade {
                        protocol: up.protocol,
                        early,
                    });
                }
                Ok(None) if buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(None) => return Err(failed("response head too large".into())),
                Err(e) => return Err(failed(e.to_string())),
            }
        }
    };
    monoio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(failed(format!("no upgrade response within {timeout:?}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = parse_target("ws://Example.com:8080/a/b?x=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 8080, "/a/b?x=1")
        );
        assert_eq!(t.host_header, "example.com:8080");
        let t = parse_target("wss://h").unwrap();
        assert_eq!((t.port, t.path.as_str(), t.secure), (443, "/", true));
        assert_eq!(t.host_header, "h");
        let t = parse_target("ws://[::1]:9/p").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:9")
        );
        let t = parse_target("ws://h?q=1").unwrap();
        assert_eq!(t.path, "/?q=1");
        let t = parse_target("tcp://DB.internal:5432").unwrap();
        assert!(t.tcp && !t.secure);
        assert_eq!((t.host.as_str(), t.port), ("db.internal", 5432));
        let t = parse_target("tcp://[::1]:22/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header.as_str()),
            ("::1", "[::1]:22")
        );
    }

    #[test]
    fn refuses_bad_targets() {
        for s in [
            "http://h/",
            "tcp://h",
            "tcp://h:22/path",
            "tcp://[::1]",
            "h:80",
            "ws://",
            "ws://u:p@h/",
            "ws://h:0/",
            "ws://h:99999/",
            "ws://h h/",
            "ws://h/a b",
            "ws://[::1/",
            "",
        ] {
            let e = parse_target(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{s}");
        }
    }
}
