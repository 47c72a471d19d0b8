//! Unit tests of doctor: the table agrees with the shipped files in
//! `tuning/`, recommendations scale with the config, and odd input is
//! reported rather than panicking.

use super::checks::{recommended, sysctl_row};
use super::probe::{self, Limit, Read};
use super::report::{render, Row, Status};
use super::table::{self, Needs, SYSCTLS};

const DROPIN: &str = include_str!("../../tuning/99-ws-relay-core.conf");
const GUIDE: &str = include_str!("../../tuning/GUIDE.md");
const UNIT: &str = include_str!("../../tuning/ws-relay-core.service");
const LIMITS: &str = include_str!("../../tuning/limits.conf");

fn norm(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `key = value` assignments of the drop-in (comments skipped, `-` stripped).
fn dropin_entries() -> Vec<(String, String)> {
    DROPIN
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("drop-in line without '='");
            (k.trim().trim_start_matches('-').to_string(), norm(v))
        })
        .collect()
}

fn defaults() -> Needs {
    Needs::new(4096, 100_000)
}

#[test]
fn every_dropin_key_is_in_the_table_with_the_same_value() {
    let entries = dropin_entries();
    assert!(entries.len() >= 10, "drop-in parsed to {entries:?}");
    for (key, value) in &entries {
        let s =
            table::find(key).unwrap_or_else(|| panic!("{key} is in the drop-in, not the table"));
        assert!(s.in_dropin, "{key}: table says in_dropin = false");
        assert_eq!(&norm(s.value), value, "{key}: drop-in and table disagree");
    }
}

#[test]
fn every_table_row_marked_in_dropin_is_there() {
    let entries = dropin_entries();
    for s in SYSCTLS.iter().filter(|s| s.in_dropin) {
        assert!(
            entries.iter().any(|(k, _)| k == s.key),
            "{} is marked in_dropin but missing from 99-ws-relay-core.conf",
            s.key
        );
    }
}

#[test]
fn the_drop_in_clears_every_sysctl_warning_for_the_default_config() {
    for (key, value) in dropin_entries() {
        let s = table::find(&key).unwrap();
        let row = sysctl_row(s, Read::Value(value.clone()), &defaults());
        assert_eq!(row.status, Status::Ok, "{key} = {value}: {row:?}");
    }
}

#[test]
fn the_guide_states_every_recommended_value() {
    for s in SYSCTLS {
        assert!(GUIDE.contains(s.key), "GUIDE.md never mentions {}", s.key);
        if s.in_dropin {
            let stated = GUIDE
                .lines()
                .any(|l| l.contains(s.key) && norm(l).contains(&norm(s.value)));
            assert!(
                stated,
                "GUIDE.md has no line with {} and {}",
                s.key, s.value
            );
        }
    }
    assert!(GUIDE.contains(table::IO_URING_DISABLED));
}

