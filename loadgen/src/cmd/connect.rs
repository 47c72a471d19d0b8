//! `connect`: open N connections (bounded concurrency, all threads
//! together), timing each phase (TCP, TLS, upgrade, relay auth), optionally
//! verifying one echo on each, then closing. Over wss:// it measures full
//! handshakes (resumption off) and resumed ones (a warmed session cache),
//! as separate runs, and counts how many the server really resumed.

use std::cell::RefCell;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::load::route_info;
use super::{finish, make_setup, output_options, route_from, secs, trust, CmdError};
use crate::cli::{ConnectArgs, TlsSessions};
use crate::client::{self, ClientSetup, Connection, Event};
use crate::clock::{now_ns, unix_ms};
use crate::output::{ConnectInfo, Messages, Params, Phases, Run, RunReport};
use crate::payload::{Checker, PayloadBuilder, Verdict};
use crate::rt::{self, ThreadPlan};
use crate::stats::{new_hist, ErrorCounts, Summary};
use ws_relay_core::ws::frame::opcode;

const ECHO_SIZE: usize = 64;

pub fn connect(a: &ConnectArgs) -> Result<ExitCode, CmdError> {
    let started = unix_ms();
    let route = route_from(&a.route)?;
    let timeout = secs(a.route.connect_timeout, "--connect-timeout")?;
    let trust = trust(a.route.insecure, a.route.ca.as_deref());
    let plan = ThreadPlan::resolve(
        a.threads.threads,
        a.concurrency as usize,
        a.threads.pin.clone(),
    );
    let phases: Vec<(&str, bool)> = if !route.first_hop().secure {
        vec![("none", false)]
    } else {
        match a.tls_sessions {
            TlsSessions::Full => vec![("full", false)],
            TlsSessions::Resumed => vec![("resumed", true)],
            TlsSessions::Both => vec![("full", false), ("resumed", true)],
        }
    };
    let mut runs = Vec::new();
    for (label, resume) in phases {
        let setup = Arc::new(make_setup(
            route.clone(),
            trust.as_ref(),
            resume,
            timeout,
            0,
        )?);
        let base = a
            .name
            .clone()
            .unwrap_or_else(|| setup.route.kind().to_string());
        let name = if label == "none" {
            base
        } else {
            format!("{base}-tls-{label}")
        };
        let job = Job {
            count: a.count,
            concurrency: a.concurrency.max(1) as u64,
            echo: !a.no_echo,
            prime: if resume { 8 } else { 0 },
        };
        runs.push(run_phase(name, label, &setup, &plan, job)?);
    }
    finish(
        "connect",
        &runs,
        None,
        &output_options(&a.out),
        started,
        &["connect"],
    )
}

#[derive(Debug, Clone, Copy)]
struct Job {
    count: u64,
    concurrency: u64,
    echo: bool,
    /// Unmeasured connections first, to fill the TLS session cache.
    prime: u64,
}

struct PhaseHists {
    tcp: Histogram<u64>,
    tls: Histogram<u64>,
    upgrade: Histogram<u64>,
    auth: Histogram<u64>,
    total: Histogram<u64>,
    ok: u64,
    resumed: u64,
    verified: u64,
    errors: ErrorCounts,
}

impl PhaseHists {
    fn new() -> Self {
        Self {
            tcp: new_hist(),
            tls: new_hist(),
            upgrade: new_hist(),
            auth: new_hist(),
            total: new_hist(),
            ok: 0,
            resumed: 0,
            verified: 0,
            errors: ErrorCounts::default(),
        }
    }

    fn merge(&mut self, o: &PhaseHists) {
        let _ = self.tcp.add(&o.tcp);
        let _ = self.tls.add(&o.tls);
        let _ = self.upgrade.add(&o.upgrade);
        let _ = self.auth.add(&o.auth);
        let _ = self.total.add(&o.total);
        self.ok += o.ok;
        self.resumed += o.resumed;
        self.verified += o.verified;
        self.errors.merge(&o.errors);
    }
}

