//! Runs one measured load (ping, throughput or rate) over N connections on
//! M pinned threads: every connection is established first, all start on
//! one signal, and the per-thread histograms and per-connection outcomes
//! are merged into a [`LoadResult`].

pub mod session;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::{self, ClientSetup};
use crate::clock::{dur_ns, now_ns};
use crate::rt::{self, RtError, Start, StartLine, ThreadPlan};
use crate::stats::ErrorCounts;
pub use session::{Outcome, Policy, Recorder};

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub enum LoadKind {
    /// Closed loop, one message in flight: `warmup` unrecorded round trips,
    /// then `count` recorded ones, per connection.
    Ping { count: u64, warmup: u64 },
    /// Pipelined, up to `window` in flight per connection, for `duration`.
    Throughput { duration: Duration, window: u64 },
    /// Open loop at `rate` messages/s in total, for `duration`.
    Rate {
        rate: f64,
        duration: Duration,
        max_in_flight: u64,
    },
}

impl LoadKind {
    pub fn mode(&self) -> &'static str {
        match self {
            Self::Ping { .. } => "ping",
            Self::Throughput { .. } => "throughput",
            Self::Rate { .. } => "rate",
        }
    }
}

/// A complete load description.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub kind: LoadKind,
    pub size: usize,
    pub connections: usize,
    pub plan: ThreadPlan,
    /// How long to wait for an echo before moving on (and for the final drain).
    pub timeout: Duration,
}

/// Engine failures (measurement errors are counted, not raised).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Rt(#[from] RtError),
    #[error("{0}")]
    Connect(String),
}

/// Merged result of a load.
#[derive(Debug)]
pub struct LoadResult {
    pub latency: Histogram<u64>,
    pub raw: Option<Histogram<u64>>,
    pub outcomes: Vec<Outcome>,
    pub errors: ErrorCounts,
    /// The period rates are computed over, in ns (the duration, or the
    /// wall time of a ping run).
    pub measured_ns: u64,
}

impl LoadResult {
    pub fn sent(&self) -> u64 {
        self.outcomes.iter().map(|o| o.sent).sum()
    }
    pub fn received(&self) -> u64 {
        self.outcomes.iter().map(|o| o.received).sum()
    }
    pub fn verified(&self) -> u64 {
        self.outcomes.iter().map(|o| o.verified).sum()
    }
    pub fn in_window(&self) -> u64 {
        self.outcomes.iter().map(|o| o.in_window).sum()
    }
}

struct ThreadOut {
    outcomes: Vec<Outcome>,
    /// Connections that could not be established, in words.
    failures: Vec<String>,
    recorder: Recorder,
    last_end_ns: u64,
    start_ns: u64,
}

/// Runs the load; blocks the calling thread until every connection is done.
pub fn run_load(spec: &LoadSpec, setup: Arc<ClientSetup>) -> Result<LoadResult, EngineError> {
    let line = Arc::new(StartLine::default());
    let threads = spec.plan.threads.max(1);
    let connect_limit = setup.connect_timeout + Duration::from_secs(5);
    let handles = {
        let line = Arc::clone(&line);
        let spec = spec.clone();
        let setup = Arc::clone(&setup);
        rt::spawn_threads(&spec.plan.clone(), "loadgen", move |t| {
            thread_main(
                t,
                threads,
                spec.clone(),
                Arc::clone(&setup),
                Arc::clone(&line),
            )
        })?
    };
    let started = line.coordinate(spec.connections, connect_limit);
    let mut outs = Vec::with_capacity(handles.len());
    for h in handles {
        outs.push(rt::join(h)?);
    }

    let paced = matches!(spec.kind, LoadKind::Rate { .. });
    let mut latency = crate::stats::new_hist();
    let mut raw = paced.then(crate::stats::new_hist);
    let mut outcomes = Vec::new();
    let mut errors = ErrorCounts::default();
    let mut failures = Vec::new();
    let (mut first_start, mut last_end) = (u64::MAX, 0u64);
    for out in outs {
        let _ = latency.add(&out.recorder.latency);
        if let (Some(r), Some(o)) = (raw.as_mut(), out.recorder.raw.as_ref()) {
            let _ = r.add(o);
        }
        first_start = first_start.min(out.start_ns);
        last_end = last_end.max(out.last_end_ns);
        for o in out.outcomes {
            errors.merge(&o.errors);
            outcomes.push(o);
        }
        failures.extend(out.failures);
    }
    if !started || !failures.is_empty() {
        let first = failures
            .into_iter()
            .next()
            .unwrap_or_else(|| "connections were not ready in time".to_string());
        return Err(EngineError::Connect(first));
    }
    outcomes.sort_by_key(|o| o.conn_id);
    let measured_ns = match spec.kind {
        LoadKind::Ping { .. } => last_end.saturating_sub(first_start).max(1),
        LoadKind::Throughput { duration, .. } | LoadKind::Rate { duration, .. } => dur_ns(duration),
    };
    Ok(LoadResult {
        latency,
        raw,
        outcomes,
        errors,
        measured_ns,
    })
}

