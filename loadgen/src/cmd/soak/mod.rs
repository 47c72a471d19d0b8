//! `loadgen soak`: thousands of relayed sessions, every message
//! sequence-numbered and checksummed, held open through reloads that add
//! and remove users, echo-target restarts and clients vanishing by RST,
//! while the relay's RSS and descriptor count are sampled. One relay
//! process per variant (plain or TLS listener, `copy` or `splice`).
//!
//! Owns the timeline of one variant: start the relay and the targets, open
//! the sessions over the ramp, fire the reloads and restarts evenly over
//! the run, stop, and wait for the relay to give its descriptors back. The
//! client sessions live in [`session`], the verdict in [`report`].
//!
//! It must not judge anything the relay is documented not to promise: a
//! session cut by its target's restart or by its own RST loses its
//! unanswered tail, and that tail is reported as in flight, not lost.

mod message;
mod report;
mod session;
mod targets;
mod users;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::{SoakArgs, SoakVariant};
use crate::client::tls::{client_config, Trust};
use crate::cmd::relay_proc::{find_relay_bin, RelayOptions, RelayProcess};
use crate::cmd::{secs, CmdError, EXIT_ERRORS};
use crate::rng::Rng;
use crate::rt::{self, ThreadPlan};
use crate::ws::WsUrl;

use report::{FdCounts, ProcSample, VariantReport};
use session::{SessionConfig, Shared};
use targets::Targets;
use users::UserPool;

/// How long the relay may take to hand back its descriptors after the
/// last session closed.
const FD_SETTLE: Duration = Duration::from_secs(10);
/// How long a reload waits for connection attempts with a retiring token.
const RETIRE_WAIT: Duration = Duration::from_secs(10);
/// Extra wait after the last attempt with a retiring token ended.
const RETIRE_GRACE: Duration = Duration::from_millis(500);
/// How long a killed target stays down before its restart.
const TARGET_DOWN: Duration = Duration::from_millis(500);

/// Runs every variant in turn; exit 0 when all pass, 2 otherwise.
pub fn soak(a: &SoakArgs) -> Result<ExitCode, CmdError> {
    check_args(a)?;
    let bin = find_relay_bin(a.relay_bin.as_deref())?;
    let mut reports = Vec::new();
    for &v in &a.variants {
        eprintln!(
            "soak: {} — {} sessions for {} s",
            variant_name(v),
            a.sessions,
            a.duration
        );
        let r = run_variant(a, v, &bin)?;
        r.print();
        reports.push(r);
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&reports).expect("reports serialise");
        std::fs::write(path, text)
            .map_err(|e| CmdError::Usage(format!("cannot write {}: {e}", path.display())))?;
    }
    let failed: Vec<&str> = reports
        .iter()
        .filter(|r| !r.passed())
        .map(|r| r.variant.as_str())
        .collect();
    if failed.is_empty() {
        println!("soak: PASS ({} variants)", reports.len());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("soak: FAIL: {}", failed.join(", "));
        Ok(ExitCode::from(EXIT_ERRORS))
    }
}

fn check_args(a: &SoakArgs) -> Result<(), CmdError> {
    secs(a.duration, "--duration")?;
    secs(a.ramp, "--ramp")?;
    secs(a.lifetime, "--lifetime")?;
    secs(a.warmup, "--warmup")?;
    if !(a.rate > 0.0 && a.rate <= 1000.0) {
        return Err(CmdError::Usage(format!(
            "--rate: {} messages per second is outside 0..=1000",
            a.rate
        )));
    }
    if a.variants.is_empty() {
        return Err(CmdError::Usage("--variants: none given".into()));
    }
    Ok(())
}

pub fn variant_name(v: SoakVariant) -> &'static str {
    match v {
        SoakVariant::PlainSplice => "plain-splice",
        SoakVariant::PlainCopy => "plain-copy",
        SoakVariant::TlsCopy => "tls-copy",
        SoakVariant::TlsSplice => "tls-splice",
        SoakVariant::PlainRing => "plain-ring",
        SoakVariant::TlsRing => "tls-ring",
    }
}

/// The ramp in seconds, `--ramp 0` resolved.
pub fn ramp_secs(a: &SoakArgs) -> f64 {
    if a.ramp > 0.0 {
        a.ramp
    } else {
        (a.sessions as f64 / 200.0).max(2.0)
    }
}

