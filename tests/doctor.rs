//! `ws-relay-core doctor` end to end: the real binary against fake proc
//! trees (`--proc-root`) with a temp config, against the real `/`, and the
//! shipped systemd unit through `systemd-analyze verify` where it exists.
//!
//! Rlimits under a fake tree come from `<tree>/proc/self/limits` (the
//! kernel's format), so these tests never depend on the limits of the
//! process running them; the io_uring probe only runs against `/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_ws-relay-core");

/// Every sysctl at the value `tuning/99-ws-relay-core.conf` sets, plus the
/// ones doctor only reports.
const TUNED: &[(&str, &str)] = &[
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "65535"),
    ("net/core/netdev_max_backlog", "16384"),
    ("net/ipv4/tcp_fastopen", "3"),
    ("net/core/rmem_max", "16777216"),
    ("net/core/wmem_max", "16777216"),
    ("net/ipv4/tcp_rmem", "4096\t131072\t16777216"),
    ("net/ipv4/tcp_wmem", "4096\t16384\t16777216"),
    ("net/ipv4/tcp_notsent_lowat", "131072"),
    ("net/ipv4/tcp_slow_start_after_idle", "0"),
    ("net/ipv4/ip_local_port_range", "1024\t65535"),
    ("net/ipv4/tcp_tw_reuse", "1"),
    ("fs/file-max", "2097152"),
    ("fs/nr_open", "1048576"),
    ("net/netfilter/nf_conntrack_max", "1048576"),
    ("net/core/busy_poll", "0"),
    ("net/core/busy_read", "0"),
    ("net/core/rps_sock_flow_entries", "32768"),
    ("kernel/io_uring_disabled", "0"),
    ("kernel/io_uring_group", "-1"),
    ("kernel/osrelease", "6.8.0-test"),
];

fn limits_file(nofile: &str, memlock: &str) -> String {
    format!(
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max cpu time              unlimited            unlimited            seconds   \n\
         Max open files            {nofile:<20} {nofile:<20} files     \n\
         Max locked memory         {memlock:<20} {memlock:<20} bytes     \n"
    )
}

struct Tree {
    dir: TempDir,
}

impl Tree {
    /// A host tuned exactly as the guide says, with 4 CPUs and one NIC.
    fn tuned() -> Tree {
        let tree = Tree {
            dir: tempfile::tempdir().unwrap(),
        };
        for (key, value) in TUNED {
            tree.set(&format!("proc/sys/{key}"), value);
        }
        tree.set("proc/self/limits", &limits_file("1048576", "67108864"));
        tree.set("proc/self/status", "Name:\tws-relay-core\nSeccomp:\t0\n");
        tree.set("sys/devices/system/cpu/online", "0-3");
        tree.set("sys/devices/system/cpu/isolated", "");
        tree.set(
            "sys/devices/system/cpu/cpuidle/current_driver",
            "intel_idle",
        );
        for cpu in 0..4 {
            tree.set(
                &format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"),
                "performance",
            );
        }
        fs::create_dir_all(tree.path("sys/class/net/eth0/device")).unwrap();
        for q in 0..4 {
            tree.set(&format!("sys/class/net/eth0/queues/rx-{q}/rps_cpus"), "0");
            tree.set(&format!("sys/class/net/eth0/queues/tx-{q}/xps_cpus"), "1");
        }
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn set(&self, rel: &str, value: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{value}\n")).unwrap();
    }

    fn remove(&self, rel: &str) {
        fs::remove_file(self.path(rel)).unwrap();
    }

    /// Writes a config next to the tree and returns its path.
    fn config(&self, backlog: u32, max_connections: usize, workers: usize) -> PathBuf {
        let p = self.path("relay.toml");
        fs::write(
            &p,
            format!(
                "[server]\nhost = \"127.0.0.1\"\nport = 8080\nenable_tls = false\n\
                 backlog = {backlog}\nmax_connections = {max_connections}\nworkers = {workers}\n\n\
                 [[users]]\nname = \"t\"\ntoken = \"doctor-test-token\"\n"
            ),
        )
        .unwrap();
        p
    }

    fn doctor(&self, config: &Path, strict: bool) -> (i32, String) {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(config)
            .arg("doctor")
            .arg("--proc-root")
            .arg(self.dir.path());
        if strict {
            cmd.arg("--strict");
        }
        run(cmd)
    }

    fn doctor_default(&self) -> (i32, String) {
        let config = self.config(4096, 100_000, 0);
        self.doctor(&config, true)
    }
}

fn run(mut cmd: Command) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.env_remove("WS_RELAY_CONFIG").output().unwrap();
    let stdout = String::from_utf8(stdout).unwrap();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(!stderr.contains("panicked"), "doctor panicked:\n{stderr}");
    let code = status.code().expect("doctor killed by a signal");
    (code, format!("{stdout}{stderr}"))
}

