//! Plain TCP services and child processes for the tunnel tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub use super::process::free_port;
use super::{pattern, within, BIN, STEP};

/// A TCP echo service on 127.0.0.1; returns its port.
pub async fn tcp_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_echo(l);
    port
}

/// Echoes every connection `l` accepts; aborting the task closes `l`.
pub fn serve_echo(l: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A child process killed (and reaped) on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process killed on drop, its stderr in a file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn start_tunnel(dir: &Path, config: &Path, extra: &[&str]) -> Proc {
    let log = dir.join(format!("tunnel-{}.log", free_port()));
    let child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .arg("tunnel")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the tunnel client");
    Proc { child, log }
}

pub async fn wait_listening(port: u16, p: &Proc) {
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "tunnel never listened:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Sends `n` bytes through `port` and checks they all come back in order.
pub async fn echo_through(port: u16, n: usize, seed: u8) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let data = pattern(n, seed);
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let recv = async {
        let mut got = Vec::with_capacity(n);
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let (_, got) = within(Duration::from_secs(60), "echo through the tunnel", async {
        tokio::join!(send, recv)
    })
    .await;
    assert_eq!(got.len(), n, "bytes back");
    assert!(got == data, "bytes differ");
}

/// Waits for the child to exit; returns its stderr log.
pub async fn wait_exit(mut p: Proc) -> String {
    within(STEP, "tunnel exits", async {
        while p.child.try_wait().unwrap().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    p.log()
}