fn variant_setup(v: SoakVariant) -> (bool, &'static str) {
    match v {
        SoakVariant::PlainSplice => (false, "splice"),
        SoakVariant::PlainCopy => (false, "copy"),
        SoakVariant::TlsCopy => (true, "copy"),
        SoakVariant::TlsSplice => (true, "splice"),
        SoakVariant::PlainRing => (false, "ring"),
        SoakVariant::TlsRing => (true, "ring"),
    }
}

/// One event of the timeline, at a time after the ramp.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    Reload,
    RestartTarget(usize),
}

/// Reloads and restarts spread evenly over the run, never at the same
/// moment (restarts sit between reloads).
fn timeline(a: &SoakArgs) -> Vec<(Duration, Event)> {
    let d = a.duration;
    let mut ev: Vec<(Duration, Event)> = (0..a.reloads)
        .map(|k| (d * (k as f64 + 0.5) / a.reloads as f64, Event::Reload))
        .chain((0..a.target_restarts).map(|k| {
            let at = d * (k as f64 + 0.25) / a.target_restarts as f64;
            (at, Event::RestartTarget(k as usize % a.targets as usize))
        }))
        .map(|(s, e)| (Duration::from_secs_f64(s), e))
        .collect();
    ev.sort_by_key(|(at, _)| *at);
    ev
}

