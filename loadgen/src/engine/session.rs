//! One measuring connection: a writer (closed loop with a window, or paced
//! open loop), a reader that checks every echo and records latencies, and a
//! watchdog that stops waiting for echoes that do not come. The three run
//! as futures of one task on the connection's thread and share state
//! through `Cell`s; the hot loops reuse their buffers and never allocate.
//!
//! The end is a close handshake started by the writer once every message is
//! echoed (or given up on): the reader keeps checking data until the peer's
//! close arrives, so even a duplicate of the very last message is caught.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;
use monoio::io::{OwnedReadHalf, OwnedWriteHalf, Splitable};

use crate::client::{Connection, Event, FrameReader, FrameWriter, Transport, WsError};
use crate::clock::{now_ns, PreciseTimer};
use crate::payload::{Checker, PayloadBuilder, Verdict};
use crate::stats::{new_hist, ErrorCounts};
use ws_relay_core::net::event::Notify;
use ws_relay_core::ws::frame::opcode;

/// Most bytes queued per write.
const BATCH_BYTES: usize = 64 * 1024;
/// Most messages queued per write.
const BATCH_MSGS: u64 = 256;
/// A paced message is sent early rather than sleeping for less than this.
const EARLY_NS: u64 = 10_000;
/// Sends later than this behind schedule count as late.
pub const LATE_NS: u64 = 100_000;
/// How long to wait for the peer's close reply.
const CLOSE_WAIT_NS: u64 = 1_000_000_000;

/// How the writer sends.
#[derive(Debug, Clone, Copy)]
pub enum Policy {
    /// At most `window` messages in flight; stop after `total` messages or at `until_ns`.
    Closed {
        window: u64,
        total: Option<u64>,
        until_ns: Option<u64>,
        /// Echoes of sequence numbers below this are checked but not recorded.
        warmup: u64,
    },
    /// Message `i` is due at `first_ns + i * period_ns`, until `until_ns`;
    /// at most `max_in_flight` outstanding.
    Paced {
        first_ns: u64,
        period_ns: f64,
        until_ns: u64,
        max_in_flight: u64,
    },
}

/// Latency recorders shared by the connections of one thread.
#[derive(Debug)]
pub struct Recorder {
    /// Closed loop: from the send time. Paced: from the intended send time.
    pub latency: Histogram<u64>,
    /// Paced only: from the actual send time (no coordinated-omission correction).
    pub raw: Option<Histogram<u64>>,
}

impl Recorder {
    pub fn new(paced: bool) -> Self {
        Self {
            latency: new_hist(),
            raw: paced.then(new_hist),
        }
    }
}

/// What one connection did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub conn_id: u32,
    pub sent: u64,
    /// Data messages received, good or bad.
    pub received: u64,
    /// Intact echoes (in order, or after a gap).
    pub verified: u64,
    /// Intact echoes received before the end of the measured period.
    pub in_window: u64,
    pub errors: ErrorCounts,
    /// Paced: messages due before the end (sent or not).
    pub scheduled: u64,
    pub late_sends: u64,
    pub max_lag_ns: u64,
}

/// Shared state of the three futures.
#[derive(Default)]
struct Flow {
    sent: Cell<u64>,
    acked: Cell<u64>,
    released: Cell<u64>,
    writer_done: Cell<bool>,
    /// When our close frame went out (0: not yet).
    close_sent_ns: Cell<u64>,
    stop: Cell<bool>,
    last_progress_ns: Cell<u64>,
    room: Notify,
    pong: RefCell<Option<([u8; 125], usize)>>,
    received: Cell<u64>,
    verified: Cell<u64>,
    in_window: Cell<u64>,
    late_sends: Cell<u64>,
    max_lag_ns: Cell<u64>,
    errors: RefCell<ErrorCounts>,
}

impl Flow {
    fn in_flight(&self) -> u64 {
        self.sent
            .get()
            .saturating_sub(self.acked.get().max(self.released.get()))
    }

    fn halt(&self) {
        self.stop.set(true);
        self.room.notify();
    }

    fn fail(&self, what: String) {
        let mut e = self.errors.borrow_mut();
        e.protocol += 1;
        e.note(|| what);
        drop(e);
        self.halt();
    }

