//! A ws-relay-core process for `compare` and `soak`: find the binary (next
//! to loadgen or `--relay-bin`), write a temporary config on a free loopback
//! port (users, forward mode, optionally a self-signed TLS listener), start
//! it (optionally pinned), wait for `GET /health` (over TLS when the
//! listener is), rewrite its users and ask it to reload, and stop it
//! (SIGTERM, then SIGKILL) and remove the temp directory on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Relay process errors.
#[derive(Debug, thiserror::Error)]
pub enum RelayProcError {
    #[error(
        "relay binary not found at {0}; build it (cargo build --release) or pass --relay-bin PATH, \
         or point --relay at a running relay"
    )]
    NotFound(PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the relay exited during start-up ({status}); its log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("the relay did not answer GET /health within {secs} s; its log:\n{log}")]
    NotReady { secs: u64, log: String },
    #[error("reload refused ({status}): {output}")]
    Reload { status: ExitStatus, output: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RelayProcError {
    let what = what.into();
    move |source| RelayProcError::Io { what, source }
}

/// The relay binary: `explicit`, else `ws-relay-core` beside this executable.
pub fn find_relay_bin(explicit: Option<&Path>) -> Result<PathBuf, RelayProcError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(io_err("cannot locate the loadgen executable"))?
            .with_file_name("ws-relay-core"),
    };
    if path.is_file() {
        // Absolute, because the relay runs in its temp directory.
        Ok(std::fs::canonicalize(&path).unwrap_or(path))
    } else {
        Err(RelayProcError::NotFound(path))
    }
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUser {
    pub name: String,
    pub token: String,
}

/// How to start the relay.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub bin: PathBuf,
    pub users: Vec<RelayUser>,
    pub workers: u32,
    /// "copy" or "splice"; None leaves the relay's default.
    pub forward: Option<&'static str>,
    pub cpu: Option<usize>,
    /// A TLS listener with a self-signed certificate (`wss://`).
    pub tls: bool,
    /// Extra `[server]` lines, e.g. `auth_fail_limit_per_min = 0`.
    pub server_extra: Vec<String>,
}

impl RelayOptions {
    /// These users on a plain listener, the relay's default forward mode.
    pub fn new(bin: PathBuf, users: Vec<RelayUser>, workers: u32) -> Self {
        Self {
            bin,
            users,
            workers,
            forward: None,
            cpu: None,
            tls: false,
            server_extra: Vec::new(),
        }
    }

    /// One user, `bench`, with this token (what `compare` needs).
    pub fn single_user(bin: PathBuf, token: &str, workers: u32) -> Self {
        let bench = RelayUser {
            name: "bench".into(),
            token: token.into(),
        };
        Self::new(bin, vec![bench], workers)
    }
}

/// A running relay; stopped on drop.
pub struct RelayProcess {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    config: PathBuf,
    port: u16,
    options: RelayOptions,
    pub url: String,
    pub bin: PathBuf,
}

/// The temp config (docs/configuration.md "Configuration" keys only).
pub fn config_text(port: u16, dir: &Path, o: &RelayOptions) -> String {
    let forward = o
        .forward
        .map(|f| format!("forward = \"{f}\"\n"))
        .unwrap_or_default();
    let tls = if o.tls {
        "enable_tls = true\ntls_self_signed = true\n"
    } else {
        "enable_tls = false\n"
    };
    let extra: String = o.server_extra.iter().map(|l| format!("{l}\n")).collect();
    format!(
        "# written by loadgen\n\
         [server]\n\
         host = \"127.0.0.1\"\n\
         port = {port}\n\
         {tls}\
         allow_private_targets = true\n\
         workers = {workers}\n\
         {forward}\
         shutdown_grace_secs = 1\n\
         control_socket = \"{sock}\"\n\
         {extra}\n\
         {users}\
         [logging]\n\
         level = \"warn\"\n\
         directory = \"\"\n\
         console_output = true\n",
        workers = o.workers,
        sock = dir.join("relay.sock").display(),
        users = users_text(&o.users),
    )
}

/// The `[[users]]` tables.
fn users_text(users: &[RelayUser]) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    users
        .iter()
        .map(|u| {
            format!(
                "[[users]]\nname = \"{}\"\ntoken = \"{}\"\n\n",
                quote(&u.name),
                quote(&u.token)
            )
        })
        .collect()
}

impl RelayProcess {
    pub fn start(o: &RelayOptions) -> Result<Self, RelayProcError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("loadgen-compare-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        let port = free_port().map_err(io_err("cannot find a free port"))?;
        let config = dir.join("relay.toml");
        std::fs::write(&config, config_text(port, &dir, o))
            .map_err(io_err(format!("cannot write {}", config.display())))?;
        let log = dir.join("relay.log");
        let out = std::fs::File::create(&log)
            .map_err(io_err(format!("cannot create {}", log.display())))?;
        let err = out.try_clone().map_err(io_err("log file"))?;
        let mut cmd = Command::new(&o.bin);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(cpu) = o.cpu {
            pin_child(&mut cmd, cpu);
        }
        let child = cmd
            .spawn()
            .map_err(io_err(format!("cannot start {}", o.bin.display())))?;
        let scheme = if o.tls { "wss" } else { "ws" };
        let mut me = Self {
            child,
            dir,
            log,
            config,
            port,
            options: o.clone(),
            url: format!("{scheme}://127.0.0.1:{port}/"),
            bin: o.bin.clone(),
        };
        me.wait_ready(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(20),
        )?;
        Ok(me)
    }

