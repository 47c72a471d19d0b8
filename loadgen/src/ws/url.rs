//! `ws://` / `wss://` URLs: scheme, host, port, path, resolved once to a
//! socket address (at setup time, never on the measuring path).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// URL problems.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: expected a ws:// or wss:// URL")]
    Scheme(String),
    #[error("{0:?}: missing host")]
    NoHost(String),
    #[error("{0:?}: bad port")]
    Port(String),
    #[error("{0:?}: cannot resolve host: {1}")]
    Resolve(String, #[source] std::io::Error),
}

/// A parsed WebSocket URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// The text as given (what a relay receives as `target`).
    pub raw: String,
    pub secure: bool,
    /// Host as written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path plus query, at least "/".
    pub path: String,
    pub addr: SocketAddr,
}

impl WsUrl {
    pub fn parse(raw: &str) -> Result<Self, UrlError> {
        let (secure, rest) = if let Some(r) = raw.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = raw.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(UrlError::Scheme(raw.into()));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        // Userinfo is not supported; strip nothing, just reject '@'.
        if authority.is_empty() || authority.contains('@') {
            return Err(UrlError::NoHost(raw.into()));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| UrlError::NoHost(raw.into()))?;
            let host = &v6[..end];
            let port = match &v6[end + 1..] {
                "" => default_port,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| UrlError::Port(raw.into()))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| UrlError::Port(raw.into()))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(raw.into()));
        }
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| UrlError::Resolve(raw.into(), e))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| UrlError::Resolve(raw.into(), std::io::Error::other("no address")))?;
        Ok(Self {
            raw: raw.to_string(),
            secure,
            host,
            port,
            path,
            addr,
        })
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let u = WsUrl::parse("ws://127.0.0.1:9001/").unwrap();
        assert_eq!(
            (u.secure, u.host.as_str(), u.port, u.path.as_str()),
            (false, "127.0.0.1", 9001, "/")
        );
        let u = WsUrl::parse("wss://localhost:8443/a/b?x=1").unwrap();
        assert_eq!(
            (u.secure, u.port, u.path.as_str()),
            (true, 8443, "/a/b?x=1")
        );
        let u = WsUrl::parse("ws://127.0.0.1:80?x").unwrap();
        assert_eq!(u.path, "/?x");
        let u = WsUrl::parse("ws://[::1]:9/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        assert_eq!(u.host_header(), "[::1]:9");
        assert!(WsUrl::parse("http://x/").is_err());
        assert!(WsUrl::parse("ws://:80/").is_err());
        assert!(WsUrl::parse("ws://127.0.0.1:x/").is_err());
    }
}
