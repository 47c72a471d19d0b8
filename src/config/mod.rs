//! Loading and validating `config.toml` into a [`Config`] the engine can trust.
//!
//! Owns: reading the file, turning TOML/serde errors and semantic errors into a
//! [`ConfigError`] that names the file, line and key. Must not: start anything,
//! touch sockets, or log token values.

mod hub;
mod model;
mod users;

use std::path::{Path, PathBuf};

pub use hub::{HubConfig, ENV_OVERRIDES, MIN_API_KEY_LEN};
pub use model::{
    ConfigFile, DriverChoice, ForwardMode, LoggingConfig, Rotation, ServerConfig, TlsRoots,
    UserConfig,
};
pub use users::{SessionSlot, TargetPattern, User, UserTable};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub server: ServerConfig,
    pub logging: LoggingConfig,
    pub users: UserTable,
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
        let mut hub_cfg = file.hub;
        let env_overrides = hub::apply_env(&mut hub_cfg, &mut server.port, env)
            .map_err(|m| invalid(find_key(text, m.0), m.1))?;
        validate_server(&server).map_err(|m| invalid(find_key(text, m.0), m.1))?;
        hub::validate(&hub_cfg, &server.relay_path)
            .map_err(|m| invalid(find_hub_key(text, m.0), m.1))?;
        let users = UserTable::from_config(&file.users).map_err(|(o, m)| invalid(o, m))?;
        let base = path.parent().unwrap_or(Path::new("."));
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