    fn take_pong(&self, w: &mut FrameWriter) {
        if let Some((p, n)) = self.pong.borrow_mut().take() {
            w.push_control(opcode::PONG, &p[..n]);
        }
    }
}

/// Runs one connection to completion and closes it.
pub async fn run(
    conn: Connection,
    conn_id: u32,
    size: usize,
    policy: Policy,
    timeout: Duration,
    recorder: &RefCell<Recorder>,
) -> Outcome {
    let Connection {
        io,
        mut reader,
        mut writer,
        ..
    } = conn;
    let (mut rd, mut wr) = io.into_split();
    let flow = Flow::default();
    flow.last_progress_ns.set(now_ns());
    let timeout_ns = crate::clock::dur_ns(timeout);
    let mut builder = PayloadBuilder::new(conn_id, size);
    let mut checker = Checker::new(conn_id, size);
    let (until, warmup) = match policy {
        Policy::Closed {
            until_ns, warmup, ..
        } => (until_ns, warmup),
        Policy::Paced { until_ns, .. } => (Some(until_ns), 0),
    };
    let hard_deadline = until.map(|u| u + 2 * timeout_ns + 1_000_000_000);

    let work = async {
        let w = async {
            let r = match policy {
                Policy::Closed {
                    window,
                    total,
                    until_ns,
                    ..
                } => {
                    write_closed(
                        &flow,
                        &mut wr,
                        &mut writer,
                        &mut builder,
                        window,
                        total,
                        until_ns,
                    )
                    .await
                }
                Policy::Paced {
                    first_ns,
                    period_ns,
                    until_ns,
                    max_in_flight,
                } => {
                    write_paced(
                        &flow,
                        &mut wr,
                        &mut writer,
                        &mut builder,
                        (first_ns, period_ns, until_ns),
                        max_in_flight,
                    )
                    .await
                }
            };
            let r = match r {
                Ok(()) => finish(&flow, &mut wr, &mut writer).await,
                Err(e) => Err(e),
            };
            flow.writer_done.set(true);
            if let Err(e) = r {
                flow.fail(format!("connection {conn_id}: write failed: {e}"));
            }
        };
        let r = async {
            let paced = matches!(policy, Policy::Paced { .. });
            let ctx = ReadCtx {
                flow: &flow,
                recorder,
                paced,
                warmup,
                until,
            };
            if let Err(e) = read_loop(&ctx, &mut rd, &mut reader, &mut checker).await {
                if flow.close_sent_ns.get() == 0 {
                    flow.fail(format!("connection {conn_id}: {e}"));
                } else {
                    // Closing anyway; a peer that hangs up instead of
                    // answering our close is not an error of the run.
                    flow.halt();
                }
            }
        };
        monoio::join!(w, r);
    };
    monoio::select! {
        _ = work => {}
        _ = watchdog(&flow, timeout_ns, hard_deadline) => {}
    }

    let mut errors = flow.errors.take();
    let missing = flow.sent.get().saturating_sub(checker.expected());
    if missing > 0 {
        errors.lost += missing;
        errors.note(|| format!("connection {conn_id}: {missing} message(s) never echoed"));
    }
    errors.recompute_total();
    Outcome {
        conn_id,
        sent: flow.sent.get(),
        received: flow.received.get(),
        verified: flow.verified.get(),
        in_window: flow.in_window.get(),
        errors,
        scheduled: match policy {
            Policy::Paced {
                first_ns,
                period_ns,
                until_ns,
                ..
            } => (until_ns.saturating_sub(first_ns) as f64 / period_ns).ceil() as u64,
            Policy::Closed { .. } => 0,
        },
        late_sends: flow.late_sends.get(),
        max_lag_ns: flow.max_lag_ns.get(),
    }
}