/// One client thread: establish this thread's connections (concurrently),
/// report ready once, wait for the common start, then run every session.
async fn thread_main(
    t: usize,
    threads: usize,
    spec: LoadSpec,
    setup: Arc<ClientSetup>,
    line: Arc<StartLine>,
) -> ThreadOut {
    let paced = matches!(spec.kind, LoadKind::Rate { .. });
    let recorder = Rc::new(RefCell::new(Recorder::new(paced)));
    let ids: Vec<u32> = (t..spec.connections)
        .step_by(threads)
        .map(|i| i as u32)
        .collect();
    let connecting: Vec<_> = ids
        .iter()
        .map(|_| {
            let setup = Arc::clone(&setup);
            monoio::spawn(async move { client::connect(&setup, false).await })
        })
        .collect();
    let mut conns = Vec::with_capacity(ids.len());
    let mut failures = Vec::new();
    for (&id, h) in ids.iter().zip(connecting) {
        match h.await {
            Ok(c) => conns.push((id, c)),
            Err(e) => failures.push(format!("connection {id}: {e}")),
        }
    }
    let mut out = ThreadOut {
        outcomes: Vec::new(),
        failures,
        recorder: Recorder::new(false),
        last_end_ns: now_ns(),
        start_ns: u64::MAX,
    };
    if !out.failures.is_empty() {
        line.fail();
    } else {
        line.ready(conns.len());
    }
    let start = match line
        .wait(setup.connect_timeout + Duration::from_secs(10))
        .await
    {
        Start::At(t) => t,
        Start::Aborted => return out,
    };
    let now = now_ns();
    if start > now {
        monoio::time::sleep(Duration::from_nanos(start - now)).await;
    }
    let sessions: Vec<_> = conns
        .into_iter()
        .map(|(id, conn)| {
            let policy = policy(&spec, id, start);
            let recorder = Rc::clone(&recorder);
            let (size, timeout) = (spec.size, spec.timeout);
            monoio::spawn(
                async move { session::run(conn, id, size, policy, timeout, &recorder).await },
            )
        })
        .collect();
    for h in sessions {
        out.outcomes.push(h.await);
    }
    out.last_end_ns = now_ns();
    out.start_ns = start;
    out.recorder = match Rc::try_unwrap(recorder) {
        Ok(r) => r.into_inner(),
        Err(_) => unreachable!("all sessions have finished"),
    };
    out
}

/// The writer policy of connection `conn_id` for a run starting at `start`.
fn policy(spec: &LoadSpec, conn_id: u32, start: u64) -> Policy {
    match spec.kind {
        LoadKind::Ping { count, warmup } => Policy::Closed {
            window: 1,
            total: Some(count + warmup),
            until_ns: None,
            warmup,
        },
        LoadKind::Throughput { duration, window } => Policy::Closed {
            window: window.max(1),
            total: None,
            until_ns: Some(start + dur_ns(duration)),
            warmup: 0,
        },
        LoadKind::Rate {
            rate,
            duration,
            max_in_flight,
        } => {
            // Connections are staggered by one gap; each sends every
            // `connections` gaps, so together they keep the total rate.
            let gap = 1e9 / rate.max(1e-9);
            Policy::Paced {
                first_ns: start + (conn_id as f64 * gap) as u64,
                period_ns: gap * spec.connections as f64,
                until_ns: start + dur_ns(duration),
                max_in_flight: max_in_flight.max(1),
            }
        }
    }
}
