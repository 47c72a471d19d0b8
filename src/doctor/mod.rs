//! `ws-relay-core doctor`: compares the live kernel settings with the
//! `tuning/` recommendations and prints what to change.
//!
//! Owns: the command's entry point ([`run`]) and its options. The parts:
//! - `table.rs`: the one table of recommended values (the sysctl drop-in
//!   `tuning/99-ws-relay-core.conf` is unit-tested against it) and how they
//!   scale with the config (somaxconn >= backlog, nofile >= 2 x sessions...).
//! - `probe.rs`: reading values under the proc root, rlimits, the io_uring probe.
//! - `checks.rs` / `hardware.rs`: judging sysctls, rlimits, io_uring / CPU, NICs.
//! - `report.rs`: the table, fixes, notes and exit code.
//!
//! With `--proc-root DIR` (tests), everything is read below DIR, including
//! the rlimits (`DIR/proc/self/limits`, same format as the kernel's), and the
//! io_uring probe is skipped. With the real `/` the rlimits are this
//! process's (`getrlimit`) and the probe creates and closes a tiny ring.
//! Nothing needs root; unreadable files are reported as `missing`.

mod checks;
mod hardware;
mod probe;
mod report;
mod table;

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
    /// The config file the numbers came from (`None`: built-in defaults).
    pub config_path: Option<PathBuf>,
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
            config_path: config.map(|c| c.path.clone()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("cannot write report: {0}")]
    Output(#[from] std::io::Error),
}

const PERSIST_SYSCTLS: &str = "Persist the sysctls: \
     install -m 0644 tuning/99-ws-relay-core.conf /etc/sysctl.d/ && sysctl --system";
const PERSIST_LIMITS: &str = "Persist the limits: \
     install -m 0644 tuning/ws-relay-core.service /etc/systemd/system/ && systemctl daemon-reload \
     (the service); tuning/limits.conf -> /etc/security/limits.d/ (login shells)";

/// Prints the report; returns the process exit code (0, or 1 with `strict`
/// when any row warns).
pub fn run(opts: &DoctorOptions, out: &mut dyn Write) -> Result<i32, DoctorError> {
    let src = probe::Source::new(&opts.proc_root);
    let needs = table::Needs::new(opts.backlog, opts.max_connections);
    let release = src.read("proc/sys/kernel/osrelease");
    let kernel = match &release {
        probe::Read::Value(r) => probe::kernel_version(r),
        _ => None,
    };
    let online = hardware::online_cpus(&src);
    let shards = hardware::shards(opts.workers, online);

    let mut rows = Vec::new();
    let mut sysctl_warned = false;
    for s in table::SYSCTLS {
        let row = checks::sysctl_row(s, src.sysctl(s.key), &needs);
        sysctl_warned |= row.status == report::Status::Warn && s.in_dropin;
        rows.push(row);
    }
    let limits = src.limits();
    let limit_rows = [
        checks::nofile_row(&limits, &needs),
        checks::memlock_row(&limits, kernel),
    ];
    let limit_warned = limit_rows.iter().any(|r| r.status == report::Status::Warn);
    rows.extend(limit_rows);
    rows.push(checks::kernel_row(kernel, &release));
    rows.push(checks::io_uring_disabled_row(&src));
    rows.push(checks::probe_row(&src));
    rows.push(checks::seccomp_row(&src));
    rows.extend(hardware::cpu_rows(&src, opts.workers));
    rows.extend(hardware::nic_rows(&src, shards));

    let header = header(opts, &src, &needs, &limits, shards);
    let mut footer = Vec::new();
    if sysctl_warned {
        footer.push(PERSIST_SYSCTLS.to_string());
    }
    if limit_warned {
        footer.push(PERSIST_LIMITS.to_string());
    }
    Ok(report::render(out, &header, &rows, &footer, opts.strict)?)
}

fn header(
    opts: &DoctorOptions,
    src: &probe::Source,
    needs: &table::Needs,
    limits: &probe::Limits,
    shards: Option<usize>,
) -> Vec<String> {
    let root = if src.live {
        "/ (live host; the io_uring probe runs)".to_string()
    } else {
        format!(
            "{} (fake tree; rlimits from its proc/self/limits, io_uring probe skipped)",
            src.root().display()
        )
    };
    let config = match &opts.config_path {
        Some(p) => p.display().to_string(),
        None => "none loaded (built-in defaults)".to_string(),
    };
    let shards = match shards {
        Some(n) => format!("{n} shards"),
        None => "shards unknown".to_string(),
    };
    vec![
        "ws-relay-core doctor: live kernel settings vs tuning/ (GUIDE.md, 99-ws-relay-core.conf)"
            .to_string(),
        format!("proc root: {root}"),
        format!("config:    {config}"),
        format!(
            "           backlog {}, max_connections {} (-> {} fds: 2 per session + {}), \
             workers {} (-> {shards})",
            opts.backlog,
            opts.max_connections,
            needs.fds,
            table::FD_SLACK,
            opts.workers
        ),
        if src.live {
            "rlimits:   of this doctor process (getrlimit); the service gets its own from its unit"
                .to_string()
        } else {
            format!("rlimits:   from {}", limits.origin)
        },
    ]
}

#[cfg(test)]
mod tests;
