//! Turning live values into report rows: compare with the table, pick a
//! status, and write the exact command that fixes each warning.
//!
//! Owns: the judgement for sysctls (via `table.rs`), rlimits, io_uring, CPU
//! and NIC settings. Must not: read anything itself except through
//! [`Source`], or print (that is `report.rs`).

use super::probe::{self, Limit, Limits, Read, Source};
use super::report::{Row, Status};
use super::table::{self, Needs, Rule, Scale, Sysctl};

const DROPIN: &str = "/etc/sysctl.d/99-ws-relay-core.conf";

fn parse_fields(v: &str) -> Option<Vec<u64>> {
    v.split_whitespace().map(|f| f.parse().ok()).collect()
}

/// The recommendation for `s` under `needs`, as the value `sysctl -w` takes.
pub fn recommended(s: &Sysctl, needs: &Needs) -> String {
    match (s.rule, s.value.parse::<u64>()) {
        (Rule::AtLeast, Ok(base)) => base.max(needs.of(s.scale)).to_string(),
        _ => s.value.to_string(),
    }
}

fn shown(s: &Sysctl, rec: &str) -> String {
    match s.rule {
        Rule::AtLeast => format!(">= {rec}"),
        Rule::AtMost => format!("<= {rec}"),
        Rule::Bits => format!("{rec} (these bits set)"),
        Rule::MaxOfThree => format!("max >= {}", rec.rsplit(' ').next().unwrap_or(rec)),
        _ => rec.to_string(),
    }
}

fn sysctl_cmd(key: &str, value: &str) -> String {
    if value.contains(' ') {
        format!("sysctl -w {key}=\"{value}\"")
    } else {
        format!("sysctl -w {key}={value}")
    }
}

/// How to make `value` survive a reboot, when the shipped drop-in (see the
/// footer) does not already do it.
fn persist(s: &Sysctl, value: &str) -> Option<String> {
    if s.in_dropin && value == s.value {
        None
    } else if s.in_dropin {
        Some(format!(
            "persist: set `{} = {value}` in {DROPIN} (this config needs more than the shipped {})",
            s.key, s.value
        ))
    } else {
        Some(format!("persist: echo '{} = {value}' >> {DROPIN}", s.key))
    }
}

fn absent_note(key: &str) -> &'static str {
    match key {
        "net.netfilter.nf_conntrack_max" => {
            "nf_conntrack is not loaded, so there is nothing to size (the guide's first \
             choice is to keep relay traffic out of conntrack)"
        }
        "net.core.busy_poll" | "net.core.busy_read" => {
            "not present: kernel without CONFIG_NET_RX_BUSY_POLL, or hidden in this \
             network namespace"
        }
        _ => {
            "not present: older kernel, module not loaded, or a host-wide key hidden \
             inside this container's network namespace (check on the host)"
        }
    }
}

/// Marks `row` as a warning with its fix and, where the drop-in does not
/// already cover it, how to persist the value.
fn warn(s: &Sysctl, row: Row, note: String, value: &str) -> Row {
    let row = row
        .status(Status::Warn)
        .note(note)
        .fix(sysctl_cmd(s.key, value));
    match persist(s, value) {
        Some(p) => row.fix(p),
        None => row,
    }
}

