//! What a command reports, and where it goes. The serde types here ARE the
//! `--json` schema (`loadgen.report.v1`, documented field by field in
//! docs/benchmarks.md; every key is always present, `null` when it does not
//! apply). [`emit`] writes the optional histogram files and SVG plot, then
//! prints JSON or the readable tables.

pub mod hist;
pub mod svg;
pub mod table;

use std::path::PathBuf;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{ErrorCounts, Summary};

/// The schema identifier in every JSON report.
pub const SCHEMA: &str = "loadgen.report.v1";

/// Output errors.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the report: {0}")]
    Json(#[from] serde_json::Error),
}

/// A whole report (one per command invocation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub loadgen_version: String,
    pub command: String,
    pub started_unix_ms: u64,
    pub host: HostInfo,
    /// True when no run saw any error.
    pub ok: bool,
    /// Sum of `runs[].errors.total`.
    pub errors_total: u64,
    pub runs: Vec<RunReport>,
    /// Only for `compare`.
    pub compare: Option<CompareReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostInfo {
    pub cpus: usize,
    /// "io_uring" or "epoll": the driver loadgen's runtimes use.
    pub io_driver: String,
    pub kernel: String,
}

/// One measured run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Unique within the report; names the histogram file and the SVG curve.
    pub name: String,
    /// "ping", "throughput", "rate" or "connect".
    pub mode: String,
    /// Compare only: the round, from 1.
    pub round: Option<u32>,
    pub route: RouteInfo,
    pub params: Params,
    pub messages: Messages,
    pub errors: ErrorCounts,
    /// Round-trip latency (rate: corrected, from the intended send time;
    /// connect: total handshake time).
    pub latency_us: Option<Summary>,
    /// Rate only: latency from the actual send time (uncorrected).
    pub raw_latency_us: Option<Summary>,
    pub throughput: Option<Throughput>,
    pub rate: Option<RateInfo>,
    pub connect: Option<ConnectInfo>,
    /// Path of the percentile-distribution file written by `--hist-dir`.
    pub hist_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteInfo {
    /// "direct" or "relayed".
    pub kind: String,
    pub target: String,
    pub relay: Option<String>,
    /// "first-message" or "header" when relayed.
    pub auth: Option<String>,
    /// Whether the first hop is wss://.
    pub tls: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Params {
    pub connections: usize,
    pub threads: usize,
    pub pin: Vec<usize>,
    pub size: usize,
    pub fragment: Option<usize>,
    pub count: Option<u64>,
    pub warmup: Option<u64>,
    pub duration_s: Option<f64>,
    pub window: Option<u64>,
    pub rate: Option<f64>,
    pub max_in_flight: Option<u64>,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Messages {
    pub sent: u64,
    /// Data messages received, good or bad.
    pub received: u64,
    /// Echoes that passed every check.
    pub verified: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub duration_s: f64,
    /// Verified echoes received within the duration.
    pub messages: u64,
    /// Payload bytes of those echoes (one direction).
    pub bytes: u64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
    pub per_connection: Vec<ConnThroughput>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnThroughput {
    pub conn: u32,
    pub messages: u64,
    pub msg_per_s: f64,
    pub mb_per_s: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RateInfo {
    pub target_per_s: f64,
    pub achieved_per_s: f64,
    /// Messages due within the duration.
    pub scheduled: u64,
    pub sent: u64,
    /// Sends more than 100 µs behind schedule.
    pub late_sends: u64,
    pub max_send_lag_us: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectInfo {
    /// "none", "full" or "resumed".
    pub tls: String,
    pub attempted: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Successful connections per second over the run.
    pub per_s: f64,
    /// TLS sessions the server actually resumed.
    pub resumed: u64,
    pub phases_us: Phases,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phases {
    pub tcp: Option<Summary>,
    pub tls: Option<Summary>,
    pub upgrade: Option<Summary>,
    /// First-message relay auth (upgrade done → status message received).
    pub auth: Option<Summary>,
    pub total: Option<Summary>,
}

/// The headline of `compare`: medians over rounds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareReport {
    pub rounds: u32,
    pub target: String,
    pub relay: String,
    /// The relay binary compare started (null for an external relay).
    pub relay_bin: Option<String>,
    pub auth: String,
    pub forward: Option<String>,
    pub placement: Placement,
    pub size: usize,
    pub ping_count: u64,
    pub throughput_duration_s: Option<f64>,
    pub window: Option<u64>,
    pub latency: CompareLatency,
    pub throughput: Option<CompareThroughput>,
}

/// CPU pinning of the three parts (null: left to the scheduler; a relay
/// may still pin its own shards).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Placement {
    pub client_cpu: Option<usize>,
    pub target_cpu: Option<usize>,
    pub relay_cpu: Option<usize>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stat3 {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareLatency {
    /// Median over rounds of each run's p50, p99 and mean (µs).
    pub direct: Stat3,
    pub relayed: Stat3,
    /// relayed − direct (µs).
    pub overhead_us: Stat3,
    /// (relayed − direct) / direct × 100.
    pub overhead_pct: Stat3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareThroughput {
    pub direct_msg_per_s: f64,
    pub relayed_msg_per_s: f64,
    /// relayed / direct.
    pub ratio: f64,
    pub direct_mb_per_s: f64,
    pub relayed_mb_per_s: f64,
}

/// A run with its histograms (not serialized).
#[derive(Debug)]
pub struct Run {
    pub report: RunReport,
    pub latency: Option<Histogram<u64>>,
    pub raw: Option<Histogram<u64>>,
}

/// Where output goes.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    pub json: bool,
    pub hist_dir: Option<PathBuf>,
    pub svg: Option<PathBuf>,
}

impl Report {
    pub fn new(
        command: &str,
        runs: &[Run],
        compare: Option<CompareReport>,
        started_unix_ms: u64,
    ) -> Self {
        let errors_total = runs.iter().map(|r| r.report.errors.total).sum();
        Self {
            schema: SCHEMA.into(),
            loadgen_version: env!("CARGO_PKG_VERSION").into(),
            command: command.into(),
            started_unix_ms,
            host: HostInfo {
                cpus: crate::rt::online_cpus(),
                io_driver: crate::rt::driver_name().into(),
                kernel: kernel_release(),
            },
            ok: errors_total == 0,
            errors_total,
            runs: runs.iter().map(|r| r.report.clone()).collect(),
            compare,
        }
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Writes histogram files and the SVG (as asked), then prints the report.
/// `svg_modes`: which run modes get a curve (compare plots its ping runs).
pub fn emit(
    report: &mut Report,
    runs: &[Run],
    opts: &OutputOptions,
    svg_title: &str,
    svg_modes: &[&str],
) -> Result<(), OutputError> {
    if let Some(dir) = &opts.hist_dir {
        let written = hist::write_all(dir, runs)?;
        for (r, path) in report.runs.iter_mut().zip(written) {
            r.hist_file = path.map(|p| p.display().to_string());
        }
    }
    if let Some(path) = &opts.svg {
        let curves: Vec<svg::Curve> = runs
            .iter()
            .filter(|r| svg_modes.contains(&r.report.mode.as_str()))
            .filter_map(svg::Curve::from_run)
            .collect();
        let doc = svg::render(svg_title, &curves);
        std::fs::write(path, doc).map_err(|source| OutputError::Write {
            path: path.clone(),
            source,
        })?;
    }
    if opts.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", table::render(report));
    }
    Ok(())
}
