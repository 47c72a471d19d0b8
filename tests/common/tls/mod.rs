//! The TLS part of the harness (`tests/tls_*.rs` and others).
//!
//! - [`TlsRelay`]: the relay with its certificate files beside the config
//!   (relative paths, cwd `/`, so the "relative to the config file" rule is
//!   exercised) and a `/health` probe over TLS (or plain), on the process
//!   harness ([`super::process`]).
//! - [`pki`]: rcgen CA/intermediate/leaf certificates and key conversions.
//! - [`client`]: rustls client configs, TLS connections, both auth modes.
//! - [`target`]: plain and TLS echo targets.
#![allow(dead_code)]

pub mod client;
pub mod pki;
pub mod target;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The harness's per-step limit and timeout, for the TLS tests too.
pub use super::client::{within, STEP};
#[allow(unused_imports)]
pub use super::process::{field, run_cli, strip_ansi, CliOutput, RelayProcess, BIN};
pub use client::*;
pub use pki::*;
#[allow(unused_imports)]
pub use target::*;

pub const TOKEN: &str = "tls-test-token-0123456789";
pub const USER: &str = "tls-user";

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What goes into the relay's temp dir and `[server]` section.
#[derive(Clone, Debug)]
pub struct RelaySpec {
    pub enable_tls: bool,
    pub workers: usize,
    pub auth_timeout_secs: u64,
    /// Raw `key = value` lines appended to `[server]`.
    pub extra: Vec<String>,
    /// Files written into the temp dir before start: (name, contents).
    pub files: Vec<(String, String)>,
    /// Raw lines appended to the one `[[users]]` entry.
    pub user_lines: Vec<String>,
    /// Extra environment for the relay process.
    pub env: Vec<(String, String)>,
}

impl RelaySpec {
    /// Plain listener.
    pub fn plain() -> RelaySpec {
        RelaySpec {
            enable_tls: false,
            workers: 2,
            auth_timeout_secs: 10,
            extra: Vec::new(),
            files: Vec::new(),
            user_lines: Vec::new(),
            env: Vec::new(),
        }
    }

    /// TLS listener serving `cert_pem` (may be a chain) with `key_pem`, as
    /// `cert.pem`/`key.pem` beside the config.
    pub fn tls(cert_pem: &str, key_pem: &str) -> RelaySpec {
        RelaySpec {
            enable_tls: true,
            ..RelaySpec::plain()
        }
        .file("cert.pem", cert_pem)
        .file("key.pem", key_pem)
        .line("tls_cert = \"cert.pem\"")
        .line("tls_key = \"key.pem\"")
    }

    /// TLS listener with `tls_self_signed = true` and no certificate keys.
    pub fn self_signed() -> RelaySpec {
        RelaySpec {
            enable_tls: true,
            ..RelaySpec::plain()
        }
        .line("tls_self_signed = true")
    }

    /// TLS listener serving `leaf`.
    pub fn tls_leaf(leaf: &Leaf) -> RelaySpec {
        RelaySpec::tls(&leaf.cert_pem, &leaf.key_pem)
    }

    pub fn line(mut self, l: &str) -> RelaySpec {
        self.extra.push(l.to_string());
        self
    }

    pub fn user_line(mut self, l: &str) -> RelaySpec {
        self.user_lines.push(l.to_string());
        self
    }

    pub fn file(mut self, name: &str, contents: &str) -> RelaySpec {
        self.files.push((name.into(), contents.into()));
        self
    }

    /// Trust `ca` for `wss://` targets (`target_ca_file = "target-ca.pem"`).
    pub fn target_ca(self, ca_pem: &str) -> RelaySpec {
        self.file("target-ca.pem", ca_pem)
            .line("target_ca_file = \"target-ca.pem\"")
    }

    pub fn env(mut self, name: &str, value: &str) -> RelaySpec {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn workers(mut self, n: usize) -> RelaySpec {
        self.workers = n;
        self
    }

    pub fn auth_timeout(mut self, secs: u64) -> RelaySpec {
        self.auth_timeout_secs = secs;
        self
    }

    pub fn render(&self, port: u16, socket: &Path) -> String {
        let mut s = String::from("[server]\nhost = \"127.0.0.1\"\n");
        s += &format!("port = {port}\n");
        s += &format!("enable_tls = {}\n", self.enable_tls);
        s += &format!("workers = {}\n", self.workers);
        s += &format!("auth_timeout_secs = {}\n", self.auth_timeout_secs);
        s += "allow_private_targets = true\n";
        s += "auth_fail_limit_per_min = 0\n";
        s += "shutdown_grace_secs = 1\n";
        s += &format!("control_socket = {:?}\n", socket.display().to_string());
        for l in &self.extra {
            s += l;
            s.push('\n');
        }
        s += &format!("\n[[users]]\nname = {USER:?}\ntoken = {TOKEN:?}\n");
        for l in &self.user_lines {
            s += l;
            s.push('\n');
        }
        s += "\n[logging]\nlevel = \"info\"\ndirectory = \"\"\nconsole_output = true\n";
        s
    }
}

/// The relay under test, on the shared process harness (`Deref`).
pub struct TlsRelay {
    pub spec: RelaySpec,
    proc: RelayProcess,
}

impl Deref for TlsRelay {
    type Target = RelayProcess;
    fn deref(&self) -> &RelayProcess {
        &self.proc
    }
}

impl DerefMut for TlsRelay {
    fn deref_mut(&mut self) -> &mut RelayProcess {
        &mut self.proc
    }
}

/// `GET /health` answers 200 `{"status":"ok"}`, over TLS (any certificate)
/// when the listener is TLS.
async fn healthy(port: u16, tls: bool) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let r = if tls {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let s = tokio_rustls::TlsConnector::from(insecure_client_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        http_get(s, "/health").await
    } else {
        http_get(tcp, "/health").await
    };
    match r.status == 200 && r.body.trim() == r#"{"status":"ok"}"# {
        true => Ok(()),
        false => Err(format!("GET /health answered {}: {:?}", r.status, r.body)),
    }
}

impl TlsRelay {
    /// Writes the files and config, starts the relay, waits for `/health`.
    pub async fn start(spec: RelaySpec) -> TlsRelay {
        let mut proc = RelayProcess::new("tls-test-");
        for (name, contents) in &spec.files {
            proc.write(name, contents);
        }
        proc.env.extend(spec.env.iter().cloned());
        // Not the config's dir, so relative paths must resolve against the
        // config file, not the working directory.
        proc.cwd = Some("/".into());
        let tls = spec.enable_tls;
        let render = |port: u16, socket: &Path| spec.render(port, socket);
        proc.start(Duration::from_secs(15), render, |port| healthy(port, tls))
            .await;
        TlsRelay { spec, proc }
    }

    /// Stops the relay and starts it again on the same port, dir and config.
    pub async fn restart(&mut self) {
        self.proc.stop().await;
        let tls = self.spec.enable_tls;
        self.proc
            .respawn(Duration::from_secs(15), |port| healthy(port, tls))
            .await;
    }

    /// `ws-relay-core --config <file> reload`.
    pub async fn reload(&self) -> CliOutput {
        self.reload_cli().await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child_pid()
    }
}
