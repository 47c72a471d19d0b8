//! The soak's echo targets: one `loadgen echo-server` child process each,
//! so a restart is a real one (SIGKILL: the kernel closes every socket of
//! the process, as when a target crashes) and the targets' sockets do not
//! count against this process's descriptor limit. A restart starts a new
//! process on the same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::relay_proc::{free_port, health_ok};

/// Target process errors.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot start the echo target on {addr}: {source}")]
    Spawn {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the echo target on {0} did not answer GET /health within 10 s")]
    NotReady(SocketAddr),
    #[error("cannot find a free port: {0}")]
    Port(#[source] std::io::Error),
}

struct Target {
    addr: SocketAddr,
    child: Child,
}

/// The running targets; killed on drop.
pub struct Targets {
    exe: PathBuf,
    list: Vec<Target>,
}

impl Targets {
    /// Starts `count` echo targets on free loopback ports.
    pub fn start(count: usize) -> Result<Self, TargetError> {
        let exe = std::env::current_exe().map_err(|source| TargetError::Spawn {
            addr: ([127, 0, 0, 1], 0).into(),
            source,
        })?;
        let mut me = Targets {
            exe,
            list: Vec::new(),
        };
        for _ in 0..count {
            let port = free_port().map_err(TargetError::Port)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let child = me.spawn(addr)?;
            me.list.push(Target { addr, child });
        }
        Ok(me)
    }

    /// `ws://` URLs, by target index.
    pub fn urls(&self) -> Vec<String> {
        self.list
            .iter()
            .map(|t| format!("ws://{}/", t.addr))
            .collect()
    }

    fn spawn(&self, addr: SocketAddr) -> Result<Child, TargetError> {
        let mut child = Command::new(&self.exe)
            .args([
                "echo-server",
                "--listen",
                &addr.to_string(),
                "--threads",
                "1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| TargetError::Spawn { addr, source })?;
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if health_ok(addr) {
                return Ok(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(TargetError::NotReady(addr))
    }

    /// Kills target `i` (every socket it holds closes at once).
    pub fn kill(&mut self, i: usize) {
        let t = &mut self.list[i];
        let _ = t.child.kill();
        let _ = t.child.wait();
    }

    /// Starts target `i` again on its port.
    pub fn respawn(&mut self, i: usize) -> Result<(), TargetError> {
        let child = self.spawn(self.list[i].addr)?;
        self.list[i].child = child;
        Ok(())
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for t in &mut self.list {
            let _ = t.child.kill();
            let _ = t.child.wait();
        }
    }
}