/// Whether the live fields satisfy the rule, and if not, what is wrong and
/// which value the fix should set.
fn judge(
    s: &Sysctl,
    cur: &[u64],
    want: &[u64],
    rec: &str,
    needs: &Needs,
) -> Option<(String, String)> {
    let first = cur.first().copied().unwrap_or(0);
    let w = want.first().copied().unwrap_or(0);
    let scaled = match s.scale {
        Scale::Backlog => format!(" (config backlog {})", needs.backlog),
        Scale::Fds => format!(" (config needs {} fds)", needs.fds),
        Scale::Conntrack => format!(
            " ({} sessions x 4 = {} entries)",
            needs.max_connections, needs.conntrack
        ),
        Scale::None => String::new(),
    };
    let (ok, detail, fix) = match s.rule {
        Rule::AtLeast => (
            first >= w,
            format!("{first} < {w}{scaled}"),
            rec.to_string(),
        ),
        Rule::AtMost => (first <= w, format!("{first} > {w}"), rec.to_string()),
        Rule::Equals => (first == w, format!("{first}, want {w}"), rec.to_string()),
        Rule::Bits => (
            first & w == w,
            format!("{first} lacks bits of {w}"),
            (first | w).to_string(),
        ),
        Rule::MaxOfThree => {
            let (c, w) = (cur.get(2).copied(), want.get(2).copied().unwrap_or(0));
            let detail = format!(
                "max {} < {w}",
                c.map_or("missing".into(), |c| c.to_string())
            );
            (c.is_some_and(|c| c >= w), detail, rec.to_string())
        }
        Rule::PortRange => {
            let hi = cur.get(1).copied().unwrap_or(0);
            let width = if hi >= first { hi - first + 1 } else { 0 };
            let detail = format!(
                "{width} ports < {} needed ({} sessions may all dial one target ip:port, \
                 plus TIME_WAIT)",
                needs.ports, needs.max_connections
            );
            (width >= needs.ports, detail, rec.to_string())
        }
        Rule::Info => (true, String::new(), String::new()),
    };
    (!ok).then_some((detail, fix))
}

/// One row for one sysctl.
pub fn sysctl_row(s: &Sysctl, read: Read, needs: &Needs) -> Row {
    let rec = recommended(s, needs);
    let row = Row::new(s.key, Status::Ok).recommended(shown(s, &rec));
    let raw = match read {
        Read::Value(v) => v,
        Read::Absent if s.absent_warns => {
            let note = format!("missing: {}", s.why);
            return warn(s, row.current("absent"), note, &rec);
        }
        Read::Absent => {
            return row
                .current("absent")
                .status(Status::Missing)
                .note(absent_note(s.key))
        }
        Read::Unreadable(e) => {
            return row
                .current("unreadable")
                .status(Status::Missing)
                .note(format!("cannot read it ({e}); run doctor as root to check"))
        }
    };
    let row = row.current(raw.split_whitespace().collect::<Vec<_>>().join(" "));
    let Some(cur) = parse_fields(&raw).filter(|f| !f.is_empty()) else {
        let note = format!("unparsable value {raw:?}; expected numbers. {}", s.why);
        return warn(s, row, note, &rec);
    };
    let want = parse_fields(&rec).unwrap_or_default();
    if s.rule == Rule::Info {
        return row.status(Status::Info).note(s.why);
    }
    match judge(s, &cur, &want, &rec, needs) {
        None => row,
        Some((detail, fix)) => warn(s, row, format!("{detail}: {}", s.why), &fix),
    }
}

