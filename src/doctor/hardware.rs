//! CPU and NIC rows: shard count vs online CPUs, CPU isolation, the cpufreq
//! governor, guest halt-polling, and NIC queues / RPS / XPS against shards.
//!
//! Owns: reading `sys/devices/system/cpu`, `sys/module/haltpoll` and
//! `sys/class/net` under the proc root and judging them. Most of these are
//! trade-offs the operator decides, so they are `info`; only an
//! oversubscribed shard count and a non-`performance` governor warn.

use super::probe::{self, Read, Source};
use super::report::{Row, Status};
use super::table;

const CPU: &str = "sys/devices/system/cpu";

const OVERSUBSCRIBED: &str =
    "more pinned shards than CPUs: shards share cores and every wake-up crosses them";
const ISOLATION: &str = "optional: isolcpus= and nohz_full= keep the scheduler tick and other \
     tasks off the shards' cores; keep one housekeeping CPU for IRQs of other devices and kernel \
     threads (GUIDE.md \"CPU isolation\")";
const HALT_POLLING: &str = "a halted idle vCPU needs the host to wake it (tens of µs); on this \
     project's 2-vCPU VM idle wake-ups dominate loopback p99 and each cross-core hop costs \
     ≈40 µs. Polling before halting keeps wake-ups cheap and costs host CPU";
const NO_HALT_POLLING: &str = "no guest halt-polling: on bare metal limit deep C-states instead \
     (GUIDE.md \"CPU governor and idle states\"); in a VM load cpuidle-haltpoll";
const NIC: &str = "spread the NIC's IRQs over the shards' CPUs (one queue per shard), or steer \
     with RPS/RFS when the NIC has fewer queues; tune coalescing for latency \
     (GUIDE.md \"IRQs, RPS/XPS and coalescing\")";

/// Online CPUs under the root (`…/cpu/online`), or this process's view when
/// the root is live and the file is unreadable.
pub fn online_cpus(src: &Source) -> Option<usize> {
    match src.read(&format!("{CPU}/online")) {
        Read::Value(v) => probe::cpulist_count(&v).filter(|&n| n > 0),
        _ if src.live => std::thread::available_parallelism().ok().map(|n| n.get()),
        _ => None,
    }
}

/// The number of shards `server.workers` gives on this host.
pub fn shards(workers: usize, online: Option<usize>) -> Option<usize> {
    if workers > 0 {
        Some(workers)
    } else {
        online
    }
}

fn info(row: Row) -> Row {
    row.status(Status::Info)
}

