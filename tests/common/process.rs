//! The relay process every over-the-wire test runs, shared by the two
//! configs built on it: `relay.rs` (relay, hub, routes, tunnels) and
//! `tls/` (the `tls_*` tests). Each keeps only its own config format and
//! its `/health` probe (plain, or over TLS).
//!
//! Owns: the temp dir holding the config, log and control socket; starting
//! `ws-relay-core --config <dir>/config.toml serve` on a free loopback port
//! (a port taken before the relay binds it is retried); stdout+stderr into
//! `<dir>/relay.log`, read back without ANSI colours; the CLI run against
//! the same config; and stopping the child on drop (SIGTERM, then SIGKILL),
//! printing the log's tail when a test panics.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ws-relay-core");

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

pub struct RelayProcess {
    pub port: u16,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub socket_path: PathBuf,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` for the child (soft and hard).
    pub fd_limit: Option<u64>,
    /// The child's working directory (default: the test's).
    pub cwd: Option<PathBuf>,
    child: Option<Child>,
    // Last, so it is removed after the child is gone.
    pub dir: tempfile::TempDir,
}

impl RelayProcess {
    /// A temp dir named `<prefix>…` with nothing started yet.
    pub fn new(prefix: &str) -> RelayProcess {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("tempdir");
        RelayProcess {
            port: 0,
            config_path: dir.path().join("config.toml"),
            log_path: dir.path().join("relay.log"),
            socket_path: dir.path().join("relay.sock"),
            env: Vec::new(),
            fd_limit: None,
            cwd: None,
            child: None,
            dir,
        }
    }

    /// Picks a free port, writes `render(port, socket)` as the config,
    /// starts the relay and waits until `probe(port)` passes. Panics with
    /// the config and log when it never does.
    pub async fn start<P, F>(
        &mut self,
        limit: Duration,
        render: impl Fn(u16, &Path) -> String,
        probe: P,
    ) where
        P: Fn(u16) -> F,
        F: Future<Output = Result<(), String>>,
    {
        let mut last = String::new();
        for _attempt in 0..3 {
            self.port = free_port();
            std::fs::write(&self.config_path, render(self.port, &self.socket_path))
                .expect("write config");
            self.spawn();
            match self.wait_healthy(limit, &probe).await {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    let log = self.log();
                    self.kill_now();
                    // A port taken between our probe and the relay's bind.
                    if log.contains("in use") || log.contains("AddrInUse") {
                        continue;
                    }
                    break;
                }
            }
        }
        panic!(
            "relay did not become healthy: {last}\n--- config ---\n{}\n--- relay log ---\n{}",
            std::fs::read_to_string(&self.config_path).unwrap_or_default(),
            self.log()
        );
    }

    /// Starts the relay again with the same config, port and log.
    pub async fn respawn<P, F>(&mut self, limit: Duration, probe: P)
    where
        P: Fn(u16) -> F,
        F: Future<Output = Result<(), String>>,
    {
        self.spawn();
        if let Err(e) = self.wait_healthy(limit, &probe).await {
            panic!("relay did not come back: {e}\n{}", self.log());
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
        // The hub's seed variables would override the test's config.
        for var in ["PORT", "RELAY_API_KEY", "WS_PATH", "PUSH_PATH"] {
            cmd.env_remove(var);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(n) = self.fd_limit {
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

    async fn wait_healthy<P, F>(&mut self, limit: Duration, probe: &P) -> Result<(), String>
    where
        P: Fn(u16) -> F,
        F: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("relay exited during startup with {status}"));
            }
            let last = match tokio::time::timeout(Duration::from_secs(3), probe(self.port)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => "GET /health timed out (3 s)".to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!("not healthy after {limit:?}; last: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The child's pid while one was started and not reaped.
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits for the child to exit; `None` if it still runs after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, a bounded wait (5 s), then SIGKILL.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child_pid() {
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            self.wait_exit(Duration::from_secs(5)).await;
            self.kill_now();
        }
    }

    /// SIGKILL, no shutdown: what a crash looks like.
    pub fn kill_now(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` in the relay's dir (beside its config).
    pub fn write(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).expect("write file");
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

    /// The `session end` lines logged so far.
    pub fn session_ends(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("session end"))
            .map(str::to_string)
            .collect()
    }

    /// Waits (10 s) until at least `n` `session end` lines were logged.
    pub async fn wait_session_ends(&self, n: usize) -> Vec<String> {
        let what = format!("{n} `session end` lines");
        self.wait_for_log(&what, Duration::from_secs(10), |log| {
            log.lines().filter(|l| l.contains("session end")).count() >= n
        })
        .await;
        self.session_ends()
    }

    /// `ws-relay-core --config <config> reload`.
    pub async fn reload_cli(&self) -> CliOutput {
        run_cli(&self.config_path, "reload").await
    }
}

impl Drop for RelayProcess {
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

/// A free TCP port on 127.0.0.1 (bound, then released), taken from below
/// the kernel's ephemeral range. A port from inside it (what binding port 0
/// gives) can be handed to any outgoing connection as its source port the
/// moment it is released, and then a relay or target restarted on it mid-test
/// finds it held.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let first = low.saturating_sub(16384).max(1024);
    let span = u64::from(low.saturating_sub(first)).max(1);
    // Tests run in parallel threads and processes: start at a random place.
    let start = RandomState::new().hash_one(std::process::id()) % span;
    (0..span)
        .map(|i| first + ((start + i) % span) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below the ephemeral range")
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

/// Value of `name=` in a log line (quotes stripped).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    let end = rest.find(['"', ' ']).unwrap_or(rest.len());
    Some(&rest[..end])
}
