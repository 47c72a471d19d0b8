//! What one soak variant measured and whether it passed: message counts
//! (lost, duplicated, reordered and corrupted must be 0 on every surviving
//! session), how sessions ended, the relay's RSS curve (flat after warm-up)
//! and its descriptor count (back to the start).
//!
//! Reads `/proc/<pid>` only; judges, never acts.

use super::message::MsgCounts;
use super::session::ClientStats;
use crate::cli::SoakArgs;

/// A process's open descriptors by kind. Splice mode keeps a bounded pool
/// of idle pipes per shard, so pipes are judged against that bound and
/// everything else against the start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FdCounts {
    pub sockets: usize,
    /// Pipe ends (two per pooled pipe).
    pub pipes: usize,
    /// Files, io_uring, eventfd, epoll...
    pub other: usize,
}

/// Idle pipes a shard keeps for splice (`PipePool::new(256)` in the relay).
pub const POOLED_PIPES_PER_SHARD: usize = 256;

impl FdCounts {
    pub fn of(pid: u32) -> Self {
        let mut c = FdCounts::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return c;
        };
        for fd in dir.flatten() {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            if t.starts_with("socket:") {
                c.sockets += 1;
            } else if t.starts_with("pipe:") {
                c.pipes += 1;
            } else {
                c.other += 1;
            }
        }
        c
    }

    pub fn total(&self) -> usize {
        self.sockets + self.pipes + self.other
    }
}

/// One look at the relay process.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ProcSample {
    /// Seconds since the variant started.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: usize,
    /// Sessions the clients held open.
    pub sessions: usize,
}

impl ProcSample {
    pub fn take(pid: u32, t: f64, sessions: usize) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        // A count only: telling kinds apart (`FdCounts`) reads every link,
        // too much for each sample at 16,000 descriptors.
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0);
        ProcSample {
            t,
            rss_kib,
            fds,
            sessions,
        }
    }
}

/// The RSS rule: after warm-up, the median of the last quarter of the
/// samples is at most `allowed_pct` above the median of the first quarter.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RssTrend {
    /// Seconds after the start from which samples count.
    pub from_secs: f64,
    pub samples: usize,
    pub first_median_kib: u64,
    pub last_median_kib: u64,
    pub peak_kib: u64,
    pub growth_pct: f64,
    pub allowed_pct: f64,
}

/// Samples after warm-up needed to judge the trend.
const MIN_RSS_SAMPLES: usize = 8;

impl RssTrend {
    /// None with fewer than [`MIN_RSS_SAMPLES`] samples under load after `from_secs`.
    pub fn of(samples: &[ProcSample], from_secs: f64, allowed_pct: f64) -> Option<Self> {
        let after: Vec<u64> = samples
            .iter()
            .filter(|s| s.sessions > 0 && s.t >= from_secs)
            .map(|s| s.rss_kib)
            .collect();
        let n = after.len();
        if n < MIN_RSS_SAMPLES {
            return None;
        }
        let first = median(&after[..n / 4]);
        let last = median(&after[n - n / 4..]);
        Some(RssTrend {
            from_secs,
            samples: n,
            first_median_kib: first,
            last_median_kib: last,
            peak_kib: after.iter().copied().max().unwrap_or(0),
            growth_pct: (last as f64 / first.max(1) as f64 - 1.0) * 100.0,
            allowed_pct,
        })
    }

    pub fn flat(&self) -> bool {
        self.growth_pct <= self.allowed_pct
    }
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// One variant's settings, counts and verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub forward: String,
    pub tls: bool,
    pub sessions: u32,
    pub duration_secs: f64,
    pub run_secs: f64,
    pub reloads: u64,
    pub users_removed: u64,
    pub users_added: u64,
    pub target_restarts: u64,
    pub clients: ClientStats,
    pub fds_start: FdCounts,
    pub fds_end: FdCounts,
    /// Shards of the relay (the pipe pool's bound scales with them).
    pub shards: u32,
    pub rss: Option<RssTrend>,
    pub samples: Vec<ProcSample>,
    /// Setup and control failures (a refused reload, a target that did not
    /// come back, the relay exiting).
    pub problems: Vec<String>,
    rss_growth_pct: f64,
    rss_from_secs: f64,
}

impl VariantReport {
    pub fn new(variant: &str, a: &SoakArgs, forward: &str, tls: bool) -> Self {
        VariantReport {
            variant: variant.into(),
            forward: forward.into(),
            tls,
            sessions: a.sessions,
            duration_secs: a.duration,
            run_secs: 0.0,
            reloads: 0,
            users_removed: 0,
            users_added: 0,
            target_restarts: 0,
            clients: ClientStats::default(),
            fds_start: FdCounts::default(),
            fds_end: FdCounts::default(),
            shards: a.relay_workers,
            rss: None,
            samples: Vec::new(),
            problems: Vec::new(),
            rss_growth_pct: a.rss_growth_pct,
            rss_from_secs: super::ramp_secs(a) + a.warmup,
        }
    }

    /// Computes the RSS trend; call once the samples are in.
    pub fn finish(&mut self) {
        self.rss = RssTrend::of(&self.samples, self.rss_from_secs, self.rss_growth_pct);
    }

