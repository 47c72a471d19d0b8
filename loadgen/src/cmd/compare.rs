//! `compare`, the headline: direct and relayed ping (and throughput) runs,
//! alternating which goes first, over several rounds, summarised as the
//! original README's table with medians over rounds plus p99. With no
//! arguments it starts its own echo server (in-process, one thread) and its
//! own relay (the ws-relay-core binary next to loadgen, temp config).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::load::measure;
use super::relay_proc::{find_relay_bin, RelayOptions, RelayProcess};
use super::{finish, make_setup, output_options, secs, trust, CmdError};
use crate::cli::{CompareArgs, Forward};
use crate::client::Route;
use crate::clock::unix_ms;
use crate::engine::{LoadKind, LoadSpec};
use crate::output::{CompareLatency, CompareReport, CompareThroughput, Placement, Run, Stat3};
use crate::rt::ThreadPlan;
use crate::server::echo::{self, EchoOptions};
use crate::stats::median;
use crate::ws::WsUrl;

pub fn compare(a: &CompareArgs) -> Result<ExitCode, CmdError> {
    let started = unix_ms();
    if a.target.is_some() && a.delay_ms > 0.0 {
        return Err(CmdError::Usage(
            "--delay-ms applies to the echo server compare starts, not to --target".into(),
        ));
    }

    // The target: given, or our own echo server on a free port.
    let target = match &a.target {
        Some(t) => WsUrl::parse(t)?,
        None => {
            let plan = ThreadPlan {
                threads: 1,
                pin: a.target_cpu.or(a.cpu).into_iter().collect(),
            };
            let opts = EchoOptions {
                delay: secs(a.delay_ms / 1000.0, "--delay-ms")?,
                ..EchoOptions::default()
            };
            let listen: SocketAddr = ([127, 0, 0, 1], 0).into();
            // Its threads live until the process exits.
            let running = echo::start(listen, &plan, None, opts, None)?;
            WsUrl::parse(&format!("ws://{}/", running.addr))?
        }
    };

    // The relay: given, or started from the binary next to us.
    let relay_proc = match &a.relay {
        Some(_) => None,
        None => {
            let bin = find_relay_bin(a.relay_bin.as_deref())?;
            eprintln!("compare: starting relay {}", bin.display());
            let mut o = RelayOptions::single_user(bin, &a.token, a.relay_workers);
            o.forward = a.forward.map(|f| match f {
                Forward::Copy => "copy",
                Forward::Splice => "splice",
            });
            o.cpu = a.relay_cpu.or(a.cpu);
            Some(RelayProcess::start(&o)?)
        }
    };
    let relay_url = match (&a.relay, &relay_proc) {
        (Some(r), _) => WsUrl::parse(r)?,
        (None, Some(p)) => WsUrl::parse(&p.url)?,
        (None, None) => unreachable!("a relay was started above"),
    };

    let trust = trust(a.insecure, a.ca.as_deref());
    let connect_timeout = Duration::from_secs(10);
    let direct = Arc::new(make_setup(
        Route::Direct {
            target: target.clone(),
        },
        trust.as_ref(),
        true,
        connect_timeout,
        0,
    )?);
    let relayed = Arc::new(make_setup(
        Route::Relay {
            relay: relay_url.clone(),
            target: target.clone(),
            token: a.token.clone(),
            auth: a.auth,
        },
        trust.as_ref(),
        true,
        connect_timeout,
        0,
    )?);

    let plan = ThreadPlan {
        threads: 1,
        pin: a.client_cpu.or(a.cpu).into_iter().collect(),
    };
    let spec = |kind| LoadSpec {
        kind,
        size: a.size as usize,
        connections: 1,
        plan: plan.clone(),
        timeout: Duration::from_millis(a.timeout_ms.max(1)),
    };
    let ping = spec(LoadKind::Ping {
        count: a.count,
        warmup: a.warmup,
    });
    let tp_duration = secs(a.duration, "--duration")?;
    let tp = (!tp_duration.is_zero()).then(|| {
        spec(LoadKind::Throughput {
            duration: tp_duration,
            window: a.window,
        })
    });

    let mut runs: Vec<Run> = Vec::new();
    let with_log = |e: CmdError| match &relay_proc {
        Some(p) => CmdError::Usage(format!("{e}\nrelay log (last lines):\n{}", p.log_tail())),
        None => e,
    };
    for round in 1..=a.rounds {
        let order = if round % 2 == 1 {
            [&direct, &relayed]
        } else {
            [&relayed, &direct]
        };
        for s in order {
            eprintln!(
                "compare: round {round}/{}: ping {}",
                a.rounds,
                s.route.kind()
            );
            let name = format!("ping-{}-r{round}", s.route.kind());
            runs.push(measure(name, Some(round), s, &ping).map_err(with_log)?);
        }
        if let Some(tp) = &tp {
            for s in order {
                eprintln!(
                    "compare: round {round}/{}: throughput {}",
                    a.rounds,
                    s.route.kind()
                );
                let name = format!("throughput-{}-r{round}", s.route.kind());
                runs.push(measure(name, Some(round), s, tp).map_err(with_log)?);
            }
        }
    }

    let summary = CompareReport {
        rounds: a.rounds,
        target: target.raw.clone(),
        relay: relay_url.raw.clone(),
        relay_bin: relay_proc.as_ref().map(|p| p.bin.display().to_string()),
        auth: a.auth.as_str().into(),
        forward: a.forward.map(|f| format!("{f:?}").to_lowercase()),
        placement: Placement {
            client_cpu: a.client_cpu.or(a.cpu),
            target_cpu: a
                .target
                .is_none()
                .then_some(a.target_cpu.or(a.cpu))
                .flatten(),
            relay_cpu: a.relay.is_none().then_some(a.relay_cpu.or(a.cpu)).flatten(),
        },
        size: a.size as usize,
        ping_count: a.count,
        throughput_duration_s: tp.as_ref().map(|_| tp_duration.as_secs_f64()),
        window: tp.as_ref().map(|_| a.window),
        latency: latency_summary(&runs),
        throughput: tp.as_ref().map(|_| throughput_summary(&runs)),
    };
    let code = finish(
        "compare",
        &runs,
        Some(summary),
        &output_options(&a.out),
        started,
        &["ping"],
    );
    drop(relay_proc);
    code
}

