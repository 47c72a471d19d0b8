//! The one table of recommended kernel settings, and how they scale with the
//! config.
//!
//! Owns: every sysctl doctor knows (key, the value `tuning/99-ws-relay-core.conf`
//! writes, how to compare, what a missing key means), the rlimit values the
//! shipped systemd unit and `limits.conf` set, and [`Needs`], the minimums a
//! given config implies. `tuning/GUIDE.md` explains each row; unit tests check
//! that the drop-in and this table agree. Must not: read files or print.

/// How the live value is compared with the recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One integer; ok when live >= recommended.
    AtLeast,
    /// One integer; ok when live <= recommended.
    AtMost,
    /// One integer; ok when equal.
    Equals,
    /// One integer; ok when every bit of the recommendation is set.
    Bits,
    /// `min default max`; ok when the live max >= the recommended max.
    MaxOfThree,
    /// `low high`; ok when the range holds at least [`Needs::ports`] ports.
    PortRange,
    /// Shown for reference; never warns.
    Info,
}

/// Which config-derived minimum raises the recommendation above the table
/// value (the recommendation is the larger of the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    None,
    /// The listener backlog from `server.backlog`.
    Backlog,
    /// File descriptors for `server.max_connections` sessions.
    Fds,
    /// Conntrack entries for `server.max_connections` sessions.
    Conntrack,
}

/// One sysctl doctor checks.
#[derive(Debug, Clone, Copy)]
pub struct Sysctl {
    /// Dotted name, as `sysctl` and the drop-in spell it.
    pub key: &'static str,
    /// The recommended value, exactly as the drop-in writes it.
    pub value: &'static str,
    pub rule: Rule,
    pub scale: Scale,
    /// Whether `tuning/99-ws-relay-core.conf` sets it (unit-tested).
    pub in_dropin: bool,
    /// Whether a missing key is a warning (it matters and should always be
    /// visible) rather than "missing" (module not loaded, older kernel, or a
    /// host-wide key hidden inside a network namespace).
    pub absent_warns: bool,
    /// One line for the report: why the relay wants it.
    pub why: &'static str,
}

const fn sysctl(
    key: &'static str,
    value: &'static str,
    rule: Rule,
    scale: Scale,
    in_dropin: bool,
    absent_warns: bool,
    why: &'static str,
) -> Sysctl {
    Sysctl {
        key,
        value,
        rule,
        scale,
        in_dropin,
        absent_warns,
        why,
    }
}

use Rule::*;

/// Every sysctl doctor reports, in report order. Values here are the ones
/// `tuning/99-ws-relay-core.conf` writes and `tuning/GUIDE.md` explains.
pub const SYSCTLS: &[Sysctl] = &[
    sysctl(
        "net.core.somaxconn",
        "65535",
        AtLeast,
        Scale::Backlog,
        true,
        true,
        "the kernel silently clamps every listener's backlog to this",
    ),
    sysctl(
        "net.ipv4.tcp_max_syn_backlog",
        "65535",
        AtLeast,
        Scale::Backlog,
        true,
        true,
        "half-open connections per listener before SYN cookies kick in",
    ),
    sysctl(
        "net.core.netdev_max_backlog",
        "16384",
        AtLeast,
        Scale::None,
        true,
        false,
        "per-CPU input queue (RPS, bursts) before the kernel drops packets",
    ),
    sysctl(
        "net.ipv4.tcp_fastopen",
        "3",
        Bits,
        Scale::None,
        true,
        false,
        "bit 1: client TFO on dials to targets; bit 2: server TFO on the listeners",
    ),
    sysctl(
        "net.core.rmem_max",
        "16777216",
        AtLeast,
        Scale::None,
        true,
        false,
        "ceiling for SO_RCVBUF; 16 MiB covers ~2.7 Gbit/s at a 49 ms round trip",
    ),
    sysctl(
        "net.core.wmem_max",
        "16777216",
        AtLeast,
        Scale::None,
        true,
        false,
        "ceiling for SO_SNDBUF; 16 MiB covers ~2.7 Gbit/s at a 49 ms round trip",
    ),
    sysctl(
        "net.ipv4.tcp_rmem",
        "4096 131072 16777216",
        MaxOfThree,
        Scale::None,
        true,
        true,
        "receive autotuning ceiling for long-distance targets; idle sockets hold none",
    ),
    sysctl(
        "net.ipv4.tcp_wmem",
        "4096 16384 16777216",
        MaxOfThree,
        Scale::None,
        true,
        true,
        "send autotuning ceiling; the relay's backpressure lives in these queues",
    ),
    sysctl(
        "net.ipv4.tcp_notsent_lowat",
        "131072",
        AtMost,
        Scale::None,
        true,
        false,
        "bounds unsent bytes per socket: less queueing delay, earlier backpressure",
    ),
    sysctl(
        "net.ipv4.tcp_slow_start_after_idle",
        "0",
        Equals,
        Scale::None,
        true,
        false,
        "keeps the congestion window across quiet spells of a bursty feed",
    ),
    sysctl(
        "net.ipv4.ip_local_port_range",
        "1024 65535",
        PortRange,
        Scale::None,
        true,
        true,
        "the relay dials out once per session: ephemeral ports per target ip:port",
    ),
    sysctl(
        "net.ipv4.tcp_tw_reuse",
        "1",
        Equals,
        Scale::None,
        true,
        false,
        "lets new dials reuse TIME_WAIT ports (2 = loopback only)",
    ),
    sysctl(
        "fs.file-max",
        "2097152",
        AtLeast,
        Scale::Fds,
        true,
        true,
        "system-wide open files; each session holds two sockets",
    ),
    sysctl(
        "fs.nr_open",
        "1048576",
        AtLeast,
        Scale::Fds,
        true,
        true,
        "the highest RLIMIT_NOFILE (LimitNOFILE=) any process may be given",
    ),
    sysctl(
        "net.netfilter.nf_conntrack_max",
        "1048576",
        AtLeast,
        Scale::Conntrack,
        true,
        false,
        "each session is two tracked flows, plus closed ones lingering in TIME_WAIT",
    ),
    sysctl(
        "net.core.busy_poll",
        "0",
        Info,
        Scale::None,
        false,
        false,
        "µs to busy-poll in poll/epoll (legacy driver only); 50 on dedicated hosts",
    ),
    sysctl(
        "net.core.busy_read",
        "0",
        Info,
        Scale::None,
        false,
        false,
        "µs to busy-poll on blocking reads; the relay never blocks, leave 0",
    ),
    sysctl(
        "net.core.rps_sock_flow_entries",
        "32768",
        Info,
        Scale::None,
        false,
        false,
        "RFS: a flow's softirq work runs on its shard's CPU (needs rps_flow_cnt per queue)",
    ),
];

