//! The listener's identity: self-signed generation (`tls_self_signed = true`
//! with both files absent: files appear beside the config or at the
//! configured paths, key mode 0600, a WARN line with the SHA-256
//! fingerprint, a client trusting the generated file connects, a restart
//! reuses it) and refusal without `tls_self_signed`; and private key formats:
//! PKCS#1 RSA, SEC1 EC (P-256, P-384), PKCS#8 RSA/ECDSA/Ed25519, each served
//! to TLS 1.3 and TLS 1.2 clients that verify the certificate.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::tls::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::Message;

/// The relay at `port` serves `leaf_der`, verifiable with `root`, over TLS 1.3
/// and 1.2, and relays a session.
async fn expect_serves(
    port: u16,
    root: &CertificateDer<'static>,
    leaf_der: &CertificateDer<'static>,
) {
    let target = EchoTarget::plain().await;
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for name in ["localhost", "127.0.0.1"] {
            let cfg = client_config_versions(&[root], &[version]);
            let s = tls(port, &cfg, name).await;
            assert!(
                peer_leaf(&s) == *leaf_der,
                "{:?} {name}: unexpected certificate",
                version.version
            );
            let mut ws = first_message(s, port, TOKEN, &target.url()).await;
            echo(
                &mut ws,
                Message::text(format!("{:?} via {name}", version.version)),
            )
            .await;
            close(ws).await;
        }
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn cert_der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// WARN line(s) announcing a generated certificate.
fn generated_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("generated a self-signed certificate"))
        .collect()
}

fn check_generated(relay: &TlsRelay, cert_name: &str, key_name: &str) -> CertificateDer<'static> {
    let (cert_path, key_path) = (relay.path(cert_name), relay.path(key_name));
    assert!(
        cert_path.exists(),
        "{cert_name} was not generated; dir: {:?}",
        list(relay)
    );
    assert!(
        key_path.exists(),
        "{key_name} was not generated; dir: {:?}",
        list(relay)
    );
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "generated key mode is {mode:o}");
    let key = read(&key_path);
    PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("generated key is a PEM private key");
    let der = cert_der(&read(&cert_path));
    let log = relay.log();
    let lines = generated_lines(&log);
    assert_eq!(
        lines.len(),
        1,
        "one WARN line about the generated certificate:\n{log}"
    );
    assert!(lines[0].contains("WARN"), "not a warning: {}", lines[0]);
    let logged = field(lines[0], "sha256").unwrap_or_else(|| panic!("no sha256= in: {}", lines[0]));
    assert!(
        logged.eq_ignore_ascii_case(&fingerprint(&der)),
        "logged fingerprint {logged} != SHA-256 of {cert_name} {}",
        fingerprint(&der)
    );
    assert!(
        !log.contains("BEGIN PRIVATE KEY") && !log.contains(key.lines().nth(1).unwrap_or("-")),
        "key material in the log"
    );
    der
}

