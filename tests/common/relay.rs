//! Runs the real `ws-relay-core` binary: writes a config into a temp dir,
//! starts `--config <dir>/config.toml serve` on a free loopback port, waits
//! for `GET /health`, captures stdout+stderr into `<dir>/relay.log`, and
//! stops the child on drop (SIGTERM, then SIGKILL).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http;

pub const BIN: &str = env!("CARGO_BIN_EXE_ws-relay-core");

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
}

impl Forward {
    pub fn as_str(self) -> &'static str {
        match self {
            Forward::Copy => "copy",
            Forward::Splice => "splice",
        }
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

/// Output of one CLI invocation (`reload`, `check`).
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

pub struct Relay {
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub socket_path: PathBuf,
    pub cfg: RelayConfig,
    child: Option<Child>,
    // Last so it is removed after the child is gone.
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
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

impl Relay {
    /// Starts the relay and waits until `/health` answers. Panics (with the
    /// relay's log) when it does not come up within 10 s.
    pub async fn start(cfg: RelayConfig) -> Relay {
        let dir = tempfile::Builder::new()
            .prefix("relay-test-")
            .tempdir()
            .expect("tempdir");
        let config_path = dir.path().join("config.toml");
        let log_path = dir.path().join("relay.log");
        let socket_path = dir.path().join("relay.sock");
        let mut relay = Relay {
            port: 0,
            config_path,
            log_path,
            socket_path,
            cfg,
            child: None,
            dir,
        };
        let mut last_err = String::new();
        for _attempt in 0..3 {
            relay.port = free_port();
            std::fs::write(
                &relay.config_path,
                relay.cfg.render(relay.port, &relay.socket_path),
            )
            .expect("write config");
            relay.spawn();
            match relay.wait_healthy(Duration::from_secs(10)).await {
                Ok(()) => {
                    relay.check_startup_line().await;
                    return relay;
                }
                Err(e) => {
                    last_err = e;
                    let log = relay.log();
                    relay.kill_now();
                    // A port taken between our probe and the relay's bind: retry.
                    if log.contains("in use") || log.contains("AddrInUse") {
                        continue;
                    }
                    break;
                }
            }
        }
        panic!(
            "relay did not become healthy: {last_err}\n--- config ---\n{}\n--- relay log ---\n{}",
            std::fs::read_to_string(&relay.config_path).unwrap_or_default(),
            relay.log()
        );
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

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open relay.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .env_remove("WS_RELAY_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        if let Some(d) = self.cfg.driver {
            cmd.env("WS_RELAY_DRIVER", d.env_value());
        }
        // The hub's seed variables would override the test's config.
        for var in ["PORT", "RELAY_API_KEY", "WS_PATH", "PUSH_PATH"] {
            cmd.env_remove(var);
        }
        for (k, v) in &self.cfg.env {
            cmd.env(k, v);
        }
        if let Some(n) = self.cfg.fd_limit {
            use std::os::unix::process::CommandExt;
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec here.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &lim) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        self.child = Some(cmd.spawn().expect("spawn ws-relay-core"));
    }

    async fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let mut last: String;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("relay exited during startup with {status}"));
            }
            match tokio::time::timeout(Duration::from_secs(2), http::get(self.port, "/health"))
                .await
            {
                Ok(Ok(resp)) => {
                    if resp.status == 200 && resp.body_str().trim() == r#"{"status":"ok"}"# {
                        return Ok(());
                    }
                    last = format!(
                        "GET /health answered {}: {:?}",
                        resp.status,
                        resp.body_str()
                    );
                }
                Ok(Err(e)) => last = format!("GET /health failed: {e}"),
                Err(_) => last = "GET /health timed out (2 s)".into(),
            }
            if Instant::now() >= deadline {
                return Err(format!("not healthy after {limit:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("relay running").id() as i32
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

    /// Everything the relay printed so far, ANSI colours removed.
    pub fn log(&self) -> String {
        let raw = std::fs::read(&self.log_path).unwrap_or_default();
        strip_ansi(&String::from_utf8_lossy(&raw))
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

    /// Renders `cfg` with this relay's port and socket and writes it over the
    /// config file (does not reload).
    pub fn write_config(&mut self, cfg: RelayConfig) {
        std::fs::write(&self.config_path, cfg.render(self.port, &self.socket_path))
            .expect("write config");
        self.cfg = cfg;
    }

    pub fn write_config_text(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// The config text `cfg` renders to for this relay.
    pub fn render(&self, cfg: &RelayConfig) -> String {
        cfg.render(self.port, &self.socket_path)
    }

    /// Runs `ws-relay-core --config <file> reload`.
    pub async fn reload_cli(&self) -> CliOutput {
        run_cli(&self.config_path, "reload").await
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the child to exit; `None` if it is still running after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL, no shutdown: what a crash looks like.
    pub fn kill_hard(&mut self) {
        self.kill_now();
    }

    /// A crash, then the same config started again on the same port.
    pub async fn crash_and_restart(&mut self) {
        self.kill_now();
        self.spawn();
        if let Err(e) = self.wait_healthy(Duration::from_secs(10)).await {
            panic!("relay did not come back: {e}\n{}", self.log());
        }
    }

    fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
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
    let out = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("`ws-relay-core {command}` did not finish within 10 s"))
        .expect("run ws-relay-core");
    CliOutput {
        code: out.status.code(),
        stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
        stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
    }
}

impl Drop for Relay {
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
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- relay log (last {} lines, port {}) ---\n{}\n--- end relay log ---",
                tail.len(),
                self.port,
                tail.join("\n")
            );
        }
    }
}