/// `kernel.io_uring_disabled`: handled by the io_uring check, not [`SYSCTLS`],
/// because its meaning depends on the group and the probe.
pub const IO_URING_DISABLED: &str = "kernel.io_uring_disabled";
/// The group allowed to create rings when `io_uring_disabled` is 1.
pub const IO_URING_GROUP: &str = "kernel.io_uring_group";

/// `LimitNOFILE=` in the shipped unit and `nofile` in `limits.conf`.
pub const NOFILE_SHIPPED: u64 = 1_048_576;
/// `LimitMEMLOCK=64M` in the shipped unit (`memlock 65536` KiB in limits.conf).
pub const MEMLOCK_SHIPPED: u64 = 64 * 1024 * 1024;
/// File descriptors beyond two per session: listeners, rings, eventfds, pipes
/// borrowed by splice transfers in flight, logs, the control socket, DNS.
pub const FD_SLACK: u64 = 4096;
/// CPU frequency governor the guide recommends.
pub const GOVERNOR: &str = "performance";
/// Oldest kernel whose io_uring has the networking operations a runtime needs.
pub const KERNEL_IO_URING_MIN: (u32, u32) = (5, 6);
/// From this kernel on, io_uring rings are charged to memcg, not memlock.
pub const KERNEL_MEMCG_RINGS: (u32, u32) = (5, 12);
/// `guest_halt_poll_ns` the guide suggests for latency-first VMs.
pub const HALT_POLL_NS: u64 = 200_000;

/// Minimums implied by a config: the recommendation for a scaled row is the
/// larger of the table value and the matching need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub backlog: u64,
    pub max_connections: u64,
    /// `2 * max_connections + FD_SLACK`.
    pub fds: u64,
    /// `4 * max_connections`: two flows per session, plus as many again
    /// closing or in TIME_WAIT.
    pub conntrack: u64,
    /// Ephemeral ports: all sessions may dial the same target ip:port, so up
    /// to `max_connections + 1024` (TIME_WAIT), capped at the full range.
    pub ports: u64,
}

impl Needs {
    pub fn new(backlog: u32, max_connections: usize) -> Needs {
        let max_connections = u64::try_from(max_connections).unwrap_or(u64::MAX);
        Needs {
            backlog: u64::from(backlog),
            max_connections,
            fds: max_connections.saturating_mul(2).saturating_add(FD_SLACK),
            conntrack: max_connections.saturating_mul(4),
            ports: max_connections.saturating_add(1024).min(64512),
        }
    }

    /// The need a [`Scale`] refers to (0 when unscaled).
    pub fn of(&self, scale: Scale) -> u64 {
        match scale {
            Scale::None => 0,
            Scale::Backlog => self.backlog,
            Scale::Fds => self.fds,
            Scale::Conntrack => self.conntrack,
        }
    }
}

/// Looks a key up in [`SYSCTLS`].
#[cfg(test)]
pub fn find(key: &str) -> Option<&'static Sysctl> {
    SYSCTLS.iter().find(|s| s.key == key)
}

/// `net.core.somaxconn` → `net/core/somaxconn`, the path under `/proc/sys`.
pub fn proc_path(key: &str) -> String {
    key.replace('.', "/")
}
