//! The listener's certificate: loading it (PKCS#8, PKCS#1 and SEC1 keys),
//! generating a self-signed one when allowed, and building each shard's
//! `ServerConfig` — its own session cache, one ticket key for all shards so a
//! resuming client may land anywhere.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache};
use tracing::{info, warn};

use super::{fingerprint, provider, TlsError};
use crate::config::ServerConfig;

/// Default file names for a generated certificate, beside the config file.
pub const SELF_SIGNED_CERT: &str = "self-signed-cert.pem";
pub const SELF_SIGNED_KEY: &str = "self-signed-key.pem";

/// A certificate chain and its key, loaded once per (re)load and shared by
/// reference with every shard.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Paths of the certificate and key, falling back to the self-signed names
/// beside the config file.
pub fn identity_paths(server: &ServerConfig, config_dir: &Path) -> (String, String) {
    let default = |name: &str| config_dir.join(name).display().to_string();
    (
        server
            .tls_cert
            .clone()
            .unwrap_or_else(|| default(SELF_SIGNED_CERT)),
        server
            .tls_key
            .clone()
            .unwrap_or_else(|| default(SELF_SIGNED_KEY)),
    )
}

/// Loads the listener identity, generating a self-signed one first when the
/// files are absent and `tls_self_signed = true`.
/// With `generate = false` (for `check`) nothing is written, and `None`
/// means "a certificate will be generated on first start".
pub fn load_identity(
    server: &ServerConfig,
    config_dir: &Path,
    generate: bool,
) -> Result<Option<Identity>, TlsError> {
    let (cert_path, key_path) = identity_paths(server, config_dir);
    let missing = !Path::new(&cert_path).exists() && !Path::new(&key_path).exists();
    if missing && server.tls_self_signed {
        if !generate {
            return Ok(None);
        }
        generate_self_signed(server, &cert_path, &key_path)?;
    }
    let chain = read_chain(&cert_path)?;
    let key = read_key(&key_path)?;
    // Check the key on its own first, so an error names the right file.
    if let Err(e) = provider().key_provider.load_private_key(key.clone_key()) {
        return Err(TlsError::Pem {
            key: "tls_key",
            path: key_path,
            problem: format!("unusable private key: {e}"),
        });
    }
    let identity = Identity { chain, key };
    // Fails early (at check/reload time) on a malformed certificate or one
    // that does not match the key.
    let ticketer = rustls::crypto::ring::Ticketer::new()?;
    if let Err(e) = build_server_config(&identity, ServerSessionMemoryCache::new(1), ticketer) {
        return Err(TlsError::Pem {
            key: "tls_cert",
            path: cert_path,
            problem: format!("certificate is malformed or does not match {key_path}: {e}"),
        });
    }
    info!(sha256 = %fingerprint(&identity.chain[0]), path = %cert_path, "listener certificate loaded");
    Ok(Some(identity))
}

fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |problem: String| TlsError::Pem {
        key: "tls_cert",
        path: path.into(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        key: "tls_cert",
        path: path.into(),
        error,
    })?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(pem("no PEM certificate found".into()));
    }
    Ok(chain)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
        key: "tls_key",
        path: path.into(),
        error,
    })?;
    // Accepts PKCS#8, PKCS#1 (RSA) and SEC1 (EC) PEM blocks.
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        key: "tls_key",
        path: path.into(),
        problem: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}

fn generate_self_signed(
    server: &ServerConfig,
    cert_path: &str,
    key_path: &str,
) -> Result<(), TlsError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !matches!(
        server.host.as_str(),
        "0.0.0.0" | "::" | "127.0.0.1" | "localhost"
    ) {
        names.push(server.host.clone());
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |key: &'static str, path: &str, contents: String, mode: u32| {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let err = |error| TlsError::Write {
            key,
            path: path.into(),
            error,
        };
        // A fresh host may not have the directory yet (`/etc/ws-relay-core/`);
        // it holds a private key, so only the owner may enter it.
        if let Some(dir) = Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(err)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        f.write_all(contents.as_bytes()).map_err(err)
    };
    write(
        "tls_key",
        key_path,
        generated.key_pair.serialize_pem(),
        0o600,
    )?;
    write("tls_cert", cert_path, generated.cert.pem(), 0o644)?;
    warn!(
        sha256 = %fingerprint(generated.cert.der()),
        cert = cert_path,
        "generated a self-signed certificate (tls_self_signed = true); clients must trust or pin it"
    );
    Ok(())
}

/// One shard's server config: its own session cache, the shared ticketer.
pub fn build_server_config(
    identity: &Identity,
    cache: Arc<ServerSessionMemoryCache>,
    ticketer: Arc<dyn ProducesTickets>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(TlsError::Identity)?;
    config.session_storage = cache;
    config.ticketer = ticketer;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // The relay protects records itself after the handshake (tls::stream).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}