    fn wait_ready(&mut self, addr: SocketAddr, limit: Duration) -> Result<(), RelayProcError> {
        let give_up = Instant::now() + limit;
        while Instant::now() < give_up {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(RelayProcError::Exited {
                    status,
                    log: self.log_tail(),
                });
            }
            let ok = if self.options.tls {
                health_ok_tls(addr)
            } else {
                health_ok(addr)
            };
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(RelayProcError::NotReady {
            secs: limit.as_secs(),
            log: self.log_tail(),
        })
    }

    /// The relay's exit status if it is no longer running.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The relay's process id (for /proc sampling).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Rewrites the config with `users` (everything else unchanged) and
    /// runs `ws-relay-core --config FILE reload`; returns what it printed
    /// (`reloaded: N users`).
    pub fn reload_users(&mut self, users: &[RelayUser]) -> Result<String, RelayProcError> {
        self.options.users = users.to_vec();
        let text = config_text(self.port, &self.dir, &self.options);
        std::fs::write(&self.config, text)
            .map_err(io_err(format!("cannot write {}", self.config.display())))?;
        let out = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .arg("reload")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("cannot run the reload command"))?;
        let mut output = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.trim().is_empty() {
            output = format!("{output} {}", err.trim()).trim().to_string();
        }
        if out.status.success() {
            Ok(output)
        } else {
            Err(RelayProcError::Reload {
                status: out.status,
                output,
            })
        }
    }

    /// The last lines of the relay's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let give_up = Instant::now() + Duration::from_secs(3);
        while Instant::now() < give_up {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(target_os = "linux")]
fn pin_child(cmd: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and only makes the
    // async-signal-safe sched_setaffinity syscall.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_child(_cmd: &mut Command, _cpu: usize) {}

/// `GET /health` answers 200 with `{"status":"ok"}`.
pub fn health_ok(addr: SocketAddr) -> bool {
    connect_for_health(addr).is_some_and(|tcp| health_over(tcp, addr))
}

/// `GET /health` over TLS, trusting any certificate (the relay's is self-signed).
pub fn health_ok_tls(addr: SocketAddr) -> bool {
    use crate::client::tls::{client_config, server_name, Trust};
    let Ok(config) = client_config(&Trust::Insecure, false) else {
        return false;
    };
    let Some(conn) = server_name("127.0.0.1")
        .ok()
        .and_then(|name| rustls::ClientConnection::new(config, name).ok())
    else {
        return false;
    };
    connect_for_health(addr)
        .is_some_and(|tcp| health_over(rustls::StreamOwned::new(conn, tcp), addr))
}

fn connect_for_health(addr: SocketAddr) -> Option<TcpStream> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = tcp.set_write_timeout(Some(Duration::from_millis(500)));
    Some(tcp)
}

/// One `GET /health` on `s`, plain or TLS.
fn health_over(mut s: impl Read + Write, addr: SocketAddr) -> bool {
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.take(64 * 1024).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200") && text.replace(' ', "").contains(r#""status":"ok""#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_spec_keys() {
        let mut o = RelayOptions::single_user("x".into(), "bench-token-0123456789", 1);
        o.forward = Some("splice");
        let t = config_text(4242, Path::new("/tmp/d"), &o);
        for key in [
            "port = 4242",
            "allow_private_targets = true",
            "workers = 1",
            "forward = \"splice\"",
            "control_socket = \"/tmp/d/relay.sock\"",
            "token = \"bench-token-0123456789\"",
            "console_output = true",
            "enable_tls = false",
        ] {
            assert!(t.contains(key), "{key} missing from\n{t}");
        }
    }

    #[test]
    fn config_with_tls_users_and_extra_lines() {
        let mut o = RelayOptions::single_user("x".into(), "a", 2);
        o.tls = true;
        o.users.push(RelayUser {
            name: "u\"2".into(),
            token: "t2".into(),
        });
        o.server_extra.push("auth_fail_limit_per_min = 0".into());
        let t = config_text(1, Path::new("/tmp/d"), &o);
        for key in [
            "enable_tls = true",
            "tls_self_signed = true",
            "auth_fail_limit_per_min = 0",
            "name = \"bench\"",
            "name = \"u\\\"2\"",
            "token = \"t2\"",
        ] {
            assert!(t.contains(key), "{key} missing from\n{t}");
        }
        assert_eq!(t.matches("[[users]]").count(), 2);
        // The extra lines stay in [server], before the first [[users]].
        assert!(t.find("auth_fail_limit").unwrap() < t.find("[[users]]").unwrap());
    }
}