#[test]
fn unit_and_limits_files_match_the_rlimit_constants() {
    assert!(UNIT.contains(&format!("LimitNOFILE={}", table::NOFILE_SHIPPED)));
    assert!(UNIT.contains("LimitMEMLOCK=64M"));
    assert_eq!(table::MEMLOCK_SHIPPED, 64 << 20);
    assert!(UNIT.contains(
        "ExecReload=/usr/local/bin/ws-relay-core --config /etc/ws-relay-core/config.toml reload"
    ));
    assert!(UNIT.contains("AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    let nofile = format!("nofile {}", table::NOFILE_SHIPPED);
    let memlock = format!("memlock {}", table::MEMLOCK_SHIPPED >> 10);
    let lines: Vec<String> = LIMITS
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(norm)
        .collect();
    for want in [&nofile, &memlock] {
        assert!(
            lines.iter().filter(|l| l.ends_with(want.as_str())).count() >= 2,
            "limits.conf needs soft and hard `{want}`"
        );
    }
    // The shipped nofile covers the default max_connections.
    assert!(table::NOFILE_SHIPPED >= defaults().fds);
    // nr_open in the drop-in allows the shipped LimitNOFILE.
    assert!(
        table::find("fs.nr_open")
            .unwrap()
            .value
            .parse::<u64>()
            .unwrap()
            >= table::NOFILE_SHIPPED
    );
}

#[test]
fn recommendations_scale_with_the_config() {
    let somaxconn = table::find("net.core.somaxconn").unwrap();
    assert_eq!(recommended(somaxconn, &defaults()), "65535");
    let big = Needs::new(200_000, 1_000_000);
    assert_eq!(recommended(somaxconn, &big), "200000");
    assert_eq!(big.fds, 2_000_000 + table::FD_SLACK);
    let nr_open = table::find("fs.nr_open").unwrap();
    assert_eq!(recommended(nr_open, &big), big.fds.to_string());
    let ct = table::find("net.netfilter.nf_conntrack_max").unwrap();
    assert_eq!(recommended(ct, &big), "4000000");
    // 65535 is fine for the default backlog but not for a bigger one.
    let row = sysctl_row(somaxconn, Read::Value("65535".into()), &big);
    assert_eq!(row.status, Status::Warn);
    assert!(
        row.fixes[0] == "sysctl -w net.core.somaxconn=200000",
        "{row:?}"
    );
    assert!(row.fixes[1].contains("this config needs more"), "{row:?}");
    // Saturation instead of overflow.
    let huge = Needs::new(u32::MAX, usize::MAX);
    assert_eq!(huge.fds, u64::MAX);
    assert_eq!(huge.ports, 64512);
}

#[test]
fn port_range_needs_scale_down_with_small_configs() {
    let range = table::find("net.ipv4.ip_local_port_range").unwrap();
    let default_range = Read::Value("32768\t60999".into());
    assert_eq!(
        sysctl_row(range, default_range.clone(), &defaults()).status,
        Status::Warn
    );
    assert_eq!(
        sysctl_row(range, default_range, &Needs::new(128, 5000)).status,
        Status::Ok
    );
    let backwards = sysctl_row(range, Read::Value("60000 1000".into()), &defaults());
    assert_eq!(backwards.status, Status::Warn);
}

#[test]
fn odd_values_are_reported_not_unwrapped() {
    let needs = defaults();
    for (key, raw) in [
        ("net.core.somaxconn", "lots"),
        ("net.core.somaxconn", "-5"),
        ("net.core.somaxconn", ""),
        ("net.ipv4.tcp_rmem", "4096"),
        ("net.ipv4.tcp_rmem", "a b c"),
        ("net.ipv4.ip_local_port_range", "1024"),
        ("net.ipv4.tcp_fastopen", "99999999999999999999999"),
    ] {
        let row = sysctl_row(table::find(key).unwrap(), Read::Value(raw.into()), &needs);
        assert_eq!(row.status, Status::Warn, "{key} = {raw:?}: {row:?}");
        assert!(!row.fixes.is_empty());
    }
    let busy = table::find("net.core.busy_poll").unwrap();
    assert_eq!(
        sysctl_row(busy, Read::Value("x".into()), &needs).status,
        Status::Warn
    );
    assert_eq!(
        sysctl_row(busy, Read::Value("50".into()), &needs).status,
        Status::Info
    );
    assert_eq!(
        sysctl_row(busy, Read::Absent, &needs).status,
        Status::Missing
    );
    let ct = table::find("net.netfilter.nf_conntrack_max").unwrap();
    assert_eq!(sysctl_row(ct, Read::Absent, &needs).status, Status::Missing);
    let unread = sysctl_row(ct, Read::Unreadable("denied".into()), &needs);
    assert_eq!(unread.status, Status::Missing);
    let somax = table::find("net.core.somaxconn").unwrap();
    assert_eq!(sysctl_row(somax, Read::Absent, &needs).status, Status::Warn);
}

#[test]
fn fastopen_fix_keeps_other_bits() {
    let tfo = table::find("net.ipv4.tcp_fastopen").unwrap();
    let row = sysctl_row(tfo, Read::Value("1025".into()), &defaults());
    assert_eq!(row.status, Status::Warn);
    assert_eq!(row.fixes[0], "sysctl -w net.ipv4.tcp_fastopen=1027");
    let ok = sysctl_row(tfo, Read::Value("1027".into()), &defaults());
    assert_eq!(ok.status, Status::Ok);
}

#[test]
fn triple_values_are_quoted_in_the_fix() {
    let wmem = table::find("net.ipv4.tcp_wmem").unwrap();
    let row = sysctl_row(
        wmem,
        Read::Value("4096\t16384\t4194304".into()),
        &defaults(),
    );
    assert_eq!(row.status, Status::Warn);
    assert_eq!(row.current, "4096 16384 4194304");
    assert_eq!(
        row.fixes[0],
        "sysctl -w net.ipv4.tcp_wmem=\"4096 16384 16777216\""
    );
}

#[test]
fn parsers_handle_real_and_odd_input() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max open files            20000                40000                files\n\
                  Max locked memory         unlimited            unlimited            bytes\n\
                  Max processes             junk                 1                    processes\n";
    assert_eq!(
        probe::limit_line(limits, "Max open files"),
        Limit::Value {
            soft: 20000,
            hard: 40000
        }
    );
    assert_eq!(
        probe::limit_line(limits, "Max locked memory"),
        Limit::Value {
            soft: u64::MAX,
            hard: u64::MAX
        }
    );
    assert!(matches!(
        probe::limit_line(limits, "Max processes"),
        Limit::Unparsable(_)
    ));
    assert_eq!(probe::limit_line("", "Max open files"), Limit::Absent);

    assert_eq!(probe::cpulist_count("0-1"), Some(2));
    assert_eq!(probe::cpulist_count("0-3,8,10-11\n"), Some(7));
    assert_eq!(probe::cpulist_count(""), Some(0));
    assert_eq!(probe::cpulist_count("3-1"), None);
    assert_eq!(probe::cpulist_count("x"), None);

    assert_eq!(probe::kernel_version("6.18.44-fc-v595"), Some((6, 18)));
    assert_eq!(probe::kernel_version("5.4.0-150-generic"), Some((5, 4)));
    assert_eq!(probe::kernel_version("weird"), None);

    assert_eq!(probe::seccomp_mode("Name:\tx\nSeccomp:\t2\n"), Some(2));
    assert_eq!(probe::seccomp_mode("Name:\tx\n"), None);

    assert!(probe::mask_nonzero("00000000,00000003"));
    assert!(!probe::mask_nonzero("00000000,00000000"));
}

#[test]
fn strict_exit_code_follows_warnings_only() {
    let rows = vec![
        Row::new("a", Status::Ok),
        Row::new("b", Status::Info).note("n"),
        Row::new("c", Status::Missing).note("m"),
    ];
    let mut out = Vec::new();
    assert_eq!(render(&mut out, &[], &rows, &[], true).unwrap(), 0);
    let mut rows = rows;
    rows.push(Row::new("d", Status::Warn).fix("do it"));
    assert_eq!(render(&mut out, &[], &rows, &[], false).unwrap(), 0);
    assert_eq!(render(&mut Vec::new(), &[], &rows, &[], true).unwrap(), 1);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("    do it"), "{text}");
}

#[test]
fn run_on_an_empty_tree_reports_without_panicking() {
    let dir = std::env::temp_dir().join(format!("doctor-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = super::DoctorOptions {
        proc_root: dir.clone(),
        strict: true,
        backlog: 4096,
        max_connections: 100_000,
        workers: 0,
        config_path: None,
    };
    let mut out = Vec::new();
    let code = super::run(&opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    // Keys that always exist on Linux warn when absent; the rest are missing.
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("net.core.somaxconn"), "{text}");
    assert!(
        text.contains("sysctl -w net.core.somaxconn=65535"),
        "{text}"
    );
    assert!(text.contains("io_uring_setup probe"), "{text}");
    assert!(!text.contains("net.core.busy_poll [warn]"), "{text}");
}
