//! `ping`, `throughput` and `rate`: one measured run each, and
//! [`measure`], which turns an engine result into a reported run (shared
//! with `compare`).

use std::process::ExitCode;
use std::sync::Arc;

use super::{finish, output_options, secs, setup_from, CmdError};
use crate::cli::{MessageArgs, PingArgs, RateArgs, ThroughputArgs};
use crate::client::ClientSetup;
use crate::clock::unix_ms;
use crate::engine::{run_load, LoadKind, LoadResult, LoadSpec};
use crate::output::{
    ConnThroughput, Messages, Params, RateInfo, RouteInfo, Run, RunReport, Throughput,
};
use crate::rt::ThreadPlan;
use crate::stats::Summary;

pub fn ping(a: &PingArgs) -> Result<ExitCode, CmdError> {
    let kind = LoadKind::Ping {
        count: a.count,
        warmup: a.warmup,
    };
    single("ping", kind, &a.route, &a.msg, a.name.as_deref(), &a.out)
}

pub fn throughput(a: &ThroughputArgs) -> Result<ExitCode, CmdError> {
    let kind = LoadKind::Throughput {
        duration: secs(a.duration, "--duration")?,
        window: a.window,
    };
    single(
        "throughput",
        kind,
        &a.route,
        &a.msg,
        a.name.as_deref(),
        &a.out,
    )
}

pub fn rate(a: &RateArgs) -> Result<ExitCode, CmdError> {
    if !(a.rate.is_finite() && a.rate > 0.0) {
        return Err(CmdError::Usage(format!(
            "--rate {} must be positive",
            a.rate
        )));
    }
    let kind = LoadKind::Rate {
        rate: a.rate,
        duration: secs(a.duration, "--duration")?,
        max_in_flight: a.max_in_flight,
    };
    single("rate", kind, &a.route, &a.msg, a.name.as_deref(), &a.out)
}

fn single(
    command: &str,
    kind: LoadKind,
    route: &crate::cli::RouteArgs,
    msg: &MessageArgs,
    name: Option<&str>,
    out: &crate::cli::OutputArgs,
) -> Result<ExitCode, CmdError> {
    let started = unix_ms();
    let setup = setup_from(route, msg.fragment.unwrap_or(0) as usize)?;
    let spec = spec_from(kind, msg);
    let name = name.unwrap_or(setup.route.kind()).to_string();
    let run = measure(name, None, &setup, &spec)?;
    finish(
        command,
        &[run],
        None,
        &output_options(out),
        started,
        &["ping", "throughput", "rate"],
    )
}

/// The load spec for message options.
pub fn spec_from(kind: LoadKind, msg: &MessageArgs) -> LoadSpec {
    let connections = msg.connections as usize;
    LoadSpec {
        kind,
        size: msg.size as usize,
        connections,
        plan: ThreadPlan::resolve(msg.threads.threads, connections, msg.threads.pin.clone()),
        timeout: std::time::Duration::from_millis(msg.timeout_ms.max(1)),
    }
}

/// Runs a load and describes it as a report run.
pub fn measure(
    name: String,
    round: Option<u32>,
    setup: &Arc<ClientSetup>,
    spec: &LoadSpec,
) -> Result<Run, CmdError> {
    let res = run_load(spec, Arc::clone(setup))?;
    Ok(describe(name, round, setup, spec, res))
}

/// Route description for reports.
pub fn route_info(setup: &ClientSetup) -> RouteInfo {
    let route = &setup.route;
    RouteInfo {
        kind: route.kind().into(),
        target: route.target().raw.clone(),
        relay: match route {
            crate::client::Route::Relay { relay, .. } => Some(relay.raw.clone()),
            crate::client::Route::Direct { .. } => None,
        },
        auth: route.auth().map(|a| a.as_str().into()),
        tls: route.first_hop().secure,
    }
}

fn describe(
    name: String,
    round: Option<u32>,
    setup: &ClientSetup,
    spec: &LoadSpec,
    res: LoadResult,
) -> Run {
    let mut params = Params {
        connections: spec.connections,
        threads: spec.plan.threads,
        pin: spec.plan.pin.clone(),
        size: spec.size,
        fragment: (setup.fragment > 0).then_some(setup.fragment),
        timeout_ms: spec.timeout.as_millis() as u64,
        ..Params::default()
    };
    let secs = res.measured_ns as f64 / 1e9;
    let mut throughput = None;
    let mut rate = None;
    match spec.kind {
        LoadKind::Ping { count, warmup } => {
            params.count = Some(count);
            params.warmup = Some(warmup);
        }
        LoadKind::Throughput { duration, window } => {
            params.duration_s = Some(duration.as_secs_f64());
            params.window = Some(window);
            throughput = Some(throughput_of(&res, spec.size, secs));
        }
        LoadKind::Rate {
            rate: r,
            duration,
            max_in_flight,
        } => {
            params.duration_s = Some(duration.as_secs_f64());
            params.rate = Some(r);
            params.max_in_flight = Some(max_in_flight);
            let (mut lag, mut late, mut scheduled) = (0u64, 0u64, 0u64);
            for o in &res.outcomes {
                lag = lag.max(o.max_lag_ns);
                late += o.late_sends;
                scheduled += o.scheduled;
            }
            rate = Some(RateInfo {
                target_per_s: r,
                achieved_per_s: res.in_window() as f64 / secs,
                scheduled,
                sent: res.sent(),
                late_sends: late,
                max_send_lag_us: lag as f64 / 1000.0,
            });
            throughput = Some(throughput_of(&res, spec.size, secs));
        }
    }
    let report = RunReport {
        name,
        mode: spec.kind.mode().into(),
        round,
        route: route_info(setup),
        params,
        messages: Messages {
            sent: res.sent(),
            received: res.received(),
            verified: res.verified(),
        },
        errors: res.errors.clone(),
        latency_us: Summary::from_hist(&res.latency),
        raw_latency_us: res.raw.as_ref().and_then(Summary::from_hist),
        throughput,
        rate,
        connect: None,
        hist_file: None,
    };
    Run {
        report,
        latency: Some(res.latency),
        raw: res.raw,
    }
}

fn throughput_of(res: &LoadResult, size: usize, secs: f64) -> Throughput {
    let messages = res.in_window();
    let bytes = messages * size as u64;
    Throughput {
        duration_s: secs,
        messages,
        bytes,
        msg_per_s: messages as f64 / secs,
        mb_per_s: bytes as f64 / secs / 1e6,
        per_connection: res
            .outcomes
            .iter()
            .map(|o| ConnThroughput {
                conn: o.conn_id,
                messages: o.in_window,
                msg_per_s: o.in_window as f64 / secs,
                mb_per_s: (o.in_window * size as u64) as f64 / secs / 1e6,
            })
            .collect(),
    }
}
