//! The target URL grammar: `ws://`, `wss://` and `tcp://host:port`, as
//! clients name targets (`?target=`, the auth message), routes name
//! upstreams and the tunnel client names its server. Pure parsing: no
//! resolution, no policy (the relay decides what may be dialed).

use rustls::pki_types::ServerName;

use super::error::{ErrorCode, RelayError};

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
    if secure && ServerName::try_from(host.clone()).is_err() {
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
