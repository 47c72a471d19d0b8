//! Turning live values into report rows: compare with the table, pick a
//! status, and write the exact command that fixes each warning.
//!
//! Owns: the judgement for sysctls (via `table.rs`), rlimits, io_uring, CPU
//! and NIC settings. Must not: read anything itself except through
//! [`Source`], or print (that is `report.rs`).

use super::probe::{self, Limit, Limits, Read, Source};
use super::report::{Row, Status};
use super::table::{self, Needs, Rule, Sysctl};

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
        Rule::Bits => format!("{rec} (bits set)"),
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
            "nf_conntrack is not loaded, so there is nothing to size (the guide's first choice is to keep relay traffic out of conntrack)"
        }
        "net.core.busy_poll" | "net.core.busy_read" => {
            "not present: kernel without CONFIG_NET_RX_BUSY_POLL, or hidden in this network namespace"
        }
        _ => {
            "not present: older kernel, module not loaded, or a host-wide key hidden inside this container's network namespace (check on the host)"
        }
    }
}

/// One row for one sysctl.
pub fn sysctl_row(s: &Sysctl, read: Read, needs: &Needs) -> Row {
    let rec = recommended(s, needs);
    let row = Row::new(s.key, Status::Ok).recommended(shown(s, &rec));
    let warn_fix = |row: Row, note: String, value: &str| {
        let mut row = row.note(note).fix(sysctl_cmd(s.key, value));
        row.status = Status::Warn;
        match persist(s, value) {
            Some(p) => row.fix(p),
            None => row,
        }
    };
    let raw = match read {
        Read::Value(v) => v,
        Read::Absent if s.absent_warns => {
            return warn_fix(row.current("absent"), format!("missing: {}", s.why), &rec)
        }
        Read::Absent => {
            let mut row = row.current("absent").note(absent_note(s.key));
            row.status = Status::Missing;
            return row;
        }
        Read::Unreadable(e) => {
            let mut row = row
                .current("unreadable")
                .note(format!("cannot read it ({e}); run doctor as root to check"));
            row.status = Status::Missing;
            return row;
        }
    };
    let row = row.current(raw.split_whitespace().collect::<Vec<_>>().join(" "));
    let Some(cur) = parse_fields(&raw).filter(|f| !f.is_empty()) else {
        return warn_fix(
            row,
            format!("unparsable value {raw:?}; expected numbers. {}", s.why),
            &rec,
        );
    };
    let Some(want) = parse_fields(&rec) else {
        return row.note("internal: unparsable recommendation");
    };
    let first = cur[0];
    let (ok, detail, fix_value) = match s.rule {
        Rule::AtLeast => {
            let w = want.first().copied().unwrap_or(0);
            let scaled = match s.scale {
                table::Scale::Backlog => format!(" (config backlog {})", needs.backlog),
                table::Scale::Fds => format!(" (config needs {} fds)", needs.fds),
                table::Scale::Conntrack => format!(
                    " ({} sessions x 4 = {} entries)",
                    needs.max_connections, needs.conntrack
                ),
                table::Scale::None => String::new(),
            };
            (first >= w, format!("{first} < {w}{scaled}"), rec.clone())
        }
        Rule::AtMost => {
            let w = want.first().copied().unwrap_or(0);
            (first <= w, format!("{first} > {w}"), rec.clone())
        }
        Rule::Equals => {
            let w = want.first().copied().unwrap_or(0);
            (first == w, format!("{first}, want {w}"), rec.clone())
        }
        Rule::Bits => {
            let w = want.first().copied().unwrap_or(0);
            let merged = (first | w).to_string();
            (first & w == w, format!("{first} lacks bits of {w}"), merged)
        }
        Rule::MaxOfThree => {
            let (c, w) = (cur.get(2).copied(), want.get(2).copied().unwrap_or(0));
            let ok = c.is_some_and(|c| c >= w);
            (ok, format!("max {} < {w}", c.unwrap_or(0)), rec.clone())
        }
        Rule::PortRange => {
            let (lo, hi) = (first, cur.get(1).copied().unwrap_or(0));
            let width = if hi >= lo { hi - lo + 1 } else { 0 };
            let detail = format!(
                "{width} ports; up to {} sessions may dial one target ip:port, plus TIME_WAIT",
                needs.max_connections
            );
            (width >= needs.ports, detail, rec.clone())
        }
        Rule::Info => {
            let mut row = row.note(s.why);
            row.status = Status::Info;
            return row;
        }
    };
    if ok {
        row
    } else {
        warn_fix(row, format!("{detail}: {}", s.why), &fix_value)
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

fn limit_unknown(row: Row, limit: &Limit, origin: &str) -> Option<Row> {
    match limit {
        Limit::Value { .. } => None,
        Limit::Absent => {
            let mut row = row
                .current("absent")
                .note(format!("no limits to read from {origin}; not checked"));
            row.status = Status::Missing;
            Some(row)
        }
        Limit::Unparsable(e) => {
            let mut row = row
                .current("unparsable")
                .note(format!("cannot read the limit from {origin}: {e}"));
            row.status = Status::Warn;
            Some(row)
        }
    }
}

/// Rows for `RLIMIT_NOFILE` and `RLIMIT_MEMLOCK`.
pub fn limit_rows(limits: &Limits, needs: &Needs, kernel: Option<(u32, u32)>) -> Vec<Row> {
    let mut rows = Vec::new();
    let origin = &limits.origin;

    let need = needs.fds;
    let row = Row::new("rlimit nofile", Status::Ok).recommended(format!(">= {need}"));
    rows.push(limit_unknown(row.clone(), &limits.nofile, origin).unwrap_or_else(|| {
        let Limit::Value { soft, hard } = limits.nofile else {
            return row;
        };
        let row = row.current(format!("{} (hard {})", fmt_count(soft), fmt_count(hard)));
        if soft >= need {
            return row;
        }
        let n = need.max(table::NOFILE_SHIPPED);
        let mut row = row
            .note(format!(
                "soft limit {} < {need} = 2 sockets x {} max_connections + {} slack (limit of {origin}; the service gets LimitNOFILE= from its unit: check /proc/$(pidof ws-relay-core)/limits)",
                fmt_count(soft), needs.max_connections, table::FD_SLACK
            ))
            .fix(format!("systemd: LimitNOFILE={n} in the unit (tuning/ws-relay-core.service ships {})", table::NOFILE_SHIPPED))
            .fix(format!("shell: ulimit -n {n}   (persist: tuning/limits.conf -> /etc/security/limits.d/ws-relay-core.conf)"))
            .fix(format!("running relay: prlimit --pid $(pidof ws-relay-core) --nofile={n}:{n}"));
        row.status = Status::Warn;
        row
    }));

    let want = table::MEMLOCK_SHIPPED;
    let row = Row::new("rlimit memlock", Status::Ok).recommended(format!(">= {}", fmt_bytes(want)));
    rows.push(limit_unknown(row.clone(), &limits.memlock, origin).unwrap_or_else(|| {
        let Limit::Value { soft, hard } = limits.memlock else {
            return row;
        };
        let row = row.current(format!("{} (hard {})", fmt_bytes(soft), fmt_bytes(hard)));
        if soft >= want {
            return row;
        }
        let memcg = kernel.is_some_and(|k| k >= table::KERNEL_MEMCG_RINGS);
        if memcg {
            let mut row = row.note(
                "below the shipped LimitMEMLOCK, but since Linux 5.12 io_uring rings are charged to the memory cgroup, not memlock: only registered buffers would need it",
            );
            row.status = Status::Info;
            return row;
        }
        let mut row = row
            .note(format!(
                "{} < {}: before Linux 5.12 io_uring charges ring memory to RLIMIT_MEMLOCK, so io_uring_setup fails with ENOMEM and shards fall back to epoll (limit of {origin})",
                fmt_bytes(soft), fmt_bytes(want)
            ))
            .fix("systemd: LimitMEMLOCK=64M in the unit (tuning/ws-relay-core.service)")
            .fix("shell: ulimit -l 65536   (persist: tuning/limits.conf)");
        row.status = Status::Warn;
        row
    }));
    rows
}

/// Rows for the kernel version, `kernel.io_uring_disabled`, the probe and seccomp.
pub fn io_uring_rows(src: &Source, kernel: Option<(u32, u32)>, release: &Read) -> Vec<Row> {
    let mut rows = Vec::new();
    let (lo_maj, lo_min) = table::KERNEL_IO_URING_MIN;
    let (mc_maj, mc_min) = table::KERNEL_MEMCG_RINGS;
    let row = Row::new("kernel", Status::Ok).recommended(format!(">= {mc_maj}.{mc_min}"));
    rows.push(match (release, kernel) {
        (Read::Value(r), Some(k)) if k < table::KERNEL_IO_URING_MIN => {
            let mut row = row.current(r.as_str()).note(format!(
                "io_uring before {lo_maj}.{lo_min} lacks the network operations the runtime needs; shards will run on the epoll driver"
            ));
            row.status = Status::Warn;
            row.fix(format!("upgrade to a {mc_maj}.{mc_min}+ kernel (distro HWE/backports)"))
        }
        (Read::Value(r), Some(k)) if k < table::KERNEL_MEMCG_RINGS => {
            let mut row = row.current(r.as_str()).note(
                "io_uring works, but rings are charged to RLIMIT_MEMLOCK before 5.12: see the memlock row",
            );
            row.status = Status::Info;
            row
        }
        (Read::Value(r), Some(_)) => row.current(r.as_str()),
        (Read::Value(r), None) => {
            let mut row = row.current(r.as_str()).note("cannot parse the kernel release");
            row.status = Status::Info;
            row
        }
        _ => {
            let mut row = row.current("absent").note("no proc/sys/kernel/osrelease");
            row.status = Status::Missing;
            row
        }
    });

    const MEANING: &str = "0 = any process may create rings; 1 = only CAP_SYS_ADMIN or members of kernel.io_uring_group; 2 = nobody (the relay then runs on epoll and logs why)";
    let row = Row::new(table::IO_URING_DISABLED, Status::Ok).recommended("0");
    rows.push(match src.sysctl(table::IO_URING_DISABLED) {
        Read::Value(v) if v == "0" => row.current(v),
        Read::Value(v) if v == "1" => {
            let group = match src.sysctl(table::IO_URING_GROUP) {
                Read::Value(g) if g != "-1" => format!("gid {g}"),
                _ => "no group (-1): only CAP_SYS_ADMIN".into(),
            };
            let mut row = row
                .current(v)
                .note(format!("{MEANING}. Allowed group: {group}"))
                .fix(sysctl_cmd(table::IO_URING_DISABLED, "0"))
                .fix(format!(
                    "or keep 1 and add the service user to that group: SupplementaryGroups= in the unit (sysctl -w {}=<gid>)",
                    table::IO_URING_GROUP
                ));
            row.status = Status::Warn;
            row
        }
        Read::Value(v) => {
            let mut row = row
                .current(v)
                .note(MEANING)
                .fix(sysctl_cmd(table::IO_URING_DISABLED, "0"))
                .fix(format!(
                    "persist: echo '{} = 0' >> {DROPIN} (a host-wide security decision: see GUIDE.md)",
                    table::IO_URING_DISABLED
                ));
            row.status = Status::Warn;
            row
        }
        Read::Absent => {
            let mut row = row.current("absent").note(
                "no such switch before Linux 6.6: io_uring is available whenever the kernel has it built in (see the probe row)",
            );
            row.status = Status::Info;
            row
        }
        Read::Unreadable(e) => {
            let mut row = row.current("unreadable").note(e);
            row.status = Status::Missing;
            row
        }
    });

    let row = Row::new("io_uring_setup probe", Status::Ok).recommended("works");
    rows.push(if !src.live {
        let mut row = row.current("skipped").note(format!(
            "the probe tests this process, so it runs only with --proc-root / (this run reads {})",
            src.root().display()
        ));
        row.status = Status::Info;
        row
    } else {
        match probe::probe_io_uring() {
            Ok(()) => row.current("works"),
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => "denied: kernel.io_uring_disabled, or a seccomp filter (Docker >= 25 and containerd's default profiles block io_uring_*; systemd SystemCallFilter= without @aio)",
                    Some(libc::ENOSYS) => "kernel without CONFIG_IO_URING, or a seccomp filter answering ENOSYS",
                    Some(libc::ENOMEM) => "RLIMIT_MEMLOCK too small for the ring (kernels before 5.12)",
                    _ => "unexpected error",
                };
                let mut row = row
                    .current(format!("fails: {e}"))
                    .note(format!("{why}; shards will run on the epoll driver"))
                    .fix("see GUIDE.md \"io_uring availability\" for the container and systemd settings");
                row.status = Status::Warn;
                row
            }
        }
    });

    let row = Row::new("seccomp (this process)", Status::Ok).recommended("off, or allows io_uring");
    rows.push(match src.read("proc/self/status") {
        Read::Value(s) => match probe::seccomp_mode(&s) {
            Some(0) => row.current("off"),
            Some(mode) => {
                let mut row = row.current(format!("mode {mode}")).note(
                    "a seccomp filter is active (container runtime or systemd SystemCallFilter=): if the probe fails, allow io_uring_setup, io_uring_enter and io_uring_register",
                );
                row.status = Status::Info;
                row
            }
            None => {
                let mut row = row.current("unknown").note("no Seccomp: line in proc/self/status");
                row.status = Status::Missing;
                row
            }
        },
        _ => {
            let mut row = row.current("absent").note("no proc/self/status under this root");
            row.status = Status::Missing;
            row
        }
    });
    rows
}
