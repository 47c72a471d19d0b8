//! The client side of the soak: session slots on the client threads. A
//! slot keeps one relayed session open at a time and opens a replacement
//! when it ends, until the run stops. A session sends checked messages at a
//! modest rate and verifies every echo, and ends one of four ways:
//!
//! - clean: the test closes it (run end, or its lifetime is up) once every
//!   message has come back; nothing may be missing;
//! - by a target restart: the relay ends it because its target died; the
//!   close must be the documented one (`copy`: Close 1014, or a reset when
//!   the killed target's kernel reset the connection because it held
//!   unread bytes: the relay passes a reset on; `splice`: TCP close without
//!   a Close frame); the unanswered tail was in flight;
//! - RST: it was picked to vanish (`SO_LINGER` 0, then close);
//! - unexpected: it ended and nothing the test did explains it (a failure).
//!
//! The reader and writer are two futures of one task sharing `Cell`s (the
//! read is never cancelled mid-frame except when the session is cut).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};

use super::message::{self, MsgCounts, Tracker, HEADER_LEN};
use super::users::UserPool;
use crate::client::{self, AuthMode, ClientError, ClientSetup, Connection, Route};
use crate::client::{Event, FrameReader, FrameWriter, Transport, WsError};
use crate::clock::{dur_ns, now_ns};
use crate::rng::Rng;
use crate::ws::WsUrl;
use ws_relay_core::net::event::Notify;
use ws_relay_core::ws::frame::opcode;

/// How long a clean close waits for the last echoes.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// How long we wait for the peer's side of a close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// A write that takes this long means the session is stuck.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// The writer looks at the stop flag at least this often.
const TICK: Duration = Duration::from_millis(250);
/// First errors kept per thread for the report.
const MAX_NOTES: usize = 20;

/// One echo target as the sessions see it.
#[derive(Debug)]
pub struct TargetState {
    pub url: WsUrl,
    /// Bumped when the target is killed: a session that connected under an
    /// older generation and ended was ended by that restart.
    pub gen: AtomicU64,
    pub up: AtomicBool,
}

/// State shared by the coordinator and every client thread.
#[derive(Debug)]
pub struct Shared {
    /// Set at the end of the run: every session closes cleanly.
    pub stop: AtomicBool,
    pub users: Mutex<UserPool>,
    pub targets: Vec<TargetState>,
    pub active: AtomicUsize,
    next_sid: AtomicU32,
    opened: AtomicU64,
}

impl Shared {
    pub fn new(users: UserPool, targets: Vec<WsUrl>) -> Self {
        Shared {
            stop: AtomicBool::new(false),
            users: Mutex::new(users),
            targets: targets
                .into_iter()
                .map(|url| TargetState {
                    url,
                    gen: AtomicU64::new(0),
                    up: AtomicBool::new(true),
                })
                .collect(),
            active: AtomicUsize::new(0),
            next_sid: AtomicU32::new(1),
            opened: AtomicU64::new(0),
        }
    }

    /// The pool, even if a panicking thread poisoned the lock.
    pub fn users(&self) -> MutexGuard<'_, UserPool> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What every session of a variant does.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub relay: WsUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The relay forwards in copy mode (it can inject Close 1014).
    pub copy: bool,
    pub period: Duration,
    pub max_payload: usize,
    /// Mean lifetime before a clean close (None: until the end).
    pub lifetime: Option<Duration>,
    pub rst_every: u64,
    pub ramp: Duration,
    pub sessions: usize,
    pub threads: usize,
}

impl SessionConfig {
    /// The close a session cut by its target's restart must see.
    pub fn expected_restart_close(&self) -> &'static str {
        if self.copy {
            "close 1014 (or a reset, passed on)"
        } else {
            "tcp close"
        }
    }

    fn close_matches(&self, close: &str) -> bool {
        if self.copy {
            close == "close 1014" || close.starts_with("reset")
        } else {
            close == "eof" || close.starts_with("reset")
        }
    }
}

