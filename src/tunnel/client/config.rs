//! `client.toml` for `ws-relay-core tunnel`: the relay to reach, the token,
//! TLS trust, an optional HTTP CONNECT proxy, and the forwards.
//!
//! Also reads the tls-tunnel seed's `client-wss.toml` keys (`server_addr`,
//! `server_port`, `transport`, `auth_key`), so its users switch by changing
//! the binary. Must not: log the token or proxy password.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::relay::target::{parse_target, TargetUrl};

/// The relay's config error: same file, line and key reporting.
pub use crate::config::ConfigError as ClientConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    client: ClientSection,
    #[serde(default)]
    forwards: Vec<ForwardSection>,
    /// The seed's reverse tunnels; refused with a clear error until built.
    #[serde(default)]
    proxies: Vec<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientSection {
    server: Option<String>,
    token: Option<String>,
    #[serde(default)]
    skip_verify: bool,
    ca_cert_path: Option<String>,
    http_proxy: Option<String>,
    path: Option<String>,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_secs: u64,
    // The seed's names.
    server_addr: Option<String>,
    server_port: Option<u16>,
    transport: Option<String>,
    auth_key: Option<String>,
}

fn default_connect_timeout() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardSection {
    listen: String,
    target: String,
}

/// An HTTP CONNECT proxy (`http://user:pass@host:port`).
#[derive(Clone)]
pub struct HttpProxy {
    pub host: String,
    pub port: u16,
    /// `user:pass` for Basic auth, if given.
    pub credentials: Option<String>,
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = self.credentials.as_ref().map(|_| "<redacted>");
        write!(f, "HttpProxy({}:{}, auth {auth:?})", self.host, self.port)
    }
}

/// One `[[forwards]]` entry.
#[derive(Debug, Clone)]
pub struct Forward {
    pub listen: SocketAddr,
    /// `tcp://host:port` as the relay must see it.
    pub target: String,
}

/// A validated client config.
#[derive(Clone)]
pub struct ClientConfig {
    pub server: TargetUrl,
    pub token: String,
    pub skip_verify: bool,
    pub ca_cert_path: Option<String>,
    pub proxy: Option<HttpProxy>,
    pub connect_timeout_secs: u64,
    pub forwards: Vec<Forward>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server.host_header)
            .field("token", &"<redacted>")
            .field("proxy", &self.proxy)
            .field("forwards", &self.forwards)
            .finish()
    }
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, ClientConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClientConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<ClientConfig, ClientConfigError> {
        let shown = path.display().to_string();
        let invalid = |key: &str, message: String| ClientConfigError::Invalid {
            path: shown.clone(),
            line: line_of_key(text, key),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| ClientConfigError::Invalid {
            path: shown.clone(),
            line: e
                .span()
                .map(|s| crate::config::line_of(text, s.start))
                .unwrap_or(0),
            message: e.message().to_string(),
        })?;
        if !file.proxies.is_empty() {
            return Err(invalid(
                "[[proxies]]",
                "[[proxies]] (reverse tunnels, publishing a local service on the relay host) are not built yet; use [[forwards]]".into(),
            ));
        }
        let c = file.client;
        let server = server_url(&c).map_err(|(k, m)| invalid(k, m))?;
        let token = c
            .token
            .or(c.auth_key)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                invalid(
                    "token",
                    "client.token: required (a [[users]] token of the relay)".into(),
                )
            })?;
        let proxy = match &c.http_proxy {
            None => None,
            Some(p) => Some(
                parse_proxy(p)
                    .map_err(|m| invalid("http_proxy", format!("client.http_proxy: {m}")))?,
            ),
        };
        let mut forwards = Vec::new();
        for (i, f) in file.forwards.iter().enumerate() {
            let listen = f.listen.parse().map_err(|_| {
                invalid(
                    "listen",
                    format!("forwards[{i}].listen: {:?} is not host:port", f.listen),
                )
            })?;
            let t = parse_target(&f.target)
                .ok()
                .filter(|t| t.tcp)
                .ok_or_else(|| {
                    invalid(
                        "target",
                        format!(
                            "forwards[{i}].target: {:?} is not tcp://host:port",
                            f.target
                        ),
                    )
                })?;
            forwards.push(Forward {
                listen,
                target: format!("tcp://{}", t.host_header),
            });
        }
        Ok(ClientConfig {
            server,
            token,
            skip_verify: c.skip_verify,
            ca_cert_path: c.ca_cert_path,
            proxy,
            connect_timeout_secs: c.connect_timeout_secs.max(1),
            forwards,
        })
    }
}