/// Writes `spec` as `dir`/config.toml on a free port and runs `serve`
/// (for configs that must refuse to start).
async fn serve_in(dir: &tempfile::TempDir, spec: &RelaySpec) -> (std::path::PathBuf, CliOutput) {
    let config = dir.path().join("config.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&config, spec.render(port, &dir.path().join("relay.sock"))).unwrap();
    let out = run_cli(&config, "serve").await;
    (config, out)
}

fn list(relay: &TlsRelay) -> Vec<String> {
    std::fs::read_dir(relay.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn self_signed_certificate_is_generated_beside_the_config() {
    let mut relay = TlsRelay::start(RelaySpec::self_signed()).await;
    let der = check_generated(&relay, "self-signed-cert.pem", "self-signed-key.pem");
    // Trusting the generated file is enough (it is its own anchor).
    expect_serves(relay.port, &der, &der).await;

    // A restart reuses the files: same certificate, no second generation.
    relay.restart().await;
    let again = cert_der(&read(&relay.path("self-signed-cert.pem")));
    assert!(again == der, "the certificate changed across a restart");
    assert_eq!(
        generated_lines(&relay.log()).len(),
        1,
        "regenerated on restart:\n{}",
        relay.log()
    );
    let s = tls(relay.port, &client_config(&[&der]), "localhost").await;
    assert!(peer_leaf(&s) == der);
    assert_eq!(http_get(s, "/health").await.status, 200);
}

#[tokio::test]
async fn self_signed_certificate_is_generated_at_configured_paths() {
    let spec = RelaySpec::self_signed()
        .line("tls_cert = \"gen-cert.pem\"")
        .line("tls_key = \"gen-key.pem\"");
    let relay = TlsRelay::start(spec).await;
    let der = check_generated(&relay, "gen-cert.pem", "gen-key.pem");
    assert!(
        !relay.path("self-signed-cert.pem").exists(),
        "default names used: {:?}",
        list(&relay)
    );
    expect_serves(relay.port, &der, &der).await;
}

/// `tls_self_signed = true` never overwrites files that exist: a real
/// certificate is served as is.
#[tokio::test]
async fn tls_self_signed_with_existing_files_serves_them() {
    let ca = Ca::new("existing CA");
    let leaf = ca.leaf(LOCAL_NAMES);
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&leaf).line("tls_self_signed = true")).await;
    assert!(
        generated_lines(&relay.log()).is_empty(),
        "generated despite existing files"
    );
    assert_eq!(read(&relay.path("cert.pem")), leaf.cert_pem);
    expect_serves(relay.port, &ca.der, &leaf.der).await;
}

/// Without `tls_self_signed`, missing files are an error naming the key:
/// `serve` exits non-zero and nothing is generated.
#[tokio::test]
async fn missing_files_without_tls_self_signed_refuse_to_start() {
    let cases = [
        RelaySpec {
            enable_tls: true,
            ..RelaySpec::plain()
        }
        .line("tls_cert = \"absent-cert.pem\"")
        .line("tls_key = \"absent-key.pem\""),
        RelaySpec {
            enable_tls: true,
            ..RelaySpec::plain()
        },
    ];
    for (i, spec) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, out) = serve_in(&dir, &spec).await;
        assert_ne!(
            out.code,
            Some(0),
            "case {i}: serve must fail: {}",
            out.all()
        );
        assert!(
            out.all().contains("tls_cert"),
            "case {i}: error must name tls_cert: {}",
            out.all()
        );
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            files.iter().all(|f| !f.to_string_lossy().ends_with(".pem")),
            "case {i}: a certificate was generated without tls_self_signed: {files:?}"
        );
        let check = run_cli(&config, "check").await;
        assert_ne!(
            check.code,
            Some(0),
            "case {i}: check must fail too: {}",
            check.all()
        );
    }
}

/// Starts a relay serving `leaf` with `key_pem` as its key file, after
/// checking the key file really is in `want` format and is a usable identity
/// for rustls itself (so a failure is the relay's, not the fixture's).
async fn serves_key_format(ca: &Ca, leaf: &Leaf, key_pem: &str, want: &str) {
    let parsed = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("fixture key parses");
    let format = match &parsed {
        PrivateKeyDer::Pkcs1(_) => "pkcs1",
        PrivateKeyDer::Sec1(_) => "sec1",
        PrivateKeyDer::Pkcs8(_) => "pkcs8",
        _ => "other",
    };
    assert_eq!(format, want, "fixture key format");
    rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], parsed)
        .expect("fixture: rustls accepts this certificate/key pair");
    let relay = TlsRelay::start(RelaySpec::tls(&leaf.cert_pem, key_pem)).await;
    expect_serves(relay.port, &ca.der, &leaf.der).await;
    let reload = relay.reload().await;
    assert_eq!(
        reload.code,
        Some(0),
        "reload with a {want} key: {}",
        reload.all()
    );
}

