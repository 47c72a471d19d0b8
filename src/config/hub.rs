//! `[hub]`: the push hub's keys, their defaults, the seed's environment
//! overrides, and the checks that need more than types.
//!
//! Must not: log or echo `api_key` (errors name the key, never its value),
//! or do I/O beyond reading the environment.

use serde::Deserialize;

/// `[hub]` in `config.toml`. Off by default: a relay-only config is unchanged.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    pub enabled: bool,
    pub ws_path: String,
    pub push_path: String,
    /// Required when enabled, at least [`MIN_API_KEY_LEN`] characters.
    pub api_key: String,
    /// `redis://host:port/db`; absent = single instance, delayed pushes in memory.
    pub redis_url: Option<String>,
    /// Prefix of the Redis channel (`<prefix>:push`) and sorted set (`<prefix>:delayed`).
    pub redis_prefix: String,
    /// Frames queued per client before it counts as too slow (closed with 1013).
    pub max_queue_messages: usize,
    /// Largest push request body.
    pub max_push_body_bytes: usize,
    /// Largest message a hub client may send (identify); larger ones close with 1009.
    pub max_client_message_bytes: usize,
    /// Exact `Origin` values browsers may connect from; empty = any. Requests
    /// without `Origin` (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Seconds an idle keep-alive push connection stays open.
    pub keepalive_timeout_secs: u64,
    /// Messages kept per stream for recovery; 0 = history off (the seed's
    /// behaviour: no offsets, nothing kept).
    pub history_size: usize,
    /// A stream's history is forgotten this long after its last message;
    /// its next message starts a new epoch.
    pub history_ttl_secs: u64,
    /// `[hub.jwt]`: client tokens are JWTs whose `sub` is the user.
    pub jwt: Option<JwtConfig>,
    /// Connections one user may have on this instance; the next is closed
    /// with 4029. 0 = no limit.
    pub max_connections_per_user: usize,
}

/// `[hub.jwt]`. The key files are read by the hub at start and on every
/// reload (this module does no I/O).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// `HS256`, `RS256` or `ES256`; tokens with any other `alg` are refused.
    pub algorithm: String,
    /// HS256: the shared secret, at least [`MIN_JWT_SECRET_LEN`] bytes.
    pub secret: String,
    /// RS256/ES256: a PEM public key ...
    pub public_key_file: Option<std::path::PathBuf>,
    /// ... or a JWKS file (keys picked by the token's `kid`).
    pub jwks_file: Option<std::path::PathBuf>,
    /// Connections without a token are allowed (broadcasts only).
    pub allow_anonymous: bool,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// When set, the token's `aud` must contain it.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal it.
    pub issuer: Option<String>,
}

/// Shortest HS256 secret: 256 bits, as RFC 7518 §3.2 asks.
pub const MIN_JWT_SECRET_LEN: usize = 32;

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: "HS256".into(),
            secret: String::new(),
            public_key_file: None,
            jwks_file: None,
            allow_anonymous: false,
            leeway_secs: 0,
            audience: None,
            issuer: None,
        }
    }
}

// Hand-written so `{:?}` never prints the secret.
impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("allow_anonymous", &self.allow_anonymous)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

/// Largest `history_size`: a recovery replays at most this many messages
/// in one go, and each is held in memory while it is sent.
pub const MAX_HISTORY_SIZE: usize = 1_000_000;

/// Shortest accepted `api_key`.
pub const MIN_API_KEY_LEN: usize = 16;

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ws_path: "/ws".into(),
            push_path: "/api/push".into(),
            api_key: String::new(),
            redis_url: None,
            redis_prefix: "ws-relay-core:hub".into(),
            max_queue_messages: 256,
            max_push_body_bytes: 64 * 1024,
            max_client_message_bytes: 4096,
            allowed_origins: Vec::new(),
            keepalive_timeout_secs: 60,
            history_size: 0,
            history_ttl_secs: 300,
            jwt: None,
            max_connections_per_user: 0,
        }
    }
}

// Hand-written so `{:?}` of a config can never print the key.
impl std::fmt::Debug for HubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubConfig")
            .field("enabled", &self.enabled)
            .field("ws_path", &self.ws_path)
            .field("push_path", &self.push_path)
            .field("api_key", &"<redacted>")
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field("max_queue_messages", &self.max_queue_messages)
            .field("allowed_origins", &self.allowed_origins)
            .field("history_size", &self.history_size)
            .field("history_ttl_secs", &self.history_ttl_secs)
            .field("jwt", &self.jwt)
            .field("max_connections_per_user", &self.max_connections_per_user)
            .finish_non_exhaustive()
    }
}