fn fmt_count(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn fmt_bytes(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else if v >= 1 << 20 && v % (1 << 20) == 0 {
        format!("{} MiB", v >> 20)
    } else if v >= 1 << 10 && v % (1 << 10) == 0 {
        format!("{} KiB", v >> 10)
    } else {
        format!("{v} B")
    }
}

/// The row to show when a limit is not a number (`None` for a value).
fn limit_unknown(row: Row, limit: &Limit, origin: &str) -> Row {
    match limit {
        Limit::Absent => row
            .current("absent")
            .status(Status::Missing)
            .note(format!("no limits to read from {origin}; not checked")),
        Limit::Unparsable(e) => row
            .current("unparsable")
            .status(Status::Warn)
            .note(format!("cannot read the limit from {origin}: {e}")),
        Limit::Value { .. } => row,
    }
}

/// `RLIMIT_NOFILE` against two sockets per session plus slack.
pub fn nofile_row(limits: &Limits, needs: &Needs) -> Row {
    let need = needs.fds;
    let row = Row::new("rlimit nofile", Status::Ok).recommended(format!(">= {need}"));
    let (soft, hard) = match &limits.nofile {
        Limit::Value { soft, hard } => (*soft, *hard),
        other => return limit_unknown(row, other, &limits.origin),
    };
    let row = row.current(format!("{} (hard {})", fmt_count(soft), fmt_count(hard)));
    if soft >= need {
        return row;
    }
    let n = need.max(table::NOFILE_SHIPPED);
    let unit = if n == table::NOFILE_SHIPPED {
        format!("systemd: tuning/ws-relay-core.service sets LimitNOFILE={n}")
    } else {
        format!(
            "systemd: LimitNOFILE={n} in the unit (more than the shipped {}; fs.nr_open must allow it)",
            table::NOFILE_SHIPPED
        )
    };
    let note = format!(
        "soft limit {} < {need} = 2 sockets x {} max_connections + {} slack. \
         This is the limit of {}; the service gets LimitNOFILE= from its unit \
         (check /proc/$(pidof ws-relay-core)/limits)",
        fmt_count(soft),
        needs.max_connections,
        table::FD_SLACK,
        limits.origin
    );
    row.status(Status::Warn)
        .note(note)
        .fix(unit)
        .fix(format!(
            "shell: ulimit -n {n}   (persist: tuning/limits.conf -> /etc/security/limits.d/)"
        ))
        .fix(format!(
            "running relay: prlimit --pid $(pidof ws-relay-core) --nofile={n}:{n}"
        ))
}

const MEMLOCK_MEMCG: &str = "below the shipped LimitMEMLOCK, but since Linux 5.12 io_uring \
     rings are charged to the memory cgroup, not memlock: only registered buffers would need it";

/// `RLIMIT_MEMLOCK`: only matters for io_uring rings before Linux 5.12.
pub fn memlock_row(limits: &Limits, kernel: Option<(u32, u32)>) -> Row {
    let want = table::MEMLOCK_SHIPPED;
    let row = Row::new("rlimit memlock", Status::Ok).recommended(format!(">= {}", fmt_bytes(want)));
    let (soft, hard) = match &limits.memlock {
        Limit::Value { soft, hard } => (*soft, *hard),
        other => return limit_unknown(row, other, &limits.origin),
    };
    let row = row.current(format!("{} (hard {})", fmt_bytes(soft), fmt_bytes(hard)));
    if soft >= want {
        return row;
    }
    if kernel.is_some_and(|k| k >= table::KERNEL_MEMCG_RINGS) {
        return row.status(Status::Info).note(MEMLOCK_MEMCG);
    }
    let note = format!(
        "{} < {}: before Linux 5.12 io_uring charges ring memory to RLIMIT_MEMLOCK, so \
         io_uring_setup fails with ENOMEM and shards fall back to epoll (limit of {})",
        fmt_bytes(soft),
        fmt_bytes(want),
        limits.origin
    );
    row.status(Status::Warn)
        .note(note)
        .fix("systemd: LimitMEMLOCK=64M in the unit (tuning/ws-relay-core.service)")
        .fix("shell: ulimit -l 65536   (persist: tuning/limits.conf)")
}

/// The kernel release against what io_uring needs.
pub fn kernel_row(kernel: Option<(u32, u32)>, release: &Read) -> Row {
    let (lo_maj, lo_min) = table::KERNEL_IO_URING_MIN;
    let (mc_maj, mc_min) = table::KERNEL_MEMCG_RINGS;
    let row = Row::new("kernel", Status::Ok).recommended(format!(">= {mc_maj}.{mc_min}"));
    let Read::Value(r) = release else {
        return row
            .current("absent")
            .status(Status::Missing)
            .note("no proc/sys/kernel/osrelease");
    };
    let row = row.current(r.as_str());
    match kernel {
        None => row
            .status(Status::Info)
            .note("cannot parse the kernel release"),
        Some(k) if k < table::KERNEL_IO_URING_MIN => row
            .status(Status::Warn)
            .note(format!(
                "io_uring before {lo_maj}.{lo_min} lacks the network operations the runtime \
                 needs; shards will run on the epoll driver"
            ))
            .fix(format!(
                "upgrade to a {mc_maj}.{mc_min}+ kernel (distribution HWE/backports)"
            )),
        Some(k) if k < table::KERNEL_MEMCG_RINGS => row.status(Status::Info).note(
            "io_uring works, but rings are charged to RLIMIT_MEMLOCK before 5.12: see the memlock row",
        ),
        Some(_) => row,
    }
}

const URING_MEANING: &str = "0 = any process may create rings; 1 = only CAP_SYS_ADMIN or members \
     of kernel.io_uring_group; 2 = nobody (the relay then runs on epoll and logs why)";

/// `kernel.io_uring_disabled` with its meaning.
pub fn io_uring_disabled_row(src: &Source) -> Row {
    let key = table::IO_URING_DISABLED;
    let row = Row::new(key, Status::Ok).recommended("0");
    let v = match src.sysctl(key) {
        Read::Value(v) => v,
        Read::Absent => {
            return row.current("absent").status(Status::Info).note(
                "no such switch before Linux 6.6: io_uring is available whenever the kernel \
                 has it built in (see the probe row)",
            )
        }
        Read::Unreadable(e) => {
            return row.current("unreadable").status(Status::Missing).note(e);
        }
    };
    let row = row.current(v.as_str());
    match v.as_str() {
        "0" => row,
        "1" => {
            let group = match src.sysctl(table::IO_URING_GROUP) {
                Read::Value(g) if g != "-1" => format!("gid {g}"),
                _ => "none (-1), so only CAP_SYS_ADMIN".into(),
            };
            row.status(Status::Warn)
                .note(format!("{URING_MEANING}. Allowed group: {group}"))
                .fix(sysctl_cmd(key, "0"))
                .fix(format!(
                    "or keep 1, set {} to a group and add the service user to it \
                     (SupplementaryGroups= in the unit)",
                    table::IO_URING_GROUP
                ))
        }
        _ => row
            .status(Status::Warn)
            .note(URING_MEANING)
            .fix(sysctl_cmd(key, "0"))
            .fix(format!(
                "persist: echo '{key} = 0' >> {DROPIN} (a host-wide security decision: GUIDE.md)"
            )),
    }
}

fn probe_failure(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "denied: kernel.io_uring_disabled, or a seccomp filter (Docker >= 25 and \
             containerd's default profiles block io_uring_*; systemd SystemCallFilter= without @aio)"
        }
        Some(libc::ENOSYS) => {
            "kernel without CONFIG_IO_URING, or a seccomp filter answering ENOSYS"
        }
        Some(libc::ENOMEM) => "RLIMIT_MEMLOCK too small for the ring (kernels before 5.12)",
        _ => "unexpected error",
    }
}