/// What the sessions of one thread (or of all of them) did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClientStats {
    pub opened: u64,
    pub ended_clean: u64,
    pub ended_by_restart: u64,
    pub rst: u64,
    pub unexpected_end: u64,
    /// Clean ends whose Close got no Close back (TCP closed first).
    pub close_unanswered: u64,
    /// Sessions whose user a reload removed while they ran.
    pub removed_user_sessions: u64,
    /// How each session ended by a restart saw its end.
    pub restart_closes: BTreeMap<String, u64>,
    pub wrong_close: u64,
    pub connect_failed_target_restart: u64,
    pub connect_auth_failed: u64,
    pub connect_errors: u64,
    /// `connect_errors` by what went wrong (digits folded to `#`).
    pub connect_error_kinds: BTreeMap<String, u64>,
    /// Sessions the test ended (clean), removed users' included.
    pub surviving: MsgCounts,
    /// Sessions cut by a target restart or an RST (unanswered tail excluded).
    pub cut: MsgCounts,
    /// Of `surviving`: the sessions of removed users.
    pub removed_user_msgs: MsgCounts,
    pub notes: Vec<String>,
}

impl ClientStats {
    pub fn merge(&mut self, o: ClientStats) {
        self.opened += o.opened;
        self.ended_clean += o.ended_clean;
        self.ended_by_restart += o.ended_by_restart;
        self.rst += o.rst;
        self.unexpected_end += o.unexpected_end;
        self.close_unanswered += o.close_unanswered;
        self.removed_user_sessions += o.removed_user_sessions;
        for (k, v) in o.restart_closes {
            *self.restart_closes.entry(k).or_default() += v;
        }
        self.wrong_close += o.wrong_close;
        self.connect_failed_target_restart += o.connect_failed_target_restart;
        self.connect_auth_failed += o.connect_auth_failed;
        self.connect_errors += o.connect_errors;
        for (k, v) in o.connect_error_kinds {
            *self.connect_error_kinds.entry(k).or_default() += v;
        }
        self.surviving.add(&o.surviving);
        self.cut.add(&o.cut);
        self.removed_user_msgs.add(&o.removed_user_msgs);
        for n in o.notes {
            self.note(n);
        }
    }

    fn note(&mut self, n: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(n);
        }
    }

    /// Surviving and cut sessions together.
    pub fn messages(&self) -> MsgCounts {
        let mut m = self.surviving;
        m.add(&self.cut);
        m
    }
}

/// Runs this thread's slots until the run stops; returns what they did.
pub async fn thread_main(cfg: SessionConfig, shared: Arc<Shared>, thread: usize) -> ClientStats {
    let cfg = Rc::new(cfg);
    let stats = Rc::new(RefCell::new(ClientStats::default()));
    let handles: Vec<_> = (thread..cfg.sessions)
        .step_by(cfg.threads.max(1))
        .map(|slot| {
            let delay = cfg.ramp.mul_f64(slot as f64 / cfg.sessions as f64);
            monoio::spawn(slot_loop(
                Rc::clone(&cfg),
                Arc::clone(&shared),
                Rc::clone(&stats),
                delay,
            ))
        })
        .collect();
    for h in handles {
        h.await;
    }
    stats.take()
}

async fn slot_loop(
    cfg: Rc<SessionConfig>,
    shared: Arc<Shared>,
    stats: Rc<RefCell<ClientStats>>,
    delay: Duration,
) {
    monoio::time::sleep(delay).await;
    let mut rng = Rng::new();
    // Bounded by the stop flag, which the coordinator always sets.
    while !shared.stop.load(Ordering::Acquire) {
        match open(&cfg, &shared, &mut rng).await {
            Ok(opened) => {
                stats.borrow_mut().opened += 1;
                shared.active.fetch_add(1, Ordering::AcqRel);
                let ended = run(opened, &cfg, &shared, &mut rng).await;
                shared.active.fetch_sub(1, Ordering::AcqRel);
                record(&mut stats.borrow_mut(), &cfg, ended);
            }
            Err(e) => {
                record_failure(&mut stats.borrow_mut(), e);
                let backoff = 50 + rng.next_u64() % 100;
                monoio::time::sleep(Duration::from_millis(backoff)).await;
            }
        }
    }
}

/// An established session, before it runs.
struct Opened {
    conn: Connection,
    sid: u32,
    user: usize,
    target: usize,
    gen: u64,
    rst: bool,
}

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("no target is up")]
    NoTarget,
    #[error("no active user")]
    NoUser,
    #[error("target restarted during the connect")]
    TargetRestart,
    #[error("{0}")]
    AuthFailed(String),
    /// What went wrong (the kind), and the full line for the notes.
    #[error("{1}")]
    Other(String, String),
}