#[tokio::test]
async fn pkcs1_rsa_key_is_accepted() {
    let ca = Ca::new("pkcs1 CA");
    let (leaf, pkcs1_pem) = rsa_leaf(&ca);
    assert!(pkcs1_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    serves_key_format(&ca, &leaf, &pkcs1_pem, "pkcs1").await;
}

#[tokio::test]
async fn pkcs8_rsa_key_is_accepted() {
    let ca = Ca::new("pkcs8 rsa CA");
    let (leaf, _) = rsa_leaf(&ca);
    serves_key_format(&ca, &leaf, &leaf.key_pem, "pkcs8").await;
}

#[tokio::test]
async fn sec1_p256_key_is_accepted() {
    let ca = Ca::new("sec1 p256 CA");
    let (leaf, sec1_pem) = ec_sec1_leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(sec1_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    serves_key_format(&ca, &leaf, &sec1_pem, "sec1").await;
}

#[tokio::test]
async fn sec1_p384_key_is_accepted() {
    let ca = Ca::new("sec1 p384 CA");
    let (leaf, sec1_pem) = ec_sec1_leaf(&ca, &rcgen::PKCS_ECDSA_P384_SHA384);
    serves_key_format(&ca, &leaf, &sec1_pem, "sec1").await;
}

#[tokio::test]
async fn pkcs8_ecdsa_and_ed25519_keys_are_accepted() {
    let ca = Ca::new("pkcs8 CA");
    let leaf = ca.leaf(LOCAL_NAMES);
    serves_key_format(&ca, &leaf, &leaf.key_pem, "pkcs8").await;
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let leaf = ca.leaf_with_key(LOCAL_NAMES, ed);
    serves_key_format(&ca, &leaf, &leaf.key_pem, "pkcs8").await;
}

/// Reload from a PKCS#8 to a PKCS#1 and then a SEC1 key: each reload takes.
#[tokio::test]
async fn reload_between_key_formats() {
    let ca = Ca::new("format reload CA");
    let first = ca.leaf(LOCAL_NAMES);
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&first)).await;
    let (rsa, pkcs1) = rsa_leaf(&ca);
    let (ec, sec1) = ec_sec1_leaf(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
    for (leaf, key, what) in [(&rsa, &pkcs1, "PKCS#1"), (&ec, &sec1, "SEC1")] {
        relay.write("cert.pem", &leaf.cert_pem);
        relay.write("key.pem", key);
        let out = relay.reload().await;
        assert_eq!(out.code, Some(0), "reload to a {what} key: {}", out.all());
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..4 {
            let s = tls(relay.port, &client_config(&[&ca.der]), "localhost").await;
            assert!(
                peer_leaf(&s) == leaf.der,
                "after reload to {what}: old certificate served"
            );
            assert_eq!(http_get(s, "/health").await.status, 200);
        }
    }
}

/// A fresh host: the configured paths sit in a directory that does not
/// exist yet. It is created (owner-only, it holds the key) and served from.
#[tokio::test]
async fn self_signed_certificate_creates_its_missing_directory() {
    let spec = RelaySpec::self_signed()
        .line("tls_cert = \"pki/new/cert.pem\"")
        .line("tls_key = \"pki/new/key.pem\"");
    let relay = TlsRelay::start(spec).await;
    let der = check_generated(&relay, "pki/new/cert.pem", "pki/new/key.pem");
    for dir in ["pki", "pki/new"] {
        let mode = std::fs::metadata(relay.path(dir))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{dir} created with mode {mode:o}");
    }
    expect_serves(relay.port, &der, &der).await;
}

/// When the directory cannot be made (a file is in the way), the one error
/// names the key being written (`tls_key`: it is written first) and gives
/// the OS error once.
#[tokio::test]
async fn self_signed_write_failure_names_the_key_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("blocker"), "not a directory").unwrap();
    let spec = RelaySpec::self_signed()
        .line("tls_cert = \"blocker/cert.pem\"")
        .line("tls_key = \"blocker/key.pem\"");
    let (_, out) = serve_in(&dir, &spec).await;
    assert_ne!(out.code, Some(0), "{}", out.all());
    let all = out.all();
    assert!(all.contains("server.tls_key: cannot write"), "{all}");
    assert!(
        !all.contains("server.tls_cert"),
        "names the wrong key: {all}"
    );
    assert_eq!(
        all.matches("os error").count(),
        1,
        "OS error repeated: {all}"
    );
}