/// The status column of `setting`'s table row.
fn status_of(out: &str, setting: &str) -> String {
    out.lines()
        .find(|l| l.split("  ").next() == Some(setting))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_else(|| panic!("no row for {setting}:\n{out}"))
        .to_string()
}

#[test]
fn a_tuned_tree_passes_strict() {
    let tree = Tree::tuned();
    let config = tree.config(4096, 100_000, 0);
    let (code, out) = tree.doctor(&config, true);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&config.display().to_string()),
        "config not used:\n{out}"
    );
    assert!(out.contains(" 0 warn,"), "{out}");
    assert!(!out.contains("[warn]"), "{out}");
    for setting in [
        "net.core.somaxconn",
        "net.ipv4.tcp_rmem",
        "net.ipv4.ip_local_port_range",
        "rlimit nofile",
        "rlimit memlock",
        "kernel.io_uring_disabled",
        "cpufreq governor",
        "shards (server.workers)",
    ] {
        assert_eq!(status_of(&out, setting), "ok", "{setting}:\n{out}");
    }
    assert_eq!(status_of(&out, "io_uring_setup probe"), "info", "{out}");
}

/// One value below the recommendation: that row (and only it) warns, and
/// the report holds the exact fix.
fn assert_single_warning(rel: &str, low: &str, setting: &str, fix: &str) {
    let tree = Tree::tuned();
    tree.set(rel, low);
    let (code, out) = tree.doctor_default();
    assert_eq!(code, 1, "{setting} = {low:?} should fail --strict:\n{out}");
    assert_eq!(status_of(&out, setting), "warn", "{setting}:\n{out}");
    assert!(
        out.contains(&format!("- {setting} [warn]")),
        "{setting}:\n{out}"
    );
    assert!(out.contains(fix), "{setting}: no `{fix}` in:\n{out}");
    assert!(
        out.contains(" 1 warn,"),
        "{setting}: more than one warning:\n{out}"
    );
}

#[test]
fn each_low_sysctl_warns_with_its_fix() {
    // (key, live value, value the fix sets)
    let cases = [
        ("net.core.somaxconn", "4096", "65535"),
        ("net.ipv4.tcp_max_syn_backlog", "2048", "65535"),
        ("net.core.netdev_max_backlog", "1000", "16384"),
        ("net.ipv4.tcp_fastopen", "1", "3"),
        ("net.core.rmem_max", "212992", "16777216"),
        ("net.core.wmem_max", "212992", "16777216"),
        (
            "net.ipv4.tcp_rmem",
            "4096\t131072\t6291456",
            "4096 131072 16777216",
        ),
        (
            "net.ipv4.tcp_wmem",
            "4096\t16384\t4194304",
            "4096 16384 16777216",
        ),
        ("net.ipv4.tcp_notsent_lowat", "4294967295", "131072"),
        ("net.ipv4.tcp_slow_start_after_idle", "1", "0"),
        ("net.ipv4.ip_local_port_range", "32768\t60999", "1024 65535"),
        ("net.ipv4.tcp_tw_reuse", "2", "1"),
        ("fs.file-max", "98304", "2097152"),
        ("fs.nr_open", "65536", "1048576"),
        ("net.netfilter.nf_conntrack_max", "65536", "1048576"),
        ("kernel.io_uring_disabled", "2", "0"),
        ("kernel.io_uring_disabled", "1", "0"),
    ];
    for (key, low, value) in cases {
        let rel = format!("proc/sys/{}", key.replace('.', "/"));
        let fix = if value.contains(' ') {
            format!("sysctl -w {key}=\"{value}\"")
        } else {
            format!("sysctl -w {key}={value}")
        };
        assert_single_warning(&rel, low, key, &fix);
    }
}