async fn open(cfg: &SessionConfig, shared: &Shared, rng: &mut Rng) -> Result<Opened, OpenError> {
    let up: Vec<usize> = (0..shared.targets.len())
        .filter(|&i| shared.targets[i].up.load(Ordering::Acquire))
        .collect();
    if up.is_empty() {
        return Err(OpenError::NoTarget);
    }
    let target = up[(rng.next_u64() % up.len() as u64) as usize];
    let t = &shared.targets[target];
    let gen = t.gen.load(Ordering::Acquire);
    let (user, token) = shared.users().pick(rng).ok_or(OpenError::NoUser)?;
    let sid = shared.next_sid.fetch_add(1, Ordering::Relaxed);
    // Both auth modes, half the sessions each.
    let auth = if sid % 2 == 0 {
        AuthMode::FirstMessage
    } else {
        AuthMode::Header
    };
    let setup = ClientSetup {
        route: Route::Relay {
            relay: cfg.relay.clone(),
            target: t.url.clone(),
            token,
            auth,
        },
        tls: cfg.tls.clone(),
        connect_timeout: Duration::from_secs(10),
        max_message: HEADER_LEN + cfg.max_payload + 1024,
        fragment: 0,
    };
    let r = client::connect(&setup, false).await;
    shared.users().done_connecting(user);
    match r {
        Ok(conn) => {
            let n = shared.opened.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(Opened {
                conn,
                sid,
                user,
                target,
                gen,
                rst: cfg.rst_every > 0 && n % cfg.rst_every == 0,
            })
        }
        Err(_) if t.gen.load(Ordering::Acquire) != gen || !t.up.load(Ordering::Acquire) => {
            Err(OpenError::TargetRestart)
        }
        Err(ClientError::Relay { code, error }) if code == "auth_failed" => {
            Err(OpenError::AuthFailed(format!(
                "session {sid}: {auth:?} auth refused: {code}: {error}"
            )))
        }
        Err(e) => Err(OpenError::Other(
            error_kind(&e.to_string()),
            format!("session {sid} to {}: connect: {e}", t.url.raw),
        )),
    }
}

fn record_failure(s: &mut ClientStats, e: OpenError) {
    match e {
        OpenError::NoTarget | OpenError::NoUser => {}
        OpenError::TargetRestart => s.connect_failed_target_restart += 1,
        OpenError::AuthFailed(m) => {
            s.connect_auth_failed += 1;
            s.note(m);
        }
        OpenError::Other(kind, m) => {
            s.connect_errors += 1;
            *s.connect_error_kinds.entry(kind).or_default() += 1;
            s.note(m);
        }
    }
}

/// An error message with its numbers folded, so that one cause is one key.
fn error_kind(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        let c = if c.is_ascii_digit() { '#' } else { c };
        if !(c == '#' && out.ends_with('#')) {
            out.push(c);
        }
    }
    out
}

/// How a session ended.
#[derive(Debug)]
enum EndKind {
    Clean { answered: bool },
    ByRestart { close: String },
    Rst,
    Unexpected { close: String },
}

#[derive(Debug)]
struct Ended {
    sid: u32,
    kind: EndKind,
    counts: MsgCounts,
    removed_user: bool,
    first_error: Option<String>,
}

fn record(s: &mut ClientStats, cfg: &SessionConfig, e: Ended) {
    if let Some(m) = e.first_error {
        s.note(m);
    }
    if e.removed_user {
        s.removed_user_sessions += 1;
    }
    match e.kind {
        EndKind::Clean { answered } => {
            s.ended_clean += 1;
            s.close_unanswered += u64::from(!answered);
            s.surviving.add(&e.counts);
            if e.removed_user {
                s.removed_user_msgs.add(&e.counts);
            }
        }
        EndKind::ByRestart { close } => {
            s.ended_by_restart += 1;
            if !cfg.close_matches(&close) {
                s.wrong_close += 1;
                s.note(format!(
                    "session {}: ended by its target's restart with {close}, expected {}",
                    e.sid,
                    cfg.expected_restart_close()
                ));
            }
            *s.restart_closes.entry(close).or_default() += 1;
            s.cut.add(&e.counts);
        }
        EndKind::Rst => {
            s.rst += 1;
            s.cut.add(&e.counts);
        }
        EndKind::Unexpected { close } => {
            s.unexpected_end += 1;
            s.note(format!(
                "session {}: ended unexpectedly ({close}) after {} sent, {} echoed",
                e.sid, e.counts.sent, e.counts.received
            ));
            s.cut.add(&e.counts);
        }
    }
}

