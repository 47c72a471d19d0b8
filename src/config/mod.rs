//! Loading and validating `config.toml` into a [`Config`] the engine can trust.
//!
//! Owns: reading the file, turning TOML/serde errors and semantic errors into a
//! [`ConfigError`] that names the file, line and key. Must not: start anything,
//! touch sockets, or log token values.

mod hub;
mod model;
mod routes;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use hub::{HubConfig, JwtConfig, ENV_OVERRIDES, MIN_API_KEY_LEN};
pub use model::{
    ConfigFile, DemoConfig, DriverChoice, ForwardMode, LoggingConfig, PageConfig, Redacted,
    Rotation, ServerConfig, TlsRoots, UserConfig,
};
pub use routes::{
    HealthCheck, HostRule, RouteAuth, RouteConfig, RouteSlot, RouteSpec, RouteTable, Upstream,
};
pub use users::{SessionSlot, TargetPattern, User, UserTable};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    pub users: UserTable,
    pub routes: RouteTable,
    pub hub: HubConfig,
    /// Keys the environment overrode (`[hub]` seed variables), for the log.
    pub env_overrides: Vec<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

impl Config {
    /// Reads and validates `path`. A relative `control_socket` is resolved
    /// against the config file's directory so `reload` finds the same socket
    /// wherever it is run from.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with_env(path, text, &|k| std::env::var(k).ok())
    }

    /// [`Config::parse`] with the environment supplied (tests pass their own).
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let file: ConfigFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            ConfigError::Invalid {
                path: shown.clone(),
                line,
                message: e.message().to_string(),
            }
        })?;
        let invalid = |offset: usize, message: String| ConfigError::Invalid {
            path: shown.clone(),
            line: line_of(text, offset),
            message,
        };
        let mut server = file.server;
        server.demo = file.demo;
        server.page = file.page;
        let mut hub_cfg = file.hub;
        let env_overrides = hub::apply_env(&mut hub_cfg, &mut server.port, env)
            .map_err(|m| invalid(find_key(text, m.0), m.1))?;
        validate_server(&server).map_err(|m| invalid(find_key(text, m.0), m.1))?;
        validate_paths(&server)
            .map_err(|(section, key, m)| invalid(find_section_key(text, section, key), m))?;
        hub::validate(&hub_cfg, &server.relay_path)
            .map_err(|m| invalid(find_hub_key(text, m.0), m.1))?;
        let users = UserTable::from_config(&file.users).map_err(|(o, m)| invalid(o, m))?;
        let presence = format!("{}/presence", hub_cfg.push_path);
        let mut reserved = routes::Reserved::default();
        reserved.add(&server.relay_path, "server.relay_path");
        reserved.add("/health", "the engine's health check");
        reserved.add("/metrics", "the engine's /metrics");
        if server.demo.enabled {
            reserved.add(&server.demo.path, "demo.path");
        }
        if hub_cfg.enabled {
            reserved.add(&hub_cfg.ws_path, "hub.ws_path");
            reserved.add(&hub_cfg.push_path, "hub.push_path");
            reserved.add(&presence, "the hub's presence endpoint");
        }
        let mut routes =
            RouteTable::from_config(&file.routes, &reserved).map_err(|(o, m)| invalid(o, m))?;
        check_user_routes(&file.users, &routes).map_err(|(o, m)| invalid(o, m))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for route in routes.routes.iter_mut().filter_map(Arc::get_mut) {
            route.ca_file = route.ca_file.as_deref().map(|ca| resolve(base, ca));
        }
        server.control_socket = resolve(base, &server.control_socket);
        if let Some(cert) = &server.tls_cert {
            server.tls_cert = Some(resolve(base, cert));
        }
        if let Some(key) = &server.tls_key {
            server.tls_key = Some(resolve(base, key));
        }
        if let Some(ca) = &server.target_ca_file {
            server.target_ca_file = Some(resolve(base, ca));
        }
        Ok(Config {
            path: path.to_path_buf(),
            server,
            logging: file.logging,
            users,
            routes,
            hub: hub_cfg,
            env_overrides,
        })
    }

    pub fn control_socket(&self) -> PathBuf {
        PathBuf::from(&self.server.control_socket)
    }

    /// The directory relative paths in the config are resolved against.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Every name in a user's `routes = [...]` must be a route.
fn check_user_routes(users: &[UserConfig], routes: &RouteTable) -> Result<(), (usize, String)> {
    for (i, u) in users.iter().enumerate() {
        for name in u.routes.iter().flatten() {
            if !routes.routes.iter().any(|r| &r.name == name.get_ref()) {
                return Err((
                    name.span().start,
                    format!("users[{i}].routes: no route named {:?}", name.get_ref()),
                ));
            }
        }
    }
    Ok(())
}

