//! Client-side TLS for `wss://`: a rustls config (ring provider) trusting a
//! given CA file, or trusting anything with `--insecure`; session
//! resumption on or off (for `connect`'s full vs resumed handshakes).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("wss:// needs a trust anchor: pass --ca FILE (PEM) or --insecure")]
    NoTrust,
    #[error("cannot read CA file {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA file {0} holds no usable certificate")]
    EmptyCa(PathBuf),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// Where trust comes from.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Accept any certificate (self-signed test targets and relays).
    Insecure,
    /// Trust the certificates in this PEM file.
    CaFile(PathBuf),
}

/// The ring provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a client config. `resume`: keep an in-memory session store so
/// later connections from the same config resume.
pub fn client_config(
    trust: &Trust,
    resume: bool,
) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth(),
        Trust::CaFile(path) => builder
            .with_root_certificates(load_roots(path)?)
            .with_no_client_auth(),
    };
    config.resumption = if resume {
        Resumption::in_memory_sessions(1024)
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|source| TlsSetupError::Ca {
        path: path.into(),
        source,
    })?;
    for cert in certs {
        let cert = cert.map_err(|source| TlsSetupError::Ca {
            path: path.into(),
            source,
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsSetupError::EmptyCa(path.into()));
    }
    Ok(roots)
}

/// The TLS server name for a URL host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsSetupError::ServerName(host.into()))
}

/// `--insecure`: skips certificate validation but still checks handshake
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