/// State shared by a session's reader and writer.
#[derive(Default)]
struct Live {
    sent: Cell<u64>,
    tracker: RefCell<Tracker>,
    /// The peer's Close frame, once seen: its code.
    peer_close: Cell<Option<Option<u16>>>,
    /// We sent our Close (a clean end).
    we_closed: Cell<bool>,
    /// The peer ended (Close, EOF, error) before we closed.
    peer_first: Cell<bool>,
    io_error: RefCell<Option<String>>,
    reader_done: Cell<bool>,
    /// Wakes the writer on reader events.
    wake: Notify,
    /// Cuts the session: both halves are dropped.
    abort: Notify,
}

impl Live {
    fn peer_ended(&self) {
        if !self.we_closed.get() {
            self.peer_first.set(true);
        }
    }

    /// How the peer's end looked from here.
    fn close_seen(&self) -> String {
        match self.peer_close.get() {
            Some(Some(code)) => format!("close {code}"),
            Some(None) => "close without a code".into(),
            None => match &*self.io_error.borrow() {
                Some(e) => format!("reset ({e})"),
                None => "eof".into(),
            },
        }
    }

    /// Waits until `done()` or `limit` passes, waking on reader events.
    async fn wait_for(&self, limit: Duration, done: impl Fn(&Live) -> bool) -> bool {
        let give_up = now_ns() + dur_ns(limit);
        loop {
            if done(self) {
                return true;
            }
            let now = now_ns();
            if now >= give_up {
                return false;
            }
            let nap = Duration::from_nanos((give_up - now).min(dur_ns(TICK)));
            monoio::select! {
                _ = monoio::time::sleep(nap) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// When this session will close cleanly or vanish, in `now_ns` time.
struct Schedule {
    end_at: Option<u64>,
    rst_at: Option<u64>,
}

fn schedule(cfg: &SessionConfig, rst: bool, rng: &mut Rng) -> Schedule {
    let now = now_ns();
    let (a, b) = (rng_unit(rng), rng_unit(rng));
    let end_at = cfg
        .lifetime
        .map(|l| now + (dur_ns(l) as f64 * (0.5 + a)) as u64);
    // An RST victim vanishes within its lifetime, or within a few seconds
    // when sessions live until the end.
    let rst_at = rst.then(|| {
        let span = end_at.map_or(dur_ns(Duration::from_secs(4)), |e| e - now);
        now + (span as f64 * (0.2 + 0.7 * b)) as u64
    });
    Schedule { end_at, rst_at }
}

fn rng_unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

async fn run(o: Opened, cfg: &SessionConfig, shared: &Shared, rng: &mut Rng) -> Ended {
    let Connection {
        io,
        raw_fd,
        mut reader,
        mut writer,
        ..
    } = o.conn;
    let (mut rd, mut wr) = io.into_split();
    let live = Live::default();
    let plan = schedule(cfg, o.rst, rng);
    let cut = Cell::new(false);
    {
        let w = write_loop(
            &live,
            &mut wr,
            &mut writer,
            cfg,
            shared,
            &plan,
            o.sid,
            raw_fd,
            &cut,
            rng,
        );
        let r = read_loop(&live, &mut rd, &mut reader, o.sid);
        monoio::select! {
            _ = async { monoio::join!(w, r) } => {}
            _ = live.abort.notified() => {}
        }
    }
    // Closing both halves closes the socket (an RST if SO_LINGER 0 was set).
    drop(rd);
    drop(wr);

    let t = &shared.targets[o.target];
    let restarted = t.gen.load(Ordering::Acquire) != o.gen;
    let close = live.close_seen();
    let kind = if cut.get() {
        EndKind::Rst
    } else if live.peer_first.get() || (restarted && live.peer_close.get() != Some(Some(1000))) {
        if restarted {
            EndKind::ByRestart { close }
        } else {
            EndKind::Unexpected { close }
        }
    } else {
        EndKind::Clean {
            answered: live.peer_close.get().is_some(),
        }
    };
    let clean = matches!(kind, EndKind::Clean { .. });
    let tracker = live.tracker.borrow();
    Ended {
        sid: o.sid,
        counts: tracker.finish(live.sent.get(), clean),
        first_error: tracker.first_error.clone(),
        removed_user: shared.users().is_removed(o.user),
        kind,
    }
}

async fn read_loop(
    live: &Live,
    rd: &mut OwnedReadHalf<Transport>,
    reader: &mut FrameReader,
    sid: u32,
) {
    // Bounded by the peer: ends at EOF or an error (or the session is cut).
    loop {
        match reader.next(rd).await {
            Ok(Event::Message { payload, .. }) => {
                live.tracker
                    .borrow_mut()
                    .on_message(payload, sid, live.sent.get());
            }
            Ok(Event::Ping(_) | Event::Pong(_)) => {}
            Ok(Event::Close { code, .. }) => {
                if live.peer_close.get().is_none() {
                    live.peer_close.set(Some(code));
                    live.peer_ended();
                }
            }
            Err(WsError::Eof) => break,
            Err(WsError::Io(e)) => {
                *live.io_error.borrow_mut() = Some(e.kind().to_string());
                break;
            }
            Err(e) => {
                *live.io_error.borrow_mut() = Some(e.to_string());
                break;
            }
        }
        live.wake.notify();
    }
    live.peer_ended();
    live.reader_done.set(true);
    live.wake.notify();
}

#[allow(clippy::too_many_arguments)]
async fn write_loop(
    live: &Live,
    wr: &mut OwnedWriteHalf<Transport>,
    writer: &mut FrameWriter,
    cfg: &SessionConfig,
    shared: &Shared,
    plan: &Schedule,
    sid: u32,
    raw_fd: RawFd,
    cut: &Cell<bool>,
    rng: &mut Rng,
) {
    let period = dur_ns(cfg.period);
    let mut next = now_ns() + rng.next_u64() % period.max(1);
    let mut buf = Vec::with_capacity(HEADER_LEN + cfg.max_payload);
    // Bounded: the stop flag, the session's schedule or the peer's end.
    loop {
        if live.peer_first.get() {
            return answer_close(live, wr, writer).await;
        }
        let now = now_ns();
        if plan.rst_at.is_some_and(|r| now >= r) {
            set_linger_zero(raw_fd);
            cut.set(true);
            live.abort.notify();
            return;
        }
        if shared.stop.load(Ordering::Acquire) || plan.end_at.is_some_and(|e| now >= e) {
            return close_cleanly(live, wr, writer).await;
        }
        if now >= next {
            let len = (rng.next_u64() % (cfg.max_payload as u64 + 1)) as usize;
            message::build(&mut buf, sid, live.sent.get(), len);
            writer.push_message(opcode::BINARY, &buf);
            // Counted before the write completes: the echo may be read first.
            live.sent.set(live.sent.get() + 1);
            if !flush(wr, writer).await {
                // The reader sees the end; give it a moment to say how.
                live.wait_for(CLOSE_WAIT, |l| l.reader_done.get()).await;
                live.peer_ended();
                live.abort.notify();
                return;
            }
            // After a stall, carry on at the rate instead of catching up.
            next = (next + period).max(now);
            continue;
        }
        let wake_at = [Some(next), plan.rst_at, plan.end_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next)
            .min(now + dur_ns(TICK));
        monoio::select! {
            _ = monoio::time::sleep(Duration::from_nanos(wake_at.saturating_sub(now))) => {}
            _ = live.wake.notified() => {}
        }
    }
}

/// Writes what is queued; false when the write failed or stalled.
async fn flush(wr: &mut OwnedWriteHalf<Transport>, writer: &mut FrameWriter) -> bool {
    matches!(
        monoio::time::timeout(WRITE_STALL, writer.flush(wr)).await,
        Ok(Ok(()))
    )
}

/// The test's end of a session: wait for every echo, then a close handshake.
async fn close_cleanly(live: &Live, wr: &mut OwnedWriteHalf<Transport>, writer: &mut FrameWriter) {
    live.wait_for(DRAIN_WAIT, |l| {
        l.peer_first.get() || l.tracker.borrow().expected() >= l.sent.get()
    })
    .await;
    if live.peer_first.get() {
        return answer_close(live, wr, writer).await;
    }
    live.we_closed.set(true);
    writer.push_close(1000, "soak done");
    let _ = flush(wr, writer).await;
    if !live.wait_for(CLOSE_WAIT, |l| l.reader_done.get()).await {
        live.abort.notify();
    }
}

/// The peer ended first: answer its Close (if any) and wait for TCP close.
async fn answer_close(live: &Live, wr: &mut OwnedWriteHalf<Transport>, writer: &mut FrameWriter) {
    if let Some(code) = live.peer_close.get() {
        if !live.reader_done.get() {
            writer.push_close(code.unwrap_or(1000), "");
            let _ = flush(wr, writer).await;
        }
    }
    if !live.wait_for(CLOSE_WAIT, |l| l.reader_done.get()).await {
        live.abort.notify();
    }
}

/// Makes the next close of `fd` abortive (RST, no FIN).
fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is this session's open socket; the option value is a
    // valid `linger` of the size passed.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}
