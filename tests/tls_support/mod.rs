//! TLS harness for the `tests/tls_*.rs` over-the-wire tests.
//!
//! - [`TlsRelay`]: runs the real binary from a temp dir holding its config and
//!   any certificate files (relative paths, cwd `/`, so the "relative to the
//!   config file" rule is exercised), waits for `GET /health` over TLS (or
//!   plain), captures stdout+stderr, runs `reload`, restarts in place, and
//!   stops the child on drop (SIGTERM, then SIGKILL).
//! - [`pki`]: rcgen CA/intermediate/leaf certificates and key conversions.
//! - [`client`]: rustls client configs, TLS connections, both auth modes.
//! - [`target`]: plain and TLS echo targets.
#![allow(dead_code)]

pub mod client;
pub mod pki;
pub mod target;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use client::*;
pub use pki::*;
#[allow(unused_imports)]
pub use target::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_ws-relay-core");
pub const TOKEN: &str = "tls-test-token-0123456789";
pub const USER: &str = "tls-user";

/// Default per-step limit: only hit when the engine is broken.
pub const STEP: Duration = Duration::from_secs(10);

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Awaits `fut`, panicking with `what` after `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
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

/// Output of one CLI invocation.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub struct TlsRelay {
    pub port: u16,
    pub spec: RelaySpec,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

impl TlsRelay {
    /// Writes the files and config, starts the relay, waits for `/health`.
    pub async fn start(spec: RelaySpec) -> TlsRelay {
        let dir = tempfile::Builder::new()
            .prefix("tls-test-")
            .tempdir()
            .expect("tempdir");
        for (name, contents) in &spec.files {
            std::fs::write(dir.path().join(name), contents).expect("write file");
        }
        let mut relay = TlsRelay {
            port: 0,
            config_path: dir.path().join("config.toml"),
            log_path: dir.path().join("relay.log"),
            spec,
            child: None,
            dir,
        };
        let mut last = String::new();
        for _ in 0..3 {
            relay.port = free_port();
            let socket = relay.dir.path().join("relay.sock");
            std::fs::write(&relay.config_path, relay.spec.render(relay.port, &socket))
                .expect("write config");
            relay.spawn();
            match relay.wait_healthy(Duration::from_secs(15)).await {
                Ok(()) => return relay,
                Err(e) => {
                    last = e;
                    let log = relay.log();
                    relay.kill_now();
                    if log.contains("in use") || log.contains("AddrInUse") {
                        continue;
                    }
                    break;
                }
            }
        }
        panic!(
            "relay did not become healthy: {last}\n--- config ---\n{}\n--- relay log ---\n{}",
            std::fs::read_to_string(&relay.config_path).unwrap_or_default(),
            relay.log()
        );
    }

    /// Stops the relay and starts it again on the same port, dir and config.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn();
        if let Err(e) = self.wait_healthy(Duration::from_secs(15)).await {
            panic!("relay did not come back after restart: {e}\n{}", self.log());
        }
    }

    /// SIGTERM and wait (bounded) for exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open relay.log");
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .current_dir("/")
            .env_remove("WS_RELAY_CONFIG")
            .env("NO_COLOR", "1")
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn ws-relay-core");
        self.child = Some(child);
    }

    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let insecure = insecure_client_config();
        let mut last: String;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("relay exited during startup with {st}"));
            }
            let probe = async {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let resp = if self.spec.enable_tls {
                    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                    let s = tokio_rustls::TlsConnector::from(insecure.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    http_get(s, "/health").await
                } else {
                    http_get(tcp, "/health").await
                };
                Ok::<_, String>(resp)
            };
            match tokio::time::timeout(Duration::from_secs(3), probe).await {
                Ok(Ok(r)) if r.status == 200 && r.body.trim() == r#"{"status":"ok"}"# => {
                    return Ok(())
                }
                Ok(Ok(r)) => last = format!("GET /health answered {}: {:?}", r.status, r.body),
                Ok(Err(e)) => last = e,
                Err(_) => last = "GET /health timed out".into(),
            }
            if Instant::now() >= deadline {
                return Err(format!("not healthy after {limit:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).expect("write file");
    }

    /// Everything the relay printed so far.
    pub fn log(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &std::fs::read(&self.log_path).unwrap_or_default(),
        ))
    }

    /// Polls the log until `pred` holds; panics after `limit`.
    pub async fn wait_for_log(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if pred(&log) {
                return log;
            }
            if Instant::now() >= deadline {
                panic!("relay log never showed {what} within {limit:?}\n--- relay log ---\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The `session end` lines logged so far.
    pub fn session_ends(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("session end"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until at least `n` `session end` lines were logged.
    pub async fn wait_session_ends(&self, n: usize) -> Vec<String> {
        self.wait_for_log(&format!("{n} `session end` lines"), STEP, |log| {
            log.lines().filter(|l| l.contains("session end")).count() >= n
        })
        .await;
        self.session_ends()
    }

    /// `ws-relay-core --config <file> reload`.
    pub async fn reload(&self) -> CliOutput {
        run_cli(&self.config_path, "reload").await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_millis(1500);
                while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "--- relay log (last {} lines) ---\n{}\n---",
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

/// Runs the binary with `--config <path> <command>` (10 s limit).
pub async fn run_cli(config: &Path, command: &str) -> CliOutput {
    let fut = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg(command)
        .env_remove("WS_RELAY_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = within(STEP, &format!("`ws-relay-core {command}`"), fut)
        .await
        .expect("run ws-relay-core");
    CliOutput {
        code: out.status.code(),
        stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    }
}

/// Removes ANSI colour sequences so log assertions see plain text.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Value of `field=` in a log line (quotes stripped).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}