pub fn cpu_rows(src: &Source, workers: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let online = online_cpus(src);

    let row = Row::new("shards (server.workers)", Status::Ok);
    rows.push(match online {
        Some(n) if workers > n => row
            .status(Status::Warn)
            .current(format!("{workers} on {n} CPUs"))
            .recommended(format!("<= {n} (0 = one per CPU)"))
            .note(OVERSUBSCRIBED)
            .fix(format!(
                "set `workers = 0` (or <= {n}) under [server] in the config"
            )),
        Some(n) => row
            .current(format!(
                "{} on {n} CPUs",
                if workers == 0 { n } else { workers }
            ))
            .recommended(format!("<= {n} (0 = one per CPU)")),
        None => info(
            row.current(format!("workers = {workers}"))
                .recommended("<= online CPUs")
                .note("cannot read the online CPU list"),
        ),
    });

    let isolated = match src.read(&format!("{CPU}/isolated")) {
        Read::Value(v) if !v.is_empty() => Some(v),
        _ => None,
    };
    let nohz = match src.read(&format!("{CPU}/nohz_full")) {
        Read::Value(v) if !v.is_empty() && v != "(null)" => Some(v),
        _ => None,
    };
    let current = match (&isolated, &nohz) {
        (None, None) => "none".to_string(),
        (i, n) => format!(
            "isolcpus {}; nohz_full {}",
            i.as_deref().unwrap_or("-"),
            n.as_deref().unwrap_or("-")
        ),
    };
    rows.push(info(
        Row::new("cpu isolation", Status::Info)
            .current(current)
            .recommended("shard CPUs, dedicated hosts")
            .note(ISOLATION),
    ));

    let mut governors: Vec<(String, String)> = Vec::new();
    for name in src.list(CPU) {
        let is_cpu = name
            .strip_prefix("cpu")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_cpu {
            continue;
        }
        if let Read::Value(g) = src.read(&format!("{CPU}/{name}/cpufreq/scaling_governor")) {
            governors.push((name, g));
        }
    }
    let row = Row::new("cpufreq governor", Status::Ok).recommended(table::GOVERNOR);
    rows.push(if governors.is_empty() {
        info(row.current("absent").note(
            "no cpufreq: typical in VMs, where the host sets the frequency; nothing to do here",
        ))
    } else {
        let mut kinds: Vec<&str> = governors.iter().map(|(_, g)| g.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let current = kinds.join(",");
        if kinds == [table::GOVERNOR] {
            row.current(current)
        } else {
            let slow: Vec<&str> = governors
                .iter()
                .filter(|(_, g)| g != table::GOVERNOR)
                .map(|(c, _)| c.as_str())
                .collect();
            row.status(Status::Warn)
                .current(current)
                .note(format!(
                    "{} not on `performance`: ramping the clock up after idle adds \
                         latency to the first packets of a burst",
                    slow.join(",")
                ))
                .fix("cpupower frequency-set -g performance")
                .fix(format!(
                    "or: echo performance | tee /{CPU}/cpu*/cpufreq/scaling_governor"
                ))
        }
    });

    let driver = src.read(&format!("{CPU}/cpuidle/current_driver"));
    let poll_ns = src.read("sys/module/haltpoll/parameters/guest_halt_poll_ns");
    let row = Row::new("guest halt-polling", Status::Info).recommended(format!(
        "{} ns (latency) or 0 (shared)",
        table::HALT_POLL_NS
    ));
    rows.push(match (&driver, &poll_ns) {
        (Read::Value(d), Read::Value(ns)) if d == "haltpoll" => {
            let low = ns.parse::<u64>().map_or(true, |v| v < table::HALT_POLL_NS);
            let mut row = info(
                row.current(format!("{ns} ns (cpuidle-haltpoll)"))
                    .note(HALT_POLLING),
            );
            if low {
                row = row
                    .fix(format!(
                        "echo {} > /sys/module/haltpoll/parameters/guest_halt_poll_ns",
                        table::HALT_POLL_NS
                    ))
                    .fix(format!(
                        "persist: kernel command line haltpoll.guest_halt_poll_ns={}",
                        table::HALT_POLL_NS
                    ));
            }
            row
        }
        (Read::Value(d), _) => info(
            row.current(format!("cpuidle driver {d}"))
                .note(NO_HALT_POLLING),
        ),
        _ => info(row.current("absent").note("no cpuidle driver visible")),
    });
    rows
}

/// Hex mask with the low `n` bits set, in the kernel's comma-grouped form.
fn cpu_mask(n: usize) -> String {
    let n = n.min(64);
    let mask: u64 = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    format!("{mask:x}")
}

pub fn nic_rows(src: &Source, shards: Option<usize>) -> Vec<Row> {
    let mut rows = Vec::new();
    for nic in src.list("sys/class/net") {
        // Only devices backed by hardware (or virtio): skip lo, bridges, veth, ifb.
        if nic == "lo"
            || !src
                .root()
                .join(format!("sys/class/net/{nic}/device"))
                .exists()
        {
            continue;
        }
        let queues = src.list(&format!("sys/class/net/{nic}/queues"));
        let rx: Vec<&String> = queues.iter().filter(|q| q.starts_with("rx-")).collect();
        let tx: Vec<&String> = queues.iter().filter(|q| q.starts_with("tx-")).collect();
        let any_mask = |qs: &[&String], file: &str| {
            qs.iter().any(|q| {
                matches!(
                    src.read(&format!("sys/class/net/{nic}/queues/{q}/{file}")),
                    Read::Value(m) if probe::mask_nonzero(&m)
                )
            })
        };
        let rps = any_mask(&rx, "rps_cpus");
        let xps = any_mask(&tx, "xps_cpus");
        let onoff = |b: bool| if b { "on" } else { "off" };
        let mut row = info(
            Row::new(format!("nic {nic}"), Status::Info)
                .current(format!(
                    "{} rx/{} tx queues, RPS {}, XPS {}",
                    rx.len(),
                    tx.len(),
                    onoff(rps),
                    onoff(xps)
                ))
                .recommended(match shards {
                    Some(s) => format!("queues >= {s} shards, or RPS"),
                    None => "queues >= shards, or RPS".into(),
                })
                .note(NIC),
        );
        if let Some(s) = shards.filter(|&s| rx.len() < s && !rps && s > 1) {
            row = row
                .fix(format!(
                    "ethtool -L {nic} combined {s}   (if the NIC has more queues)"
                ))
                .fix(format!(
                    "or RPS: for q in /sys/class/net/{nic}/queues/rx-*; \
                     do echo {} > $q/rps_cpus; done",
                    cpu_mask(s)
                ));
        }
        rows.push(row);
        if rows.len() >= 4 {
            break;
        }
    }
    rows
}