/// Creates and closes a tiny ring (real `/` only).
pub fn probe_row(src: &Source) -> Row {
    let row = Row::new("io_uring_setup probe", Status::Ok).recommended("works");
    if !src.live {
        return row.current("skipped").status(Status::Info).note(format!(
            "the probe tests this process, so it runs only with --proc-root / (this run reads {})",
            src.root().display()
        ));
    }
    match probe::probe_io_uring() {
        Ok(()) => row.current("works"),
        Err(e) => row
            .current(format!("fails: {e}"))
            .status(Status::Warn)
            .note(format!(
                "{}; shards will run on the epoll driver",
                probe_failure(&e)
            ))
            .fix("see GUIDE.md \"io_uring availability\" for container and systemd settings"),
    }
}

const SECCOMP_ON: &str = "a seccomp filter is active (container runtime or systemd \
     SystemCallFilter=): if the probe fails, allow io_uring_setup, io_uring_enter and \
     io_uring_register";

/// Whether this process runs under seccomp (`Seccomp:` in proc/self/status).
pub fn seccomp_row(src: &Source) -> Row {
    let row = Row::new("seccomp (this process)", Status::Ok).recommended("off, or allows io_uring");
    let Read::Value(status) = src.read("proc/self/status") else {
        return row
            .current("absent")
            .status(Status::Missing)
            .note("no proc/self/status under this root");
    };
    match probe::seccomp_mode(&status) {
        Some(0) => row.current("off"),
        Some(mode) => row
            .current(format!("mode {mode}"))
            .status(Status::Info)
            .note(SECCOMP_ON),
        None => row
            .current("unknown")
            .status(Status::Missing)
            .note("no Seccomp: line in proc/self/status"),
    }
}