#[test]
fn low_limits_old_kernels_and_slow_governors_warn_with_their_fix() {
    assert_single_warning(
        "proc/self/limits",
        &limits_file("20000", "67108864"),
        "rlimit nofile",
        "ulimit -n 1048576",
    );
    assert_single_warning(
        "proc/sys/kernel/osrelease",
        "5.4.0-150-generic",
        "kernel",
        "upgrade to a 5.12+ kernel",
    );
    assert_single_warning(
        "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
        "powersave",
        "cpufreq governor",
        "cpupower frequency-set -g performance",
    );
}

#[test]
fn sysctl_fixes_point_at_the_drop_in() {
    let tree = Tree::tuned();
    tree.set("proc/sys/net/core/somaxconn", "128");
    let (_, out) = tree.doctor_default();
    assert!(
        out.contains(
            "install -m 0644 tuning/99-ws-relay-core.conf /etc/sysctl.d/ && sysctl --system"
        ),
        "{out}"
    );
}

#[test]
fn memlock_matters_only_before_5_12() {
    let tree = Tree::tuned();
    tree.set("proc/self/limits", &limits_file("1048576", "65536"));
    let (code, out) = tree.doctor_default();
    assert_eq!(code, 0, "{out}");
    assert_eq!(status_of(&out, "rlimit memlock"), "info", "{out}");

    tree.set("proc/sys/kernel/osrelease", "5.10.0-28-amd64");
    let (code, out) = tree.doctor_default();
    assert_eq!(code, 1, "{out}");
    assert_eq!(status_of(&out, "rlimit memlock"), "warn", "{out}");
    assert!(out.contains("LimitMEMLOCK=64M"), "{out}");
}

#[test]
fn absent_keys_that_do_not_matter_are_missing_not_warnings() {
    let tree = Tree::tuned();
    for rel in [
        "proc/sys/net/netfilter/nf_conntrack_max",
        "proc/sys/net/core/busy_poll",
        "proc/sys/net/core/busy_read",
        "proc/sys/net/core/rps_sock_flow_entries",
        "proc/sys/net/ipv4/tcp_notsent_lowat",
        "proc/sys/kernel/io_uring_disabled",
        "proc/self/limits",
        "proc/self/status",
    ] {
        tree.remove(rel);
    }
    fs::remove_dir_all(tree.path("sys")).unwrap();
    let (code, out) = tree.doctor_default();
    assert_eq!(code, 0, "{out}");
    assert_eq!(status_of(&out, "net.netfilter.nf_conntrack_max"), "missing");
    assert!(out.contains("nf_conntrack is not loaded"), "{out}");
    assert_eq!(status_of(&out, "kernel.io_uring_disabled"), "info");
    assert_eq!(status_of(&out, "rlimit nofile"), "missing");
    assert_eq!(status_of(&out, "cpufreq governor"), "info");
}

#[test]
fn absent_keys_that_matter_warn() {
    for (rel, setting) in [
        ("proc/sys/net/core/somaxconn", "net.core.somaxconn"),
        (
            "proc/sys/net/ipv4/ip_local_port_range",
            "net.ipv4.ip_local_port_range",
        ),
        ("proc/sys/fs/nr_open", "fs.nr_open"),
    ] {
        let tree = Tree::tuned();
        tree.remove(rel);
        let (code, out) = tree.doctor_default();
        assert_eq!(code, 1, "{out}");
        assert_eq!(status_of(&out, setting), "warn", "{out}");
    }
}

