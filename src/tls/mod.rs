//! TLS setup (rustls with the ring provider): the listener's identity and
//! per-shard server configs, and trust toward `wss://` targets.
//!
//! Everything here runs in the control plane (it reads files); shards only
//! receive finished configs. Must not: log key material; generate a
//! certificate unless `tls_self_signed = true` allows it.

pub mod buffered;
pub mod handshake;
pub mod listener;
pub mod record;
pub mod stream;
pub mod target;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// Why TLS could not be set up. Each names the config key and file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    // The OS error is in the message, not a `source`: `{:#}` at the
    // binary's edge would print it twice otherwise.
    #[error("{}: cannot read {path}: {error}", qualified(key))]
    Read {
        key: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{}: cannot write {path}: {error}", qualified(key))]
    Write {
        key: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{}: {path}: {problem}", qualified(key))]
    Pem {
        key: &'static str,
        path: String,
        problem: String,
    },
    #[error("server.tls_cert/tls_key: certificate and key do not form a usable identity: {0}")]
    Identity(rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("server.tls_roots = \"system\": no usable system root certificates ({0})")]
    SystemRoots(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// `ca_file` belongs to a `[[routes]]` entry; every other key to `[server]`.
fn qualified(key: &str) -> String {
    match key {
        "ca_file" => "routes.ca_file".to_string(),
        k => format!("server.{k}"),
    }
}

impl TlsError {
    /// The `[server]` key an operator should look at.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::Write { key, .. }
            | TlsError::Pem { key, .. } => key,
            TlsError::Identity(_) | TlsError::Generate(_) => "tls_cert",
            TlsError::SystemRoots(_) => "tls_roots",
            TlsError::Rustls(_) => "enable_tls",
        }
    }
}

/// The one crypto provider every config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 fingerprint as colon-separated hex, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