async fn write_closed(
    flow: &Flow,
    wr: &mut OwnedWriteHalf<Transport>,
    writer: &mut FrameWriter,
    builder: &mut PayloadBuilder,
    window: u64,
    total: Option<u64>,
    until_ns: Option<u64>,
) -> Result<(), WsError> {
    let per_batch = (BATCH_BYTES as u64 / builder_size(builder)).clamp(1, BATCH_MSGS);
    loop {
        let sent = flow.sent.get();
        let now = now_ns();
        if flow.stop.get() || total.is_some_and(|t| sent >= t) || until_ns.is_some_and(|u| now >= u)
        {
            return Ok(());
        }
        let room = window.saturating_sub(flow.in_flight());
        if room == 0 {
            flow.take_pong(writer);
            writer.flush(wr).await?;
            flow.room.notified().await;
            continue;
        }
        let mut n = room.min(per_batch);
        if let Some(t) = total {
            n = n.min(t - sent);
        }
        for seq in sent..sent + n {
            writer.push_message(opcode::BINARY, builder.build(seq, now, now));
        }
        flow.take_pong(writer);
        // Count before writing: the echo may be read before the write returns.
        flow.sent.set(sent + n);
        if sent == flow.acked.get().max(flow.released.get()) {
            flow.last_progress_ns.set(now);
        }
        writer.flush(wr).await?;
    }
}

async fn write_paced(
    flow: &Flow,
    wr: &mut OwnedWriteHalf<Transport>,
    writer: &mut FrameWriter,
    builder: &mut PayloadBuilder,
    (first_ns, period_ns, until_ns): (u64, f64, u64),
    max_in_flight: u64,
) -> Result<(), WsError> {
    let mut timer = PreciseTimer::new()?;
    let due = |i: u64| first_ns + (i as f64 * period_ns) as u64;
    let per_batch = (BATCH_BYTES as u64 / builder_size(builder)).clamp(1, BATCH_MSGS);
    loop {
        let next = flow.sent.get();
        let intended = due(next);
        // The run ends at `until_ns` in wall time too: messages still due
        // then were never sent (the report shows scheduled vs sent).
        if flow.stop.get() || intended >= until_ns || now_ns() >= until_ns {
            return Ok(());
        }
        if intended > now_ns() + EARLY_NS {
            flow.take_pong(writer);
            writer.flush(wr).await?;
            timer.sleep_until(intended).await?;
            continue;
        }
        let room = max_in_flight.saturating_sub(flow.in_flight());
        if room == 0 {
            flow.take_pong(writer);
            writer.flush(wr).await?;
            flow.room.notified().await;
            continue;
        }
        let now = now_ns();
        let mut n = 0;
        while n < room.min(per_batch) {
            let t = due(next + n);
            if t >= until_ns || t > now + EARLY_NS {
                break;
            }
            let lag = now.saturating_sub(t);
            if lag > LATE_NS {
                flow.late_sends.set(flow.late_sends.get() + 1);
            }
            flow.max_lag_ns.set(flow.max_lag_ns.get().max(lag));
            writer.push_message(opcode::BINARY, builder.build(next + n, now, t.min(now)));
            n += 1;
        }
        flow.take_pong(writer);
        if next == flow.acked.get().max(flow.released.get()) {
            flow.last_progress_ns.set(now);
        }
        flow.sent.set(next + n);
        writer.flush(wr).await?;
    }
}

/// After the last send: wait (answering pings) until every message is
/// echoed or given up on by the watchdog, then start the close handshake.
async fn finish(
    flow: &Flow,
    wr: &mut OwnedWriteHalf<Transport>,
    writer: &mut FrameWriter,
) -> Result<(), WsError> {
    flow.writer_done.set(true);
    while !flow.stop.get() && flow.in_flight() > 0 {
        flow.take_pong(writer);
        writer.flush(wr).await?;
        flow.room.notified().await;
    }
    if flow.stop.get() {
        return Ok(());
    }
    flow.take_pong(writer);
    writer.push_close(1000, "");
    flow.close_sent_ns.set(now_ns());
    writer.flush(wr).await?;
    Ok(())
}

fn builder_size(b: &PayloadBuilder) -> u64 {
    b.size() as u64 + 14
}

struct ReadCtx<'a> {
    flow: &'a Flow,
    recorder: &'a RefCell<Recorder>,
    paced: bool,
    warmup: u64,
    until: Option<u64>,
}

