//! The control socket: a Unix socket, owner-only, that `ws-relay-core reload`
//! talks to. One line in (`reload`), one line out (`ok N` / `error MSG`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::ControlPlane;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another ws-relay-core is already running with control socket {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot create control socket {0}: {1}")]
    Bind(PathBuf, std::io::Error),
    #[error("no running ws-relay-core found at control socket {0} ({1})")]
    NotRunning(PathBuf, std::io::Error),
    #[error("control socket {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("reload rejected, the running config is unchanged: {0}")]
    Rejected(String),
}

pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A leftover socket file from a dead
    /// instance is replaced; a live one is an error.
    pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::AlreadyRunning(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let listener =
            UnixListener::bind(path).map_err(|e| ControlError::Bind(path.to_path_buf(), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ControlError::Bind(path.to_path_buf(), e))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    pub fn serve_in_background(self, plane: Arc<ControlPlane>) {
        let _ = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in self.listener.incoming() {
                    match conn {
                        Ok(stream) => answer(stream, &plane),
                        Err(e) => warn!("control socket accept failed: {e}"),
                    }
                }
            });
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, plane: &ControlPlane) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let reply = match line.trim() {
        "reload" => match plane.reload() {
            Ok(n) => format!("ok {n}\n"),
            Err(e) => format!("error {}\n", e.to_string().replace('\n', " ")),
        },
        other => format!("error unknown command {other:?}\n"),
    };
    let _ = (&stream).write_all(reply.as_bytes());
}

/// Client side of `ws-relay-core reload`: returns `reloaded: N users`.
pub fn request_reload(path: &Path) -> Result<String, ControlError> {
    let io = |e| ControlError::Io(path.to_path_buf(), e);
    let mut stream =
        UnixStream::connect(path).map_err(|e| ControlError::NotRunning(path.to_path_buf(), e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    stream.write_all(b"reload\n").map_err(io)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(io)?;
    let line = line.trim();
    match line.split_once(' ') {
        Some(("ok", n)) => Ok(format!("reloaded: {n} users")),
        Some(("error", msg)) => Err(ControlError::Rejected(msg.to_string())),
        _ => Err(io(std::io::Error::other(format!(
            "unexpected reply {line:?}"
        )))),
    }
}
