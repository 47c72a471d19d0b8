//! The relay under test for the `tests/common` harness: its config
//! ([`RelayConfig`], users, driver and forward mode) and a plain `/health`
//! probe. Starting, logs, the CLI and stopping are the shared
//! `tests/common/process.rs`, reached through `Deref`.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::{Duration, Instant};

use super::http;
pub use super::process::{run_cli, strip_ansi, CliOutput, RelayProcess, BIN};

pub const ALICE_TOKEN: &str = "alice-token-0123456789";
pub const BOB_TOKEN: &str = "bob-token-9876543210";
pub const CAROL_TOKEN: &str = "carol-token-5555555555";

/// The monoio driver, selected through `WS_RELAY_DRIVER`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    IoUring,
    Legacy,
    Auto,
}

impl Driver {
    pub fn env_value(self) -> &'static str {
        match self {
            Driver::IoUring => "io_uring",
            Driver::Legacy => "legacy",
            Driver::Auto => "auto",
        }
    }
}

/// `server.forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forward {
    Copy,
    Splice,
    /// `copy` reading through the shard's provided-buffer ring.
    Ring,
}

impl Forward {
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Copy => "copy",
            Forward::Splice => "splice",
            Forward::Ring => "ring",
        }
    }

    /// The relay sees frames (copy and ring): it keeps Close codes and
    /// injects its own; splice only closes TCP.
    pub fn sees_frames(self) -> bool {
        self != Forward::Splice
    }
}

#[derive(Clone, Debug)]
pub struct UserSpec {
    pub name: String,
    pub token: String,
    pub allowed_targets: Option<Vec<String>>,
    pub max_sessions: Option<usize>,
    /// `routes = [...]`: the token routes this user may use.
    pub routes: Option<Vec<String>>,
    /// `publish_ports = [...]`: ports its reverse tunnels may publish.
    pub publish_ports: Option<Vec<u16>>,
}

impl UserSpec {
    pub fn new(name: &str, token: &str) -> UserSpec {
        UserSpec {
            name: name.into(),
            token: token.into(),
            allowed_targets: None,
            max_sessions: None,
            routes: None,
            publish_ports: None,
        }
    }
    pub fn alice() -> UserSpec {
        UserSpec::new("alice", ALICE_TOKEN)
    }
    pub fn bob() -> UserSpec {
        UserSpec::new("bob", BOB_TOKEN)
    }
    pub fn carol() -> UserSpec {
        UserSpec::new("carol", CAROL_TOKEN)
    }
    pub fn allowed(mut self, patterns: &[&str]) -> UserSpec {
        self.allowed_targets = Some(patterns.iter().map(|p| p.to_string()).collect());
        self
    }
    pub fn max_sessions(mut self, n: usize) -> UserSpec {
        self.max_sessions = Some(n);
        self
    }
    pub fn publish(mut self, ports: &[u16]) -> UserSpec {
        self.publish_ports = Some(ports.to_vec());
        self
    }
    pub fn routes(mut self, names: &[&str]) -> UserSpec {
        self.routes = Some(names.iter().map(|p| p.to_string()).collect());
        self
    }
}

