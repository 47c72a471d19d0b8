//! `ws-relay-core doctor`: compares live kernel settings with the `tuning/`
//! recommendations. (Being written; see issue "tuning/".)

use std::io::Write;
use std::path::PathBuf;

use crate::config::Config;

/// What doctor needs from the command line and the (optional) config.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Root under which `proc/sys/...` is read (`/` on a real host).
    pub proc_root: PathBuf,
    /// Exit 1 when anything warns.
    pub strict: bool,
    /// Listener backlog from the config (default when no config).
    pub backlog: u32,
    /// `server.max_connections` (each session holds two sockets).
    pub max_connections: usize,
    /// Shard count the config asks for (0 = one per CPU).
    pub workers: usize,
}

impl DoctorOptions {
    pub fn new(proc_root: PathBuf, strict: bool, config: Option<&Config>) -> DoctorOptions {
        let server = config.map(|c| c.server.clone()).unwrap_or_default();
        DoctorOptions {
            proc_root,
            strict,
            backlog: server.backlog,
            max_connections: server.max_connections,
            workers: server.workers,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot write report: {0}")]
    Output(#[from] std::io::Error),
}

/// Prints the report; returns the process exit code.
pub fn run(_opts: &DoctorOptions, _out: &mut dyn Write) -> Result<i32, DoctorError> {
    unimplemented!("doctor is being written")
}
