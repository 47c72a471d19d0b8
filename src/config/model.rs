//! The shape of `config.toml`: every key, its default, and nothing else.
//!
//! Owns the serde model only. Validation that needs more than types (duplicate
//! tokens, empty fields, file access) lives in `validate.rs`; nothing here does
//! I/O. Keys of the original ws-relay-core keep their names and meanings.

use serde::Deserialize;
use toml::Spanned;

/// The whole file. Unknown keys are errors, so a typo never silently falls
/// back to a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub routes: Vec<super::routes::RouteConfig>,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub demo: DemoConfig,
    #[serde(default)]
    pub page: PageConfig,
    #[serde(default)]
    pub hub: super::hub::HubConfig,
}

/// How bytes move between client and target once both handshakes are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// Readiness-driven read/write through a pooled buffer.
    Copy,
    /// Readiness-driven non-blocking `splice(2)` through a pooled pipe
    /// (plain TCP on both sides only; TLS sessions fall back to copy).
    Splice,
    /// `copy` whose reads are io_uring receives that take a buffer from the
    /// shard's provided-buffer ring when data arrives (plain TCP sources;
    /// a TLS source, or no io_uring, reads as `copy`).
    Ring,
}

/// Where trust for `wss://` targets comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsRoots {
    /// The web PKI roots compiled in (webpki-roots).
    Bundled,
    /// The operating system's store (rustls-native-certs).
    System,
}

/// Which monoio driver the shards run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriverChoice {
    /// io_uring when the kernel allows it, else epoll with one warning.
    Auto,
    /// io_uring or fail to start.
    IoUring,
    /// The epoll ("legacy") driver.
    Legacy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub enable_tls: bool,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_self_signed: bool,
    pub auth_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub insecure_skip_verify: bool,
    // --- keys added by this engine ---
    pub tls_roots: TlsRoots,
    pub target_ca_file: Option<String>,
    pub target_early_data: bool,
    pub workers: usize,
    pub driver: DriverChoice,
    pub backlog: u32,
    pub forward: ForwardMode,
    pub relay_path: String,
    pub connect_timeout_secs: u64,
    pub allow_private_targets: bool,
    pub auth_fail_limit_per_min: u32,
    pub max_connections: usize,
    pub max_request_head_bytes: usize,
    pub max_request_headers: usize,
    pub max_auth_message_bytes: usize,
    pub buffer_size: usize,
    pub shutdown_grace_secs: u64,
    pub control_socket: String,
    pub dns_cache_secs: u64,
    /// Bearer token that opens `/metrics` to non-loopback clients.
    pub metrics_token: Option<Redacted>,
    /// Serve `/metrics` to loopback clients without a token. Turn off when a
    /// proxy on the same host makes every client look local.
    pub metrics_allow_loopback: bool,
    /// `[demo]` and `[page]`, copied here by `Config::parse` so shards (and
    /// reloads) get them with the rest of the front door's settings.
    #[serde(skip)]
    pub demo: DemoConfig,
    #[serde(skip)]
    pub page: PageConfig,
}

/// A secret string: deserializes as a plain string, never prints.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::ops::Deref for Redacted {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// `[demo]`: the Axum seed's echo/broadcast app (docs/demo.md "Demo app protocol").
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    pub enabled: bool,
    pub path: String,
    /// Broadcast frames a slow client may have queued before it is closed
    /// with 1013.
    pub max_queue_messages: usize,
    /// Largest request message a demo client may send.
    pub max_message_bytes: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            path: "/demo".into(),
            max_queue_messages: 256,
            max_message_bytes: 64 * 1024,
        }
    }
}

/// `[page]`: the single-file browser test page.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PageConfig {
    pub enabled: bool,
    pub path: String,
}

impl Default for PageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/".into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".into(),
            port: 443,
            enable_tls: true,
            tls_cert: None,
            tls_key: None,
            tls_self_signed: false,
            auth_timeout_secs: 10,
            idle_timeout_secs: 600,
            insecure_skip_verify: false,
            tls_roots: TlsRoots::Bundled,
            target_ca_file: None,
            target_early_data: false,
            workers: 0,
            driver: DriverChoice::Auto,
            backlog: 4096,
            forward: ForwardMode::Splice,
            relay_path: "/".into(),
            connect_timeout_secs: 10,
            allow_private_targets: false,
            auth_fail_limit_per_min: 30,
            max_connections: 100_000,
            max_request_head_bytes: 8 * 1024,
            max_request_headers: 100,
            max_auth_message_bytes: 64 * 1024,
            buffer_size: 16 * 1024,
            shutdown_grace_secs: 30,
            control_socket: "ws-relay-core.sock".into(),
            dns_cache_secs: 30,
            metrics_token: None,
            metrics_allow_loopback: true,
            demo: DemoConfig::default(),
            page: PageConfig::default(),
        }
    }
}

/// One `[[users]]` entry. Spans are kept so validation errors can name the
/// line of the offending key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: Spanned<String>,
    pub token: Spanned<String>,
    /// Prefix patterns (`wss://host/path*`); absent = any public target.
    #[serde(default)]
    pub allowed_targets: Option<Vec<String>>,
    /// Concurrent sessions across all shards; 0 = unlimited.
    #[serde(default)]
    pub max_sessions: usize,
    /// Names of the `[[routes]]` with `auth = "token"` this user may use;
    /// absent = all of them.
    #[serde(default)]
    pub routes: Option<Vec<Spanned<String>>>,
    /// Ports this user's reverse tunnels may publish on the relay host
    /// (`publish://ADDR:PORT`); absent or empty = none.
    #[serde(default)]
    pub publish_ports: Option<Spanned<Vec<u16>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    Daily,
    Hourly,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    pub level: String,
    /// Log directory (default "logs"); an empty string writes no log files.
    pub directory: String,
    pub file_prefix: String,
    pub rotation: Rotation,
    pub console_output: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            directory: "logs".into(),
            file_prefix: "ws-relay".into(),
            rotation: Rotation::Daily,
            console_output: true,
        }
    }
}