/// Everything a test may vary in `config.toml`. Defaults follow the brief's
/// template except: `auth_fail_limit_per_min` is high (so error tests do not
/// trip the throttle) and `shutdown_grace_secs` is short (so teardown is fast).
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// `None` inherits `WS_RELAY_DRIVER` from the test's environment.
    pub driver: Option<Driver>,
    pub workers: usize,
    pub forward: Forward,
    pub auth_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    pub allow_private_targets: bool,
    pub auth_fail_limit_per_min: u32,
    pub max_connections: usize,
    pub shutdown_grace_secs: u64,
    pub relay_path: Option<String>,
    pub log_level: String,
    pub users: Vec<UserSpec>,
    /// Raw `key = value` lines appended to `[server]`.
    pub extra_server: Vec<String>,
    /// Raw TOML appended after `[logging]` (whole sections, e.g. `[hub]`).
    pub extra_toml: Vec<String>,
    /// Environment variables for the relay process.
    pub env: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` (soft and hard) for the relay process.
    pub fd_limit: Option<u64>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            driver: None,
            workers: 2,
            forward: Forward::Copy,
            auth_timeout_secs: 10,
            idle_timeout_secs: 600,
            connect_timeout_secs: 10,
            allow_private_targets: true,
            auth_fail_limit_per_min: 10_000,
            max_connections: 0,
            shutdown_grace_secs: 2,
            relay_path: None,
            log_level: "info".into(),
            users: vec![UserSpec::alice()],
            extra_server: Vec::new(),
            extra_toml: Vec::new(),
            env: Vec::new(),
            fd_limit: None,
        }
    }
}

fn toml_str(s: &str) -> String {
    // Rust's Debug escaping is valid TOML basic-string escaping for the
    // characters tests use.
    format!("{s:?}")
}

impl RelayConfig {
    pub fn with_driver(mut self, d: Driver) -> Self {
        self.driver = Some(d);
        self
    }
    pub fn with_forward(mut self, f: Forward) -> Self {
        self.forward = f;
        self
    }
    pub fn with_users(mut self, users: Vec<UserSpec>) -> Self {
        self.users = users;
        self
    }

    pub fn render(&self, port: u16, socket: &Path) -> String {
        let mut s = String::new();
        s.push_str("[server]\n");
        s.push_str("host = \"127.0.0.1\"\n");
        s.push_str(&format!("port = {port}\n"));
        s.push_str("enable_tls = false\n");
        s.push_str(&format!("workers = {}\n", self.workers));
        s.push_str(&format!("forward = \"{}\"\n", self.forward.as_str()));
        s.push_str(&format!("auth_timeout_secs = {}\n", self.auth_timeout_secs));
        s.push_str(&format!("idle_timeout_secs = {}\n", self.idle_timeout_secs));
        s.push_str(&format!(
            "connect_timeout_secs = {}\n",
            self.connect_timeout_secs
        ));
        s.push_str(&format!(
            "allow_private_targets = {}\n",
            self.allow_private_targets
        ));
        s.push_str(&format!(
            "auth_fail_limit_per_min = {}\n",
            self.auth_fail_limit_per_min
        ));
        s.push_str(&format!("max_connections = {}\n", self.max_connections));
        s.push_str(&format!(
            "control_socket = {}\n",
            toml_str(&socket.display().to_string())
        ));
        s.push_str(&format!(
            "shutdown_grace_secs = {}\n",
            self.shutdown_grace_secs
        ));
        if let Some(p) = &self.relay_path {
            s.push_str(&format!("relay_path = {}\n", toml_str(p)));
        }
        for line in &self.extra_server {
            s.push_str(line);
            s.push('\n');
        }
        for u in &self.users {
            s.push_str("\n[[users]]\n");
            s.push_str(&format!("name = {}\n", toml_str(&u.name)));
            s.push_str(&format!("token = {}\n", toml_str(&u.token)));
            if let Some(targets) = &u.allowed_targets {
                let list: Vec<String> = targets.iter().map(|t| toml_str(t)).collect();
                s.push_str(&format!("allowed_targets = [{}]\n", list.join(", ")));
            }
            if let Some(n) = u.max_sessions {
                s.push_str(&format!("max_sessions = {n}\n"));
            }
            if let Some(routes) = &u.routes {
                let list: Vec<String> = routes.iter().map(|t| toml_str(t)).collect();
                s.push_str(&format!("routes = [{}]\n", list.join(", ")));
            }
            if let Some(ports) = &u.publish_ports {
                let list: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
                s.push_str(&format!("publish_ports = [{}]\n", list.join(", ")));
            }
        }
        s.push_str("\n[logging]\n");
        s.push_str(&format!("level = {}\n", toml_str(&self.log_level)));
        s.push_str("directory = \"\"\n");
        s.push_str("console_output = true\n");
        for section in &self.extra_toml {
            s.push('\n');
            s.push_str(section);
            s.push('\n');
        }
        s
    }
}

pub struct Relay {
    pub cfg: RelayConfig,
    proc: RelayProcess,
}

/// The process side (port, paths, log, CLI, stop) is the shared harness's.
impl Deref for Relay {
    type Target = RelayProcess;
    fn deref(&self) -> &RelayProcess {
        &self.proc
    }
}

impl DerefMut for Relay {
    fn deref_mut(&mut self) -> &mut RelayProcess {
        &mut self.proc
    }
}

/// `GET /health` over plain TCP answers 200 `{"status":"ok"}`.
async fn healthy(port: u16) -> Result<(), String> {
    match http::get(port, "/health").await {
        Ok(r) if r.status == 200 && r.body_str().trim() == r#"{"status":"ok"}"# => Ok(()),
        Ok(r) => Err(format!(
            "GET /health answered {}: {:?}",
            r.status,
            r.body_str()
        )),
        Err(e) => Err(format!("GET /health failed: {e}")),
    }
}

impl Relay {
    /// Starts the relay and waits until `/health` answers. Panics (with the
    /// relay's log) when it does not come up within 10 s.
    pub async fn start(cfg: RelayConfig) -> Relay {
        let mut proc = RelayProcess::new("relay-test-");
        if let Some(d) = cfg.driver {
            proc.env
                .push(("WS_RELAY_DRIVER".into(), d.env_value().into()));
        }
        proc.env.extend(cfg.env.iter().cloned());
        proc.fd_limit = cfg.fd_limit;
        let render = |port: u16, socket: &Path| cfg.render(port, socket);
        proc.start(Duration::from_secs(10), render, healthy).await;
        let relay = Relay { cfg, proc };
        relay.check_startup_line().await;
        relay
    }

    /// When the startup log names the driver and forward mode (`driver=`,
    /// `forward=`), they must be the ones asked for, so the matrix really
    /// runs what its test names say.
    async fn check_startup_line(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        let line = loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| l.contains("driver=")) {
                break l.to_lowercase();
            }
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(d) = self.cfg.driver.filter(|d| *d != Driver::Auto) {
            let want = match d {
                Driver::IoUring => "io_uring",
                _ => "legacy",
            };
            let got = line.split("driver=").nth(1).unwrap_or("");
            assert!(
                got.trim_start_matches('"').starts_with(want),
                "asked for driver {want}, relay says: {line}"
            );
        }
        if line.contains("forward=") {
            let got = line.split("forward=").nth(1).unwrap_or("");
            assert!(
                got.trim_start_matches('"')
                    .starts_with(self.cfg.forward.as_str()),
                "asked for forward = {}, relay says: {line}",
                self.cfg.forward.as_str()
            );
        }
    }

    pub fn pid(&self) -> i32 {
        self.child_pid().expect("relay running") as i32
    }

    /// Resident memory of the relay process, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// `ws://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// Renders `cfg` with this relay's port and socket and writes it over the
    /// config file (does not reload).
    pub fn write_config(&mut self, cfg: RelayConfig) {
        self.write_config_text(&self.render(&cfg));
        self.cfg = cfg;
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// The config text `cfg` renders to for this relay.
    pub fn render(&self, cfg: &RelayConfig) -> String {
        cfg.render(self.port, &self.socket_path)
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// SIGKILL, no shutdown: what a crash looks like.
    pub fn kill_hard(&mut self) {
        self.kill_now();
    }

    /// A crash, then the same config started again on the same port.
    pub async fn crash_and_restart(&mut self) {
        self.kill_now();
        self.proc.respawn(Duration::from_secs(10), healthy).await;
    }
}
