//! Server-side TLS for the echo server: a certificate from PEM files, or a
//! self-signed one generated at start (for `localhost` and `127.0.0.1`),
//! with session resumption enabled so `connect` can compare full and
//! resumed handshakes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::ServerSessionMemoryCache;

/// Server TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    #[error("cannot read {path}: {source}")]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A ready server config and a line describing the certificate.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub description: String,
}

/// Loads `cert`/`key` PEM files, or generates a self-signed certificate
/// (written as PEM to `cert_out` when given, for clients' `--ca`).
pub fn server_tls(
    files: Option<(&Path, &Path)>,
    cert_out: Option<&Path>,
) -> Result<ServerTls, ServerTlsError> {
    let (certs, key, description) = match files {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|source| ServerTlsError::Pem {
                    path: cert.into(),
                    source,
                })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| ServerTlsError::Pem {
                path: key.into(),
                source,
            })?;
            (certs, key, format!("certificate {}", cert.display()))
        }
        None => {
            let generated = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
            ])?;
            if let Some(path) = cert_out {
                std::fs::write(path, generated.cert.pem()).map_err(|source| {
                    ServerTlsError::Write {
                        path: path.into(),
                        source,
                    }
                })?;
            }
            let key =
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
            (
                vec![generated.cert.der().clone()],
                key,
                "self-signed certificate for localhost, 127.0.0.1".to_string(),
            )
        }
    };
    let mut config = rustls::ServerConfig::builder_with_provider(crate::client::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.session_storage = ServerSessionMemoryCache::new(16 * 1024);
    Ok(ServerTls {
        config: Arc::new(config),
        description,
    })
}
