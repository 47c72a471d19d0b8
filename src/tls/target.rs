//! Trust toward `wss://` targets: bundled web PKI roots or the system store,
//! an optional private CA file, or (explicitly) no verification. Each shard
//! builds its own `ClientConfig` from the shared roots, so each has its own
//! resumption store; configs are built per shard and per reload, never per
//! session.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tracing::warn;

use super::{provider, TlsError};
use crate::config::{RouteSpec, ServerConfig, TlsRoots};

/// Sessions remembered per shard toward targets.
const RESUMPTION_SESSIONS: usize = 256;

/// Each route's own trust (`ca_file`, `insecure_skip_verify`), by route
/// name; routes without one use the server's.
pub type RouteTrust = std::collections::HashMap<String, TargetTrust>;

/// Everything shards need to build their target client configs.
#[derive(Clone)]
pub struct TargetTrust {
    roots: Arc<RootCertStore>,
    skip_verify: bool,
    early_data: bool,
}

impl TargetTrust {
    /// Loads roots (file I/O: control plane only).
    pub fn load(server: &ServerConfig) -> Result<TargetTrust, TlsError> {
        let ca = server
            .target_ca_file
            .as_deref()
            .map(|p| ("target_ca_file", p));
        let trust = Self::build(server, ca, server.insecure_skip_verify)?;
        if trust.skip_verify {
            warn!("insecure_skip_verify = true: target certificates are NOT verified");
        }
        Ok(trust)
    }

    /// Trust toward one route's `wss://` upstreams: its own `ca_file` and
    /// `insecure_skip_verify` where set, the server's otherwise.
    pub fn for_route(server: &ServerConfig, route: &RouteSpec) -> Result<TargetTrust, TlsError> {
        let ca = match &route.ca_file {
            Some(p) => Some(("ca_file", p.as_str())),
            None => server
                .target_ca_file
                .as_deref()
                .map(|p| ("target_ca_file", p)),
        };
        let skip = route
            .insecure_skip_verify
            .unwrap_or(server.insecure_skip_verify);
        let mut trust = Self::build(server, ca, skip)?;
        // 0-RTT needs the buffered rustls client; routes never use it.
        trust.early_data = false;
        if skip {
            warn!(route = %route.name, "insecure_skip_verify: upstream certificates are NOT verified");
        }
        Ok(trust)
    }

    fn build(
        server: &ServerConfig,
        ca_file: Option<(&'static str, &str)>,
        skip_verify: bool,
    ) -> Result<TargetTrust, TlsError> {
        let mut roots = RootCertStore::empty();
        match server.tls_roots {
            TlsRoots::Bundled => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            TlsRoots::System => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map_or("none found".to_string(), |e| e.to_string());
                    return Err(TlsError::SystemRoots(why));
                }
            }
        }
        if let Some((key, path)) = ca_file {
            let pem = |problem: String| TlsError::Pem {
                key,
                path: path.to_string(),
                problem,
            };
            let bytes = std::fs::read(path).map_err(|error| TlsError::Read {
                key,
                path: path.to_string(),
                error,
            })?;
            let certs = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem(e.to_string()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(pem("no usable CA certificate".into()));
            }
        }
        Ok(TargetTrust {
            roots: Arc::new(roots),
            skip_verify,
            early_data: server.target_early_data,
        })
    }

    /// A fresh client config with its own resumption store (one per shard).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let mut config = if self.skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        config.resumption = rustls::client::Resumption::in_memory_sessions(RESUMPTION_SESSIONS);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.enable_early_data = self.early_data;
        // The relay protects records itself after the handshake (tls::stream).
        config.enable_secret_extraction = true;
        Ok(Arc::new(config))
    }
}

/// `ServerName` for SNI and verification from a target host.
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    ServerName::try_from(host.to_string()).ok()
}

/// `insecure_skip_verify`: accepts any certificate, still checks signatures
/// so the handshake itself stays sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
