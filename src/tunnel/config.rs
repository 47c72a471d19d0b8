//! `client.toml` for `ws-relay-core tunnel`: the relay to reach, the token,
//! TLS trust, an optional HTTP CONNECT proxy, the forwards, and the
//! reverse tunnels (`[[proxies]]`).
//!
//! Also reads the tls-tunnel seed's `client-wss.toml` keys (`server_addr`,
//! `server_port`, `transport`, `auth_key`), so its users switch by changing
//! the binary. Must not: log the token or proxy password.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::ws::target::{parse_target, TargetUrl};

/// The relay's config error: same file, line and key reporting.
pub use crate::config::ConfigError as ClientConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    client: ClientSection,
    #[serde(default)]
    forwards: Vec<ForwardSection>,
    /// Reverse tunnels, in the seed's shape.
    #[serde(default)]
    proxies: Vec<ProxySection>,
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
    /// Reverse tunnels' keepalive ping interval; three missed = dead.
    #[serde(default = "default_keepalive")]
    keepalive_secs: u64,
    // The seed's names.
    server_addr: Option<String>,
    server_port: Option<u16>,
    transport: Option<String>,
    auth_key: Option<String>,
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_keepalive() -> u64 {
    crate::forward::mux::DEFAULT_KEEPALIVE_SECS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxySection {
    name: String,
    #[serde(default = "default_proxy_type")]
    proxy_type: String,
    #[serde(default = "default_publish_addr")]
    publish_addr: String,
    publish_port: u16,
    #[serde(default = "default_local_addr")]
    local_addr: String,
    local_port: u16,
}

fn default_proxy_type() -> String {
    "tcp".into()
}

fn default_publish_addr() -> String {
    "0.0.0.0".into()
}

fn default_local_addr() -> String {
    "127.0.0.1".into()
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

/// One `[[proxies]]` entry: publish `local_host:local_port` (reached from
/// this machine) on `publish` of the relay host.
#[derive(Debug, Clone)]
pub struct Publish {
    pub name: String,
    pub publish: SocketAddr,
    pub local_host: String,
    pub local_port: u16,
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
    pub keepalive_secs: u64,
    pub forwards: Vec<Forward>,
    pub proxies: Vec<Publish>,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server.host_header)
            .field("token", &"<redacted>")
            .field("proxy", &self.proxy)
            .field("forwards", &self.forwards)
            .field("proxies", &self.proxies)
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
        let proxies = publishes(&file.proxies).map_err(|(k, m)| invalid(k, m))?;
        Ok(ClientConfig {
            server,
            token,
            skip_verify: c.skip_verify,
            ca_cert_path: c.ca_cert_path,
            proxy,
            connect_timeout_secs: c.connect_timeout_secs.max(1),
            keepalive_secs: crate::forward::mux::keepalive_secs(c.keepalive_secs),
            forwards,
            proxies,
        })
    }
}

/// `[[proxies]]`: `proxy_type = "http/1.1"` is carried as TCP, like
/// `"tcp"` (HTTP/1.1 is bytes on a stream; the relay does not parse it).
fn publishes(entries: &[ProxySection]) -> Result<Vec<Publish>, (&'static str, String)> {
    let mut out: Vec<Publish> = Vec::with_capacity(entries.len());
    for (i, p) in entries.iter().enumerate() {
        if out.iter().any(|o| o.name == p.name) {
            return Err((
                "name",
                format!("proxies[{i}].name: duplicate name {:?}", p.name),
            ));
        }
        if !matches!(p.proxy_type.as_str(), "tcp" | "http/1.1") {
            return Err((
                "proxy_type",
                format!(
                    "proxies[{i}].proxy_type: {:?} is not supported: use \"tcp\" (\"http/1.1\" is carried as tcp)",
                    p.proxy_type
                ),
            ));
        }
        let ip: std::net::IpAddr = p.publish_addr.parse().map_err(|_| {
            (
                "publish_addr",
                format!(
                    "proxies[{i}].publish_addr: {:?} is not an IP address",
                    p.publish_addr
                ),
            )
        })?;
        if p.publish_port == 0 || p.local_port == 0 {
            return Err((
                "publish_port",
                format!("proxies[{i}]: publish_port and local_port must not be 0"),
            ));
        }
        let publish = SocketAddr::new(ip, p.publish_port);
        if out.iter().any(|o| o.publish == publish) {
            return Err((
                "publish_port",
                format!("proxies[{i}].publish_port: {publish} is published twice"),
            ));
        }
        out.push(Publish {
            name: p.name.clone(),
            publish,
            local_host: p.local_addr.trim_matches(['[', ']']).to_string(),
            local_port: p.local_port,
        });
    }
    Ok(out)
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
        // The seed's own two entries, as written.
        let with_proxies = format!("{seed}[[proxies]]\nname = \"web-server\"\nproxy_type = \"http/1.1\"\npublish_addr = \"0.0.0.0\"\npublish_port = 8080\nlocal_port = 80\n\n[[proxies]]\nname = \"ssh-server\"\nproxy_type = \"tcp\"\npublish_addr = \"0.0.0.0\"\npublish_port = 2222\nlocal_port = 22\n");
        let c = parse(&with_proxies).unwrap();
        assert_eq!(c.proxies.len(), 2);
        assert_eq!(c.proxies[1].publish, "0.0.0.0:2222".parse().unwrap());
        assert_eq!(
            (c.proxies[1].local_host.as_str(), c.proxies[1].local_port),
            ("127.0.0.1", 22)
        );
        assert_eq!(c.keepalive_secs, 10);
        let bad = format!("{seed}[[proxies]]\nname = \"x\"\nproxy_type = \"udp\"\npublish_port = 1\nlocal_port = 2\n");
        let e = parse(&bad).err().unwrap().to_string();
        assert!(e.starts_with("client.toml:9: proxies[0].proxy_type"), "{e}");
        let twice = format!("{seed}[[proxies]]\nname = \"a\"\npublish_port = 1\nlocal_port = 2\n[[proxies]]\nname = \"b\"\npublish_port = 1\nlocal_port = 3\n");
        let e = parse(&twice).err().unwrap().to_string();
        assert!(e.contains("published twice"), "{e}");
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
