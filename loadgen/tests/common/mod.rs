//! Helpers shared by loadgen's integration tests: run the real `loadgen`
//! binary with a time limit, start its echo server (or delay proxy) on a
//! free loopback port and read back the address it printed, and clean every
//! child process up on drop. Loopback only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The loadgen binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
}

/// The ws-relay-core built next to loadgen, or `LOADGEN_RELAY_BIN`.
pub fn relay_bin() -> Option<PathBuf> {
    let beside = bin().with_file_name("ws-relay-core");
    if beside.is_file() {
        return Some(beside);
    }
    let from_env = std::env::var_os("LOADGEN_RELAY_BIN").map(PathBuf::from)?;
    from_env.is_file().then_some(from_env)
}

/// A background loadgen server (echo-server or delay-proxy), killed on drop.
pub struct Server {
    child: Child,
    /// What it printed after "listening on ".
    pub addr: String,
}

impl Server {
    /// `loadgen echo-server --listen 127.0.0.1:0 --threads 1 ARGS`; `addr` is its ws:// URL.
    pub fn echo(args: &[&str]) -> Server {
        let mut all = vec![
            "echo-server",
            "--listen",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--exit-after",
            "300",
        ];
        all.extend_from_slice(args);
        Self::spawn(&all)
    }

    /// `loadgen delay-proxy --listen 127.0.0.1:0 --to TO --delay-ms MS`; `addr` is host:port.
    pub fn delay_proxy(to: &str, delay_ms: &str) -> Server {
        Self::spawn(&[
            "delay-proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            to,
            "--delay-ms",
            delay_ms,
            "--threads",
            "1",
            "--exit-after",
            "300",
        ])
    }

    fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start loadgen server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!("loadgen {args:?} printed no address within 15 s");
            }
        };
        let addr = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Server { child, addr }
    }

    /// host:port of a ws:// or wss:// address.
    pub fn host_port(&self) -> String {
        self.addr
            .trim_start_matches("ws://")
            .trim_start_matches("wss://")
            .trim_end_matches('/')
            .to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a finished loadgen run printed.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs loadgen with `args`, killing it after `limit`.
pub fn run(args: &[&str], limit: Duration) -> Finished {
    run_env(args, &[], limit)
}

/// Like [`run`], with extra environment variables.
pub fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start loadgen");
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let give_up = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let f = Finished {
        code: status.and_then(|s| s.code()),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    };
    assert!(
        status.is_some(),
        "loadgen {args:?} ran past {limit:?}:\n{}\n{}",
        f.stdout,
        f.stderr
    );
    f
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// `v[path...]` or a panic naming the missing path.
pub fn at<'a>(v: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get(key)
            .unwrap_or_else(|| panic!("missing field {}", path[..=i].join(".")));
    }
    cur
}

pub fn u64_at(v: &serde_json::Value, path: &[&str]) -> u64 {
    at(v, path)
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not an integer: {}", path.join("."), at(v, path)))
}

pub fn f64_at(v: &serde_json::Value, path: &[&str]) -> f64 {
    at(v, path)
        .as_f64()
        .unwrap_or_else(|| panic!("{} is not a number: {}", path.join("."), at(v, path)))
}