async fn read_loop(
    ctx: &ReadCtx<'_>,
    rd: &mut OwnedReadHalf<Transport>,
    reader: &mut FrameReader,
    checker: &mut Checker,
) -> Result<(), WsError> {
    let flow = ctx.flow;
    // Bounded: ends at the peer's close, on stop, or when the watchdog
    // gives up (it drops this future).
    loop {
        if flow.stop.get() {
            return Ok(());
        }
        match reader.next(rd).await? {
            Event::Message {
                opcode,
                payload,
                arrived_ns: now,
            } => {
                flow.received.set(flow.received.get() + 1);
                let verdict = checker.check(payload, flow.sent.get());
                account(ctx, verdict, opcode, now);
                flow.acked.set(checker.expected());
                flow.last_progress_ns.set(now);
                flow.room.notify();
            }
            Event::Ping(p) => {
                let mut slot = [0u8; 125];
                slot[..p.len()].copy_from_slice(p);
                *flow.pong.borrow_mut() = Some((slot, p.len()));
                flow.room.notify();
            }
            Event::Pong(_) => {}
            Event::Close { .. } if flow.close_sent_ns.get() != 0 => return Ok(()),
            Event::Close { code, reason } => {
                flow.fail(format!(
                    "peer sent close (code {}, {:?}) in the middle of the run",
                    code.map_or("none".to_string(), |c| c.to_string()),
                    String::from_utf8_lossy(reason)
                ));
                return Ok(());
            }
        }
    }
}

fn account(ctx: &ReadCtx<'_>, verdict: Verdict, opcode: u8, now: u64) {
    let flow = ctx.flow;
    let mut errors = flow.errors.borrow_mut();
    let (echo, lost) = match verdict {
        Verdict::Ok(e) => (e, 0),
        Verdict::Gap { echo, lost } => (echo, lost),
        Verdict::Duplicate { seq } => {
            errors.duplicated += 1;
            errors.note(|| format!("message {seq} echoed twice"));
            return;
        }
        Verdict::Corrupt { reason, lost } => {
            errors.corrupted += 1;
            errors.lost += lost;
            errors.note(|| format!("corrupted echo: {reason}"));
            return;
        }
        Verdict::Unexpected { reason } => {
            errors.unexpected += 1;
            errors.note(|| format!("unexpected echo: {reason}"));
            return;
        }
    };
    if lost > 0 {
        errors.lost += lost;
        errors.note(|| format!("{lost} message(s) before {} never echoed", echo.seq));
    }
    if opcode != opcode::BINARY {
        errors.corrupted += 1;
        errors.note(|| format!("message {} came back as {opcode:?}", echo.seq));
        return;
    }
    drop(errors);
    flow.verified.set(flow.verified.get() + 1);
    if ctx.until.is_none_or(|u| now <= u) {
        flow.in_window.set(flow.in_window.get() + 1);
    }
    if echo.seq < ctx.warmup {
        return;
    }
    let mut rec = ctx.recorder.borrow_mut();
    if ctx.paced {
        rec.latency
            .saturating_record(now.saturating_sub(echo.intended_ns).max(1));
        if let Some(raw) = rec.raw.as_mut() {
            raw.saturating_record(now.saturating_sub(echo.sent_ns).max(1));
        }
    } else {
        rec.latency
            .saturating_record(now.saturating_sub(echo.sent_ns).max(1));
    }
}

/// Releases a stalled writer after `timeout_ns` without progress; ends the
/// run when the peer does not answer our close, or at the hard deadline.
async fn watchdog(flow: &Flow, timeout_ns: u64, hard_deadline: Option<u64>) {
    let tick = Duration::from_nanos((timeout_ns / 4).clamp(1_000_000, 50_000_000));
    loop {
        monoio::time::sleep(tick).await;
        if flow.stop.get() {
            return;
        }
        let now = now_ns();
        let closing_since = flow.close_sent_ns.get();
        if hard_deadline.is_some_and(|d| now > d)
            || (closing_since != 0 && now.saturating_sub(closing_since) > CLOSE_WAIT_NS)
        {
            flow.halt();
            return;
        }
        let stalled =
            flow.in_flight() > 0 && now.saturating_sub(flow.last_progress_ns.get()) > timeout_ns;
        if stalled {
            flow.errors.borrow_mut().timeouts += 1;
            flow.released.set(flow.sent.get());
            flow.last_progress_ns.set(now);
            flow.room.notify();
        }
    }
}