/// Semantic checks on `[server]`; returns (key, message) on failure.
fn validate_server(s: &ServerConfig) -> Result<(), (&'static str, String)> {
    if !s.relay_path.starts_with('/') {
        return Err((
            "relay_path",
            "server.relay_path: must start with '/'".into(),
        ));
    }
    if s.buffer_size < 1024 || s.buffer_size > 16 * 1024 * 1024 {
        return Err((
            "buffer_size",
            "server.buffer_size: must be between 1024 and 16777216".into(),
        ));
    }
    if s.max_request_head_bytes < 512 {
        return Err((
            "max_request_head_bytes",
            "server.max_request_head_bytes: must be at least 512".into(),
        ));
    }
    if s.auth_timeout_secs == 0 {
        return Err((
            "auth_timeout_secs",
            "server.auth_timeout_secs: must be at least 1 (it also bounds slow request heads)"
                .into(),
        ));
    }
    if s.connect_timeout_secs == 0 {
        return Err((
            "connect_timeout_secs",
            "server.connect_timeout_secs: must be at least 1".into(),
        ));
    }
    if s.enable_tls && !s.tls_self_signed && (s.tls_cert.is_none() || s.tls_key.is_none()) {
        return Err((
            "enable_tls",
            "server.enable_tls: needs tls_cert and tls_key (or tls_self_signed = true)".into(),
        ));
    }
    Ok(())
}

/// Paths the front door routes must not collide: `/health` and `/metrics`
/// are fixed, the demo app may not share the relay path. The page may share
/// a WebSocket path (plain GETs get the page, upgrades the endpoint).
fn validate_paths(s: &ServerConfig) -> Result<(), (&'static str, &'static str, String)> {
    const FIXED: [&str; 2] = ["/health", "/metrics"];
    let mut paths = vec![("server", "relay_path", s.relay_path.as_str())];
    if s.demo.enabled {
        paths.push(("demo", "path", s.demo.path.as_str()));
    }
    if s.page.enabled {
        paths.push(("page", "path", s.page.path.as_str()));
    }
    for (section, key, p) in &paths {
        if !p.starts_with('/') {
            return Err((
                section,
                key,
                format!("{section}.{key}: must start with '/'"),
            ));
        }
        if FIXED.contains(p) {
            return Err((section, key, format!("{section}.{key}: {p} is reserved")));
        }
    }
    if s.demo.enabled && s.demo.path == s.relay_path {
        let msg = format!("demo.path: {} is already server.relay_path", s.demo.path);
        return Err(("demo", "path", msg));
    }
    if s.demo.max_queue_messages == 0 {
        let msg = "demo.max_queue_messages: must be at least 1".to_string();
        return Err(("demo", "max_queue_messages", msg));
    }
    if s.demo.max_message_bytes < 125 {
        let msg = "demo.max_message_bytes: must be at least 125".to_string();
        return Err(("demo", "max_message_bytes", msg));
    }
    if s.metrics_token.as_deref().is_some_and(|t| t.len() < 16) {
        let msg = "server.metrics_token: must be at least 16 characters".to_string();
        return Err(("server", "metrics_token", msg));
    }
    Ok(())
}

/// Offset of `key =` inside `[section]` (or anywhere, if the section header
/// is absent), for errors about keys serde accepted.
fn find_section_key(text: &str, section: &str, key: &str) -> usize {
    let header = format!("[{section}]");
    let start = text
        .split_inclusive('\n')
        .scan(0, |off, line| {
            let here = *off;
            *off += line.len();
            Some((here, line))
        })
        .find(|(_, line)| line.trim() == header)
        .map_or(0, |(off, _)| off);
    start + find_key(&text[start..], key)
}

fn resolve(base: &Path, p: &str) -> String {
    let path = Path::new(p);
    if path.is_absolute() {
        p.to_string()
    } else {
        base.join(path).display().to_string()
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// 1-based line of the first `key =` in the file at `path` (0 if unknown),
/// for errors found after parsing, such as unreadable certificate files.
pub fn line_of_key(path: &Path, key: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|text| match find_key(&text, key) {
            0 if !text.starts_with(key) => 0,
            offset => line_of(&text, offset),
        })
        .unwrap_or(0)
}

/// Offset of `key =` inside `[hub]` (or of `[hub]` itself, or 0).
fn find_hub_key(text: &str, key: &str) -> usize {
    let Some(start) = text.find("[hub]") else {
        return 0;
    };
    match find_key(&text[start..], key) {
        0 => start,
        o => start + o,
    }
}

/// Offset of the first `key =` assignment, for errors about keys that serde
/// accepted but validation rejected.
fn find_key(text: &str, key: &str) -> usize {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return offset;
        }
        offset += line.len();
    }
    0
}

#[cfg(test)]
mod tests;