fn run_phase(
    name: String,
    label: &str,
    setup: &Arc<ClientSetup>,
    plan: &ThreadPlan,
    job: Job,
) -> Result<Run, CmdError> {
    // Warm the session cache (resumed phase) outside the measurement.
    if job.prime > 0 {
        let s = Arc::clone(setup);
        let prime = job.prime;
        rt::run_threads(
            &ThreadPlan::resolve(1, 1, plan.pin.clone()),
            "prime",
            move |_| {
                let s = Arc::clone(&s);
                async move {
                    for _ in 0..prime {
                        if let Ok(c) = client::connect(&s, false).await {
                            close(c).await;
                        }
                    }
                }
            },
        )
        .map_err(crate::engine::EngineError::from)?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let threads = plan.threads.max(1) as u64;
    let t0 = now_ns();
    let outs = {
        let setup = Arc::clone(setup);
        let next = Arc::clone(&next);
        rt::run_threads(plan, "connect", move |t| {
            let workers =
                job.concurrency / threads + u64::from((t as u64) < job.concurrency % threads);
            thread_main(Arc::clone(&setup), Arc::clone(&next), job, workers)
        })
        .map_err(crate::engine::EngineError::from)?
    };
    let wall = (now_ns() - t0).max(1) as f64 / 1e9;
    let mut all = PhaseHists::new();
    for o in &outs {
        all.merge(o);
    }
    all.errors.recompute_total();
    let tls_used = setup.route.first_hop().secure;
    let auth_used = setup.route.auth_message().is_some();
    let report = RunReport {
        name,
        mode: "connect".into(),
        round: None,
        route: route_info(setup),
        params: Params {
            connections: job.concurrency as usize,
            threads: plan.threads,
            pin: plan.pin.clone(),
            size: ECHO_SIZE,
            count: Some(job.count),
            timeout_ms: setup.connect_timeout.as_millis() as u64,
            ..Params::default()
        },
        messages: Messages {
            sent: if job.echo { all.ok } else { 0 },
            received: all.verified,
            verified: all.verified,
        },
        errors: all.errors.clone(),
        latency_us: Summary::from_hist(&all.total),
        raw_latency_us: None,
        throughput: None,
        rate: None,
        connect: Some(ConnectInfo {
            tls: label.into(),
            attempted: job.count,
            succeeded: all.ok,
            failed: job.count - all.ok,
            per_s: all.ok as f64 / wall,
            resumed: all.resumed,
            phases_us: Phases {
                tcp: Summary::from_hist(&all.tcp),
                tls: tls_used.then(|| Summary::from_hist(&all.tls)).flatten(),
                upgrade: Summary::from_hist(&all.upgrade),
                auth: auth_used.then(|| Summary::from_hist(&all.auth)).flatten(),
                total: Summary::from_hist(&all.total),
            },
        }),
        hist_file: None,
    };
    Ok(Run {
        report,
        latency: Some(all.total),
        raw: None,
    })
}

async fn thread_main(
    setup: Arc<ClientSetup>,
    next: Arc<AtomicU64>,
    job: Job,
    workers: u64,
) -> PhaseHists {
    let hists = Rc::new(RefCell::new(PhaseHists::new()));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            monoio::spawn(worker(
                Arc::clone(&setup),
                Arc::clone(&next),
                job,
                Rc::clone(&hists),
            ))
        })
        .collect();
    for h in handles {
        h.await;
    }
    match Rc::try_unwrap(hists) {
        Ok(h) => h.into_inner(),
        Err(_) => unreachable!("all workers have finished"),
    }
}

async fn worker(
    setup: Arc<ClientSetup>,
    next: Arc<AtomicU64>,
    job: Job,
    hists: Rc<RefCell<PhaseHists>>,
) {
    // Bounded: each pass claims one of `job.count` indices.
    loop {
        let idx = next.fetch_add(1, Ordering::Relaxed);
        if idx >= job.count {
            return;
        }
        let mut conn = match client::connect(&setup, true).await {
            Ok(c) => c,
            Err(e) => {
                let mut h = hists.borrow_mut();
                h.errors.connect += 1;
                h.errors.note(|| format!("connection {idx}: {e}"));
                continue;
            }
        };
        {
            let t = conn.timings;
            let mut h = hists.borrow_mut();
            h.ok += 1;
            h.tcp.saturating_record(t.tcp_ns.max(1));
            if let Some(x) = t.tls_ns {
                h.tls.saturating_record(x.max(1));
            }
            h.upgrade.saturating_record(t.upgrade_ns.max(1));
            if let Some(x) = t.auth_ns {
                h.auth.saturating_record(x.max(1));
            }
            h.total.saturating_record(t.total_ns.max(1));
            if t.resumed == Some(true) {
                h.resumed += 1;
            }
        }
        if job.echo {
            let verdict = echo_once(&mut conn, idx as u32, setup.connect_timeout).await;
            let mut h = hists.borrow_mut();
            match verdict {
                Ok(()) => h.verified += 1,
                Err(what) => {
                    match what {
                        EchoFail::Corrupt => h.errors.corrupted += 1,
                        EchoFail::Broken(_) => h.errors.protocol += 1,
                        EchoFail::Missing => h.errors.lost += 1,
                    }
                    h.errors
                        .note(|| format!("connection {idx}: echo check failed: {what}"));
                }
            }
        }
        close(conn).await;
    }
}

/// Why the one-echo check of a connection failed.
#[derive(Debug, thiserror::Error)]
enum EchoFail {
    #[error("the echo came back damaged")]
    Corrupt,
    #[error("no echo")]
    Missing,
    #[error("the connection broke: {0}")]
    Broken(String),
}

async fn echo_once(conn: &mut Connection, id: u32, limit: Duration) -> Result<(), EchoFail> {
    let mut b = PayloadBuilder::new(id, ECHO_SIZE);
    let now = now_ns();
    conn.writer
        .push_message(opcode::BINARY, b.build(0, now, now));
    conn.writer
        .flush(&mut conn.io)
        .await
        .map_err(|e| EchoFail::Broken(e.to_string()))?;
    let mut checker = Checker::new(id, ECHO_SIZE);
    let wait = async {
        for _ in 0..16 {
            match conn.reader.next(&mut conn.io).await {
                Ok(Event::Message {
                    opcode, payload, ..
                }) => {
                    return match (opcode, checker.check(payload, 1)) {
                        (opcode::BINARY, Verdict::Ok(_)) => Ok(()),
                        _ => Err(EchoFail::Corrupt),
                    }
                }
                Ok(Event::Close { .. }) => return Err(EchoFail::Broken("closed".into())),
                Ok(_) => {}
                Err(e) => return Err(EchoFail::Broken(e.to_string())),
            }
        }
        Err(EchoFail::Missing)
    };
    match monoio::time::timeout(limit, wait).await {
        Ok(r) => r,
        Err(_) => Err(EchoFail::Missing),
    }
}

/// Close handshake, at most 200 ms.
async fn close(mut conn: Connection) {
    conn.writer.push_close(1000, "");
    if conn.writer.flush(&mut conn.io).await.is_err() {
        return;
    }
    let _ = monoio::time::timeout(Duration::from_millis(200), async {
        for _ in 0..64 {
            match conn.reader.next(&mut conn.io).await {
                Ok(Event::Close { .. }) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