fn run_variant(
    a: &SoakArgs,
    v: SoakVariant,
    bin: &std::path::Path,
) -> Result<VariantReport, CmdError> {
    let (tls, forward) = variant_setup(v);
    let mut targets =
        Targets::start(a.targets as usize).map_err(|e| CmdError::Usage(e.to_string()))?;
    let pool = UserPool::new(a.users);
    let mut opts = RelayOptions::new(bin.to_path_buf(), pool.configured(), a.relay_workers);
    opts.forward = Some(forward);
    opts.tls = tls;
    let mut relay = RelayProcess::start(&opts)?;
    let pid = relay.pid();
    let mut report = VariantReport::new(variant_name(v), a, forward, tls);
    report.fds_start = steady_fds(pid);

    let target_urls = targets
        .urls()
        .iter()
        .map(|u| WsUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared::new(pool, target_urls));
    let cfg = SessionConfig {
        relay: WsUrl::parse(&relay.url)?,
        tls: if tls {
            Some(client_config(&Trust::Insecure, false)?)
        } else {
            None
        },
        // A TLS session is always forwarded by copy, whatever `forward` says;
        // ring mode sees frames as copy does (it injects Close 1014 too).
        copy: tls || forward != "splice",
        period: Duration::from_secs_f64(1.0 / a.rate),
        max_payload: a.max_payload as usize,
        lifetime: (a.lifetime > 0.0).then(|| Duration::from_secs_f64(a.lifetime)),
        rst_every: a.rst_every,
        ramp: Duration::from_secs_f64(ramp_secs(a)),
        sessions: a.sessions as usize,
        threads: a.threads.max(1),
    };
    let plan = ThreadPlan {
        threads: cfg.threads,
        pin: Vec::new(),
    };
    let workers = {
        let (cfg, shared) = (cfg.clone(), Arc::clone(&shared));
        rt::spawn_threads(&plan, "soak", move |i| {
            session::thread_main(cfg.clone(), Arc::clone(&shared), i)
        })
        .map_err(|e| CmdError::Usage(e.to_string()))?
    };

    let t0 = Instant::now();
    let ramp = cfg.ramp;
    let end = ramp + Duration::from_secs_f64(a.duration);
    let mut events = timeline(a).into_iter().peekable();
    let mut rng = Rng::new();
    let sample_every = Duration::from_millis(a.sample_ms.max(50));
    let mut next_sample = Duration::ZERO;
    // Bounded by `end`.
    while t0.elapsed() < end {
        let now = t0.elapsed();
        if now >= next_sample {
            let s = ProcSample::take(
                pid,
                now.as_secs_f64(),
                shared.active.load(Ordering::Acquire),
            );
            report.samples.push(s);
            next_sample += sample_every;
        }
        if let Some(&(at, ev)) = events.peek() {
            if now >= ramp + at {
                events.next();
                match ev {
                    Event::Reload => reload(&mut relay, &shared, &mut rng, a.users, &mut report),
                    Event::RestartTarget(i) => {
                        restart_target(&mut targets, &shared, i, &mut report)
                    }
                }
                continue;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    shared.stop.store(true, Ordering::Release);
    for w in workers {
        match rt::join(w) {
            Ok(stats) => report.clients.merge(stats),
            Err(e) => report.problems.push(format!("client thread: {e}")),
        }
    }
    report.run_secs = t0.elapsed().as_secs_f64();
    report.fds_end = settle_fds(pid, report.fds_start);
    report
        .samples
        .push(ProcSample::take(pid, t0.elapsed().as_secs_f64(), 0));
    if let Some(status) = relay.exited() {
        report
            .problems
            .push(format!("the relay exited during the run: {status}"));
    }
    report.finish();
    Ok(report)
}

/// Removes some users and adds as many, the way an operator would: no new
/// session picks a retiring token, and the reload waits until no attempt
/// with one is in flight, so no session is refused for a token it picked a
/// moment before.
fn reload(
    relay: &mut RelayProcess,
    shared: &Shared,
    rng: &mut Rng,
    users: u32,
    report: &mut VariantReport,
) {
    let change = (users as usize / 8).max(1);
    let plan = shared.users().prepare_reload(change, change, rng);
    let give_up = Instant::now() + RETIRE_WAIT;
    while shared.users().connecting(&plan) > 0 && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(5));
    }
    // An attempt that gave up may have left its request in the relay's
    // accept queue, to be read after the reload (and refused then).
    std::thread::sleep(RETIRE_GRACE);
    let r = relay.reload_users(&plan.config);
    let ok = r.is_ok();
    shared.users().commit(&plan, ok);
    match r {
        Ok(_) => {
            report.reloads += 1;
            report.users_removed += plan.removed.len() as u64;
            report.users_added += plan.added.len() as u64;
        }
        Err(e) => report.problems.push(format!("reload refused: {e}")),
    }
}

/// Kills target `i` (every session on it ends) and starts it again on its
/// port. The generation is bumped before the kill, so a session that sees
/// its end knows the restart caused it.
fn restart_target(targets: &mut Targets, shared: &Shared, i: usize, report: &mut VariantReport) {
    let t = &shared.targets[i];
    t.up.store(false, Ordering::Release);
    t.gen.fetch_add(1, Ordering::AcqRel);
    targets.kill(i);
    std::thread::sleep(TARGET_DOWN);
    match targets.respawn(i) {
        Ok(()) => {
            t.up.store(true, Ordering::Release);
            report.target_restarts += 1;
        }
        Err(e) => report.problems.push(format!("target restart: {e}")),
    }
}

/// The relay's descriptors once two looks 200 ms apart agree (the health
/// probe's connection may still be closing right after start).
fn steady_fds(pid: u32) -> FdCounts {
    let mut last = FdCounts::of(pid);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = FdCounts::of(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// The relay's descriptors once its sockets are back to `start`'s, or the
/// last look after [`FD_SETTLE`].
fn settle_fds(pid: u32, start: FdCounts) -> FdCounts {
    let give_up = Instant::now() + FD_SETTLE;
    loop {
        let now = FdCounts::of(pid);
        let back = (now.sockets, now.other) == (start.sockets, start.other);
        if back || Instant::now() >= give_up {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SoakArgs {
        let mut argv = vec!["loadgen", "soak"];
        argv.extend_from_slice(extra);
        match crate::cli::Cli::parse_from(argv).command {
            crate::cli::Command::Soak(a) => a,
            _ => unreachable!("parsed as soak"),
        }
    }

    #[test]
    fn the_timeline_spreads_every_event_and_none_coincide() {
        let a = args(&[
            "-d",
            "100",
            "--reloads",
            "20",
            "--target-restarts",
            "5",
            "--targets",
            "4",
        ]);
        let t = timeline(&a);
        assert_eq!(t.iter().filter(|(_, e)| *e == Event::Reload).count(), 20);
        let restarts: Vec<usize> = t
            .iter()
            .filter_map(|(_, e)| match e {
                Event::RestartTarget(i) => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(restarts, vec![0, 1, 2, 3, 0]);
        assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{t:?}");
        assert!(t.iter().all(|(at, _)| *at < Duration::from_secs(100)));
    }
}