fn stat3(runs: &[Run], kind: &str) -> Stat3 {
    let ls: Vec<_> = runs
        .iter()
        .filter(|r| r.report.mode == "ping" && r.report.route.kind == kind)
        .filter_map(|r| r.report.latency_us)
        .collect();
    Stat3 {
        p50: median(&ls.iter().map(|l| l.p50).collect::<Vec<_>>()),
        p99: median(&ls.iter().map(|l| l.p99).collect::<Vec<_>>()),
        mean: median(&ls.iter().map(|l| l.mean).collect::<Vec<_>>()),
    }
}

/// Medians over rounds, and the relay's overhead on them.
pub fn latency_summary(runs: &[Run]) -> CompareLatency {
    let d = stat3(runs, "direct");
    let r = stat3(runs, "relayed");
    let pct = |dv: f64, rv: f64| {
        if dv > 0.0 {
            (rv - dv) / dv * 100.0
        } else {
            0.0
        }
    };
    CompareLatency {
        direct: d,
        relayed: r,
        overhead_us: Stat3 {
            p50: r.p50 - d.p50,
            p99: r.p99 - d.p99,
            mean: r.mean - d.mean,
        },
        overhead_pct: Stat3 {
            p50: pct(d.p50, r.p50),
            p99: pct(d.p99, r.p99),
            mean: pct(d.mean, r.mean),
        },
    }
}

/// Median msg/s and MB/s over rounds, and relayed / direct.
pub fn throughput_summary(runs: &[Run]) -> CompareThroughput {
    let pick = |kind: &str, f: fn(&crate::output::Throughput) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter(|r| r.report.mode == "throughput" && r.report.route.kind == kind)
            .filter_map(|r| r.report.throughput.as_ref().map(f))
            .collect();
        median(&v)
    };
    let d = pick("direct", |t| t.msg_per_s);
    let r = pick("relayed", |t| t.msg_per_s);
    CompareThroughput {
        direct_msg_per_s: d,
        relayed_msg_per_s: r,
        ratio: if d > 0.0 { r / d } else { 0.0 },
        direct_mb_per_s: pick("direct", |t| t.mb_per_s),
        relayed_mb_per_s: pick("relayed", |t| t.mb_per_s),
    }
}