/// `server = "wss://host/path"`, or the seed's `server_addr`/`server_port`
/// with `transport = "wss"`; `path` overrides the URL's path.
fn server_url(c: &ClientSection) -> Result<TargetUrl, (&'static str, String)> {
    let url = match (&c.server, &c.server_addr) {
        (Some(s), _) => s.clone(),
        (None, Some(addr)) => {
            let scheme = match c.transport.as_deref() {
                None | Some("wss") => "wss",
                Some("ws") => "ws",
                Some(other) => {
                    return Err((
                        "transport",
                        format!("client.transport: {other:?} is not supported here: use \"wss\" (or \"ws\")"),
                    ))
                }
            };
            format!("{scheme}://{addr}:{}/", c.server_port.unwrap_or(443))
        }
        (None, None) => {
            return Err((
                "server",
                "client.server: required, e.g. \"wss://relay.example.com/\"".into(),
            ))
        }
    };
    let mut t =
        parse_target(&url).map_err(|e| ("server", format!("client.server: {}", e.detail)))?;
    if t.tcp {
        return Err(("server", "client.server: must be ws:// or wss://".into()));
    }
    if let Some(p) = &c.path {
        if !p.starts_with('/') {
            return Err(("path", "client.path: must start with '/'".into()));
        }
        t.path = p.clone();
    }
    Ok(t)
}

fn parse_proxy(url: &str) -> Result<HttpProxy, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// proxies (HTTP CONNECT) are supported")?;
    let rest = rest.trim_end_matches('/');
    let (credentials, authority) = match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let decoded =
                crate::http::url::percent_decode(userinfo).ok_or("bad %-escape in user info")?;
            (Some(decoded), host)
        }
        None => (None, rest),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "bad proxy port")?),
        None => (authority, 80),
    };
    if host.is_empty() {
        return Err("proxy host missing".into());
    }
    Ok(HttpProxy {
        host: host.trim_matches(['[', ']']).to_string(),
        port,
        credentials,
    })
}

fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(key)
                && (key.starts_with('[') || t[key.len()..].trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientConfig, ClientConfigError> {
        ClientConfig::parse(Path::new("client.toml"), text)
    }

    #[test]
    fn own_format() {
        let c = parse(
            "[client]\nserver = \"wss://relay.example.com/\"\ntoken = \"t\"\nhttp_proxy = \"http://us%40r:p:w@proxy:3128\"\npath = \"/tunnel\"\n[[forwards]]\nlisten = \"127.0.0.1:2222\"\ntarget = \"tcp://10.0.0.5:22\"\n",
        )
        .unwrap();
        assert_eq!(c.server.path, "/tunnel");
        assert!(c.server.secure);
        let p = c.proxy.as_ref().unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy", 3128));
        assert_eq!(p.credentials.as_deref(), Some("us@r:p:w"));
        assert_eq!(c.forwards[0].target, "tcp://10.0.0.5:22");
        assert!(!format!("{c:?}").contains("p:w"));
    }

    #[test]
    fn seed_format_and_its_reverse_proxies() {
        let seed = "[client]\nserver_addr = \"your-server.com\"\nserver_port = 443\ntransport = \"wss\"\nauth_key = \"k\"\nskip_verify = false\n";
        let c = parse(seed).unwrap();
        assert_eq!(c.server.host_header, "your-server.com");
        assert_eq!(c.token, "k");
        let with_proxies = format!("{seed}[[proxies]]\nname = \"ssh\"\nproxy_type = \"tcp\"\npublish_addr = \"0.0.0.0\"\npublish_port = 2222\nlocal_port = 22\n");
        let e = parse(&with_proxies).err().unwrap().to_string();
        assert!(
            e.starts_with("client.toml:7:") && e.contains("not built yet"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[client]\nserver = \"wss://h/\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("client.token: required"), "{e}");
        let e = parse("[client]\nserver = \"wss://h/\"\ntoken = \"t\"\n[[forwards]]\nlisten = \"x\"\ntarget = \"tcp://h:1\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("client.toml:5: forwards[0].listen"), "{e}");
        let e = parse(
            "[client]\nserver = \"wss://h/\"\ntoken = \"t\"\nhttp_proxy = \"socks5://p:1\"\n",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("client.toml:4: client.http_proxy"), "{e}");
        let e = parse("[client]\nserver = \"wss://h/\"\ntoken = \"t\"\nbogus = 1\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(":4:"), "{e}");
    }
}