    /// Every reason this variant failed (empty: it passed).
    pub fn failures(&self) -> Vec<String> {
        let mut f = self.problems.clone();
        let c = &self.clients;
        let msgs = c.messages();
        let bad = |what: &str, n: u64| (n > 0).then(|| format!("{n} {what}"));
        f.extend(
            [
                bad("messages lost", msgs.lost),
                bad("messages duplicated", msgs.duplicated),
                bad("messages reordered", msgs.reordered),
                bad("messages corrupted", msgs.corrupted),
                bad("sessions ended unexpectedly", c.unexpected_end),
                bad(
                    "sessions ended by a restart with the wrong close",
                    c.wrong_close,
                ),
                bad("connects refused for auth", c.connect_auth_failed),
                bad("connects failed", c.connect_errors),
            ]
            .into_iter()
            .flatten(),
        );
        let (start, end) = (self.fds_start, self.fds_end);
        if (end.sockets, end.other) != (start.sockets, start.other) {
            f.push(format!(
                "relay descriptors at the end {end:?}, at the start {start:?} (pipes aside)"
            ));
        }
        let pipe_bound = 2 * POOLED_PIPES_PER_SHARD * self.shards.max(1) as usize;
        if end.pipes > pipe_bound {
            f.push(format!(
                "{} pipe ends held at the end, more than the pools' {pipe_bound}",
                end.pipes
            ));
        }
        match &self.rss {
            Some(r) if !r.flat() => f.push(format!(
                "RSS grew {:.1} % after warm-up (allowed {:.1} %)",
                r.growth_pct, r.allowed_pct
            )),
            // Reported as not judged (see `print`), not a failure: a run
            // shorter than its warm-up says nothing about growth.
            Some(_) | None => {}
        }
        f
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }

    pub fn print(&self) {
        let c = &self.clients;
        println!(
            "== {} (forward={}, tls={}) {} sessions, {:.0} s",
            self.variant, self.forward, self.tls, self.sessions, self.run_secs
        );
        println!(
            "   events: {} reloads (+{} -{} users), {} target restarts",
            self.reloads, self.users_added, self.users_removed, self.target_restarts
        );
        println!(
            "   sessions: {} opened, {} clean, {} by restart {:?}, {} RST, {} unexpected; \
             {} of removed users ran on",
            c.opened,
            c.ended_clean,
            c.ended_by_restart,
            c.restart_closes,
            c.rst,
            c.unexpected_end,
            c.removed_user_sessions
        );
        print_counts("surviving", &c.surviving);
        print_counts("cut", &c.cut);
        match &self.rss {
            Some(r) => println!(
                "   relay RSS after {:.0} s: first quarter {} KiB, last quarter {} KiB ({:+.1} %), \
                 peak {} KiB, {} samples",
                r.from_secs, r.first_median_kib, r.last_median_kib, r.growth_pct, r.peak_kib, r.samples
            ),
            None => println!(
                "   relay RSS: not judged (fewer than {MIN_RSS_SAMPLES} samples after the {:.0} s warm-up)",
                self.rss_from_secs
            ),
        }
        let (s, e) = (self.fds_start, self.fds_end);
        println!(
            "   relay fds: {} at start ({} sockets), {} at end ({} sockets, {} pooled pipe ends)",
            s.total(),
            s.sockets,
            e.total(),
            e.sockets,
            e.pipes
        );
        for (kind, n) in &c.connect_error_kinds {
            println!("   connect errors: {n} × {kind}");
        }
        for n in &c.notes {
            println!("   note: {n}");
        }
        match self.failures().as_slice() {
            [] => println!("   PASS"),
            f => println!("   FAIL: {}", f.join("; ")),
        }
    }
}

fn print_counts(what: &str, m: &MsgCounts) {
    println!(
        "   {what}: sent {} received {} lost {} duplicated {} reordered {} corrupted {} in-flight {}",
        m.sent, m.received, m.lost, m.duplicated, m.reordered, m.corrupted, m.in_flight_excluded
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64]) -> Vec<ProcSample> {
        rss.iter()
            .enumerate()
            .map(|(i, &r)| ProcSample {
                t: i as f64,
                rss_kib: r,
                fds: 10,
                sessions: 100,
            })
            .collect()
    }

    #[test]
    fn rss_is_judged_after_warm_up() {
        // Growth during warm-up (the first 3 s here) does not count.
        let flat = [
            100, 500, 900, 1000, 1010, 1000, 1005, 1002, 1000, 1004, 1001,
        ];
        let t = RssTrend::of(&samples(&flat), 3.0, 10.0).unwrap();
        assert_eq!((t.samples, t.first_median_kib), (8, 1010));
        assert!(t.flat());
        let leak = [
            100, 500, 900, 1000, 1050, 1100, 1150, 1200, 1250, 1300, 1350,
        ];
        assert!(!RssTrend::of(&samples(&leak), 3.0, 10.0).unwrap().flat());
        assert!(RssTrend::of(&samples(&flat), 4.0, 10.0).is_none());
    }
}