/// The seed's environment variables and the keys they override. They apply
/// only when `[hub] enabled = true`, so a relay-only deployment never changes
/// its port because some unrelated `PORT` is set.
pub const ENV_OVERRIDES: [(&str, &str); 4] = [
    ("RELAY_API_KEY", "hub.api_key"),
    ("WS_PATH", "hub.ws_path"),
    ("PUSH_PATH", "hub.push_path"),
    ("PORT", "server.port"),
];

/// Applies [`ENV_OVERRIDES`] from `env`; returns the keys overridden, or
/// (key, message) when a value is unusable.
pub(crate) fn apply_env(
    hub: &mut HubConfig,
    port: &mut u16,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<&'static str>, (&'static str, String)> {
    let mut applied = Vec::new();
    if !hub.enabled {
        return Ok(applied);
    }
    for (var, key) in ENV_OVERRIDES {
        let Some(v) = env(var).filter(|v| !v.is_empty()) else {
            continue;
        };
        match var {
            "RELAY_API_KEY" => hub.api_key = v,
            "WS_PATH" => hub.ws_path = v,
            "PUSH_PATH" => hub.push_path = v,
            _ => {
                *port = v
                    .trim()
                    .parse()
                    .map_err(|_| ("port", format!("PORT={v:?}: not a port number")))?
            }
        }
        applied.push(key);
    }
    Ok(applied)
}

/// Semantic checks; returns (key, message) for the first problem.
pub(crate) fn validate(hub: &HubConfig, relay_path: &str) -> Result<(), (&'static str, String)> {
    if !hub.enabled {
        return Ok(());
    }
    if hub.api_key.chars().count() < MIN_API_KEY_LEN {
        let how = if hub.api_key.is_empty() {
            "is required when the hub is enabled (or set RELAY_API_KEY)".to_string()
        } else {
            format!("must be at least {MIN_API_KEY_LEN} characters")
        };
        return Err(("api_key", format!("hub.api_key: {how}")));
    }
    for (key, path) in [("ws_path", &hub.ws_path), ("push_path", &hub.push_path)] {
        if !path.starts_with('/') || path.contains('?') {
            return Err((
                key,
                format!("hub.{key}: must start with '/' and have no query"),
            ));
        }
        if path == relay_path || path == "/health" {
            return Err((
                key,
                format!("hub.{key}: {path:?} is already served (relay_path or /health)"),
            ));
        }
    }
    if hub.ws_path == hub.push_path {
        return Err((
            "push_path",
            "hub.push_path: must differ from hub.ws_path".into(),
        ));
    }
    if hub.max_queue_messages == 0 {
        return Err((
            "max_queue_messages",
            "hub.max_queue_messages: must be at least 1".into(),
        ));
    }
    if hub.max_push_body_bytes < 64 {
        return Err((
            "max_push_body_bytes",
            "hub.max_push_body_bytes: must be at least 64".into(),
        ));
    }
    if hub.max_client_message_bytes < 64 {
        return Err((
            "max_client_message_bytes",
            "hub.max_client_message_bytes: must be at least 64".into(),
        ));
    }
    if hub.history_size > 0 && hub.history_ttl_secs == 0 {
        return Err((
            "history_ttl_secs",
            "hub.history_ttl_secs: must be at least 1 when history_size is set".into(),
        ));
    }
    if hub.history_size > MAX_HISTORY_SIZE {
        return Err((
            "history_size",
            format!("hub.history_size: at most {MAX_HISTORY_SIZE} messages per stream"),
        ));
    }
    if let Some(jwt) = &hub.jwt {
        let msg = match jwt.algorithm.as_str() {
            "HS256" if jwt.secret.len() < MIN_JWT_SECRET_LEN => Some(format!(
                "hub.jwt.secret: HS256 needs a secret of at least {MIN_JWT_SECRET_LEN} bytes"
            )),
            "HS256" if jwt.public_key_file.is_some() || jwt.jwks_file.is_some() => {
                Some("hub.jwt: HS256 uses secret, not key files".into())
            }
            "HS256" => None,
            "RS256" | "ES256" if jwt.public_key_file.is_some() == jwt.jwks_file.is_some() => {
                Some(format!(
                    "hub.jwt: {} needs exactly one of public_key_file and jwks_file",
                    jwt.algorithm
                ))
            }
            "RS256" | "ES256" if !jwt.secret.is_empty() => Some(format!(
                "hub.jwt: {} uses a public key, not secret",
                jwt.algorithm
            )),
            "RS256" | "ES256" => None,
            other => Some(format!(
                "hub.jwt.algorithm: {other:?} is not one of HS256, RS256, ES256"
            )),
        };
        if let Some(m) = msg {
            return Err(("jwt", m));
        }
    }
    if let Some(url) = &hub.redis_url {
        // Shards open their own TCP connections to Redis (docs/hub.md).
        if !url.starts_with("redis://") {
            return Err((
                "redis_url",
                "hub.redis_url: must be redis://[user:password@]host:port[/db]".into(),
            ));
        }
    }
    Ok(())
}