#[test]
fn recommendations_scale_with_the_config() {
    let tree = Tree::tuned();
    let config = tree.config(100_000, 600_000, 0);
    let (code, out) = tree.doctor(&config, true);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sysctl -w net.core.somaxconn=100000"), "{out}");
    assert!(
        out.contains("sysctl -w net.ipv4.tcp_max_syn_backlog=100000"),
        "{out}"
    );
    assert!(
        out.contains("set `net.core.somaxconn = 100000` in /etc/sysctl.d/99-ws-relay-core.conf"),
        "{out}"
    );
    // 2 x 600000 + 4096 descriptors.
    assert!(out.contains(">= 1204096"), "{out}");
    assert!(out.contains("sysctl -w fs.nr_open=1204096"), "{out}");
    assert!(out.contains("LimitNOFILE=1204096"), "{out}");
    assert!(
        out.contains("sysctl -w net.netfilter.nf_conntrack_max=2400000"),
        "{out}"
    );
    assert_eq!(status_of(&out, "rlimit nofile"), "warn");

    // A small config is satisfied by a narrower port range.
    let tree = Tree::tuned();
    tree.set("proc/sys/net/ipv4/ip_local_port_range", "32768\t60999");
    let config = tree.config(1024, 5_000, 0);
    let (code, out) = tree.doctor(&config, true);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn more_workers_than_cpus_warns() {
    let tree = Tree::tuned();
    let config = tree.config(4096, 100_000, 8);
    let (code, out) = tree.doctor(&config, true);
    assert_eq!(code, 1, "{out}");
    assert_eq!(status_of(&out, "shards (server.workers)"), "warn", "{out}");
    assert!(out.contains("set `workers = 0`"), "{out}");
}

#[test]
fn odd_values_are_reported_not_fatal() {
    let tree = Tree::tuned();
    tree.set("proc/sys/net/core/somaxconn", "not-a-number");
    tree.set("proc/sys/net/ipv4/tcp_rmem", "4096");
    tree.set(
        "proc/self/limits",
        "garbage\nMax open files  lots  lots  files\n",
    );
    tree.set("sys/devices/system/cpu/online", "x-y");
    tree.set("proc/sys/kernel/osrelease", "");
    let (code, out) = tree.doctor_default();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unparsable value \"not-a-number\""), "{out}");
    assert_eq!(status_of(&out, "net.ipv4.tcp_rmem"), "warn", "{out}");
    assert_eq!(status_of(&out, "rlimit nofile"), "warn", "{out}");
}

#[test]
fn warnings_exit_zero_without_strict() {
    let tree = Tree::tuned();
    tree.set("proc/sys/net/core/somaxconn", "128");
    let config = tree.config(4096, 100_000, 0);
    let (code, out) = tree.doctor(&config, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--strict exits 1 on warnings"), "{out}");
}

#[test]
fn doctor_runs_on_this_machine() {
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", "/nonexistent/ws-relay-core.toml", "doctor"]);
    let (code, out) = run(cmd);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "proc root: / (live host",
        "none loaded (built-in defaults)",
        "net.core.somaxconn",
        "rlimit nofile",
        "io_uring_setup probe",
        "summary:",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--config",
        "/nonexistent/ws-relay-core.toml",
        "doctor",
        "--strict",
    ]);
    let (code, out) = run(cmd);
    assert!(code == 0 || code == 1, "{out}");
}

#[test]
fn doctor_runs_unprivileged() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let mut cmd = Command::new(BIN);
        cmd.args(["--config", "/nonexistent.toml", "doctor"]);
        let (code, out) = run(cmd);
        assert_eq!(code, 0, "{out}");
        return;
    }
    let Ok(setpriv) = which("setpriv") else {
        eprintln!("skipping: running as root and setpriv is not installed");
        return;
    };
    let mut cmd = Command::new(setpriv);
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["--config", "/nonexistent.toml", "doctor"])
        .current_dir("/");
    let (code, out) = run(cmd);
    if code == 126 || code == 127 {
        eprintln!("skipping: nobody cannot execute {BIN}: {out}");
        return;
    }
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("summary:"), "{out}");
    assert!(!out.contains("Permission denied"), "{out}");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn systemd_unit_verifies() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipping: systemd-analyze is not installed, the unit was not verified");
        return;
    };
    let unit = include_str!("../tuning/ws-relay-core.service");
    assert!(unit.contains(
        "ExecReload=/usr/local/bin/ws-relay-core --config /etc/ws-relay-core/config.toml reload"
    ));
    // verify checks that ExecStart= exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws-relay-core.service");
    fs::write(&path, unit.replace("/usr/local/bin/ws-relay-core", BIN)).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown keys and bad values are only warnings: fail on any line about our file.
    assert!(
        !stderr.contains("ws-relay-core.service"),
        "systemd-analyze verify complained:\n{stderr}"
    );
}
