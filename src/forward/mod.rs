//! The data plane, shared by the relay, routes and tunnels: moving bytes
//! between a session's two sockets once it is open, and ending it.
//!
//! - This file: passthrough, for a WebSocket on both sides. Bytes move both
//!   ways untouched (`copy` and `splice` are the two pumps) until one side
//!   ends, then the other side is ended the way docs/relay.md "Session end"
//!   says: never hiding what a peer said (its Close frame, or its reset).
//!   Owns session-end policy (who closed, which Close frame to inject, half
//!   close and linger). Must not re-frame or inspect payloads. The pumps:
//!   `copy` (readiness, then `recv(2)` into a pooled buffer), `ring` (a
//!   multishot receive that takes buffers from the shard's ring) and
//!   `splice`.
//! - `bridge`: a WebSocket on one side, a byte stream on the other
//!   (`tcp://` targets on the relay, the tunnel client's forwards).
//! - `mux`, `pipe`: yamux over a bridged WebSocket, for reverse tunnels
//!   (the relay's `publish://` side and the tunnel client's side).

pub mod bridge;
mod copy;
pub mod mux;
pub mod pipe;
mod ring;
mod splice;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::time::{Duration, Instant};

use monoio::buf_ring::BufRing;

use crate::config::{ForwardMode, ServerConfig};
use crate::endpoint::Endpoint;
use crate::metrics::{Direction as MetricsDirection, ShardMetrics};
use crate::net::event::Event;
use crate::net::idle::idle_watch;
use crate::net::pool::{BufferPool, PipePool};
use crate::net::ring::RecvRing;
use crate::ws::decoder::Decoder;
use crate::ws::end::{verdict, Ended, Kind, Reply, Side, Verdict, SPLICE_EOF};

/// How long the surviving side gets to finish once the other has ended.
const LINGER: Duration = Duration::from_secs(1);

/// Fixed masking key for Close frames the relay sends to targets. Masking
/// exists to stop cache poisoning by scripted browsers; a relay-built control
/// frame with fixed content gives an attacker nothing to steer.
const RELAY_MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x2e];

/// One direction's state, kept outside the pump futures so it survives them.
pub struct Direction<'a> {
    /// The side whose bytes flow in this direction.
    source: &'static str,
    pub bytes: Cell<u64>,
    /// Set while a chunk is partially written: not a frame boundary.
    pub mid_write: Cell<bool>,
    /// Asks the pump to return once its write in flight is done.
    pub stop: Cell<bool>,
    /// `None` in splice mode (bytes never reach user space).
    pub tracker: Option<RefCell<Decoder>>,
    /// Session-wide: the side whose Close frame went by first.
    first_close: &'a Cell<Option<&'static str>>,
    /// The shard's counter for this direction (`/metrics`).
    shard_total: &'a Cell<u64>,
}

impl<'a> Direction<'a> {
    fn new(
        tracker: Option<Decoder>,
        source: &'static str,
        first_close: &'a Cell<Option<&'static str>>,
        shard_total: &'a Cell<u64>,
    ) -> Self {
        Direction {
            source,
            bytes: Cell::new(0),
            mid_write: Cell::new(false),
            stop: Cell::new(false),
            tracker: tracker.map(RefCell::new),
            first_close,
            shard_total,
        }
    }

    /// Records bytes fully written to the destination.
    pub fn passed(&self, bytes: &[u8], clock: &Cell<Instant>) {
        if let Some(t) = &self.tracker {
            let mut t = t.borrow_mut();
            t.observe(bytes);
            if t.saw_close() && self.first_close.get().is_none() {
                self.first_close.set(Some(self.source));
            }
        }
        self.count(bytes.len(), clock);
    }

    pub fn count(&self, n: usize, clock: &Cell<Instant>) {
        self.bytes.set(self.bytes.get() + n as u64);
        self.shard_total.set(self.shard_total.get() + n as u64);
        clock.set(Instant::now());
    }

    /// Between frames, with nothing half written (copy mode only).
    pub fn at_frame_boundary(&self) -> bool {
        !self.mid_write.get()
            && self
                .tracker
                .as_ref()
                .is_some_and(|t| t.borrow().at_frame_boundary())
    }

    /// True when a frame may be injected into this direction's stream.
    fn injectable(&self) -> bool {
        self.at_frame_boundary() && !self.saw_close()
    }

    fn saw_close(&self) -> bool {
        self.tracker
            .as_ref()
            .is_some_and(|t| t.borrow().saw_close())
    }
}

/// Why a pump stopped.
#[derive(Debug)]
pub enum PumpEnd {
    Eof,
    ReadError(io::Error),
    WriteError(io::Error),
    /// Returned after `Direction::stop` was set, at a write boundary.
    Stopped,
    /// The destination is a TLS 1.2 session near its record limit; returned
    /// at a frame boundary.
    RecordLimit,
}

/// What a session end looked like, for the session-end log line.
#[derive(Debug)]
pub struct Outcome {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub closed_by: &'static str,
    pub reason: String,
}

/// Everything passthrough needs from its shard.
pub struct ForwardCtx<'a> {
    /// Requested mode; `splice` applies only when neither side is TLS,
    /// `ring` to directions whose source is plain TCP, with a ring.
    pub mode: ForwardMode,
    pub buffers: &'a BufferPool,
    /// The shard's provided-buffer ring (`ring` mode; it may have none).
    pub ring: &'a RecvRing,
    pub pipes: &'a PipePool,
    pub idle_timeout: Option<Duration>,
    /// Fired when the shard's shutdown grace is over.
    pub close_all: &'a Event,
    /// The two ends negotiated an extension (routes only; the relay
    /// negotiates none), so frames may carry RSV bits.
    pub reserved_bits: bool,
    /// The shard's byte counters, client→target and target→client.
    pub relayed: [&'a Cell<u64>; 2],
}

impl<'a> ForwardCtx<'a> {
    /// What a session forwards with: its shard's pools, byte counters and
    /// shutdown event (`metrics`, `buffers`, `pipes`, `close_all`), and the
    /// session's forward mode and idle timeout from `cfg`.
    pub fn new(
        cfg: &ServerConfig,
        metrics: &'a ShardMetrics,
        buffers: &'a BufferPool,
        ring: &'a RecvRing,
        pipes: &'a PipePool,
        close_all: &'a Event,
    ) -> ForwardCtx<'a> {
        ForwardCtx {
            relayed: [
                metrics.bytes_cell(MetricsDirection::ClientToTarget),
                metrics.bytes_cell(MetricsDirection::TargetToClient),
            ],
            mode: cfg.forward,
            buffers,
            ring,
            pipes,
            idle_timeout: (cfg.idle_timeout_secs > 0)
                .then(|| Duration::from_secs(cfg.idle_timeout_secs)),
            close_all,
            reserved_bits: false,
        }
    }

    /// `splice` applies only between two plain TCP sockets.
    fn splices(&self, a: &Endpoint, b: &Endpoint) -> bool {
        self.mode == ForwardMode::Splice && !a.is_tls() && !b.is_tls()
    }

    /// The ring a direction reading from `src` receives through, if any.
    fn ring_for(&self, src: &Endpoint) -> Option<(&'a RecvRing, &'a BufRing)> {
        if self.mode != ForwardMode::Ring || src.is_tls() {
            return None;
        }
        Some((self.ring, self.ring.get()?))
    }
}

enum First {
    Up(PumpEnd),
    Down(PumpEnd),
    Idle,
    Shutdown,
}

/// Relays until the session ends. `up_seen`/`down_seen` are bytes already
/// relayed during the handshakes, so frame tracking starts in step; they are
/// freed before the first wait so an idle session holds no buffer.
pub async fn passthrough(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    target: &Endpoint,
    up_seen: Vec<u8>,
    down_seen: Vec<u8>,
) -> Outcome {
    let splice = ctx.splices(client, target);
    let tracker = || {
        (!splice).then(|| match ctx.reserved_bits {
            true => Decoder::passthrough().allowing_reserved_bits(),
            false => Decoder::passthrough(),
        })
    };
    let first_close = Cell::new(None);
    let up = Direction::new(tracker(), "client", &first_close, ctx.relayed[0]);
    let down = Direction::new(tracker(), "target", &first_close, ctx.relayed[1]);
    let clock = Cell::new(Instant::now());
    up.passed(&up_seen, &clock);
    down.passed(&down_seen, &clock);
    drop((up_seen, down_seen));

    // Pinned here rather than inside `select!`, so the pump that has not
    // ended survives it: it may be partway through a write (bytes already
    // read, a TLS record half sent), and dropping it would cut that write.
    let mut up_pump = pin!(pump(ctx, splice, client, target, &up, &clock));
    let mut down_pump = pin!(pump(ctx, splice, target, client, &down, &clock));
    let first = monoio::select! {
        r = &mut up_pump => First::Up(r),
        r = &mut down_pump => First::Down(r),
        _ = idle_watch(&clock, ctx.idle_timeout) => First::Idle,
        _ = ctx.close_all.wait() => First::Shutdown,
    };
    // The end runs once per session: boxed, so what it needs (closing
    // writes, TLS close_notify, lingering reads) is not carried by every
    // idle session's future.
    let ends = Box::pin(finish(
        ctx,
        first,
        splice,
        client,
        target,
        (up_pump, &up),
        (down_pump, &down),
    ));
    let v = ends.await;
    let (ended_by, reason) = (v.closed_by, v.reason);
    Outcome {
        bytes_up: up.bytes.get(),
        bytes_down: down.bytes.get(),
        // Whoever sent the first Close frame closed the session; otherwise
        // whoever ended first. Splice sees no frames: after a clean close
        // handshake the target's FIN comes first whoever started it, so an
        // EOF there names nobody.
        closed_by: match first_close.get() {
            Some(side) => side,
            None if splice && ended_by != "relay" && reason.starts_with(SPLICE_EOF) => "unknown",
            None => ended_by,
        },
        reason,
    }
}

/// Ends the session after the `first` thing that happened, the way the
/// session-end table says (`ws/end.rs`), and returns the verdict.
async fn finish<F: Future<Output = PumpEnd>>(
    ctx: &ForwardCtx<'_>,
    first: First,
    splice: bool,
    client: &Endpoint,
    target: &Endpoint,
    (up_pump, up): Rest<'_, '_, F>,
    (down_pump, down): Rest<'_, '_, F>,
) -> Verdict {
    match first {
        // TLS 1.2 cannot rekey: end the session while records are left for
        // a Close 1001 and a close_notify, as for a shutdown.
        First::Up(PumpEnd::RecordLimit) | First::Down(PumpEnd::RecordLimit) => {
            let v = verdict(&Ended::RecordLimit);
            settle_both(up_pump, up, down_pump, down).await;
            close_both(ctx, client, down, target, up, &v.to_other).await;
            v
        }
        First::Idle | First::Shutdown => {
            let v = verdict(match first {
                First::Idle => &Ended::Idle,
                _ => &Ended::Shutdown,
            });
            settle_both(up_pump, up, down_pump, down).await;
            close_both(ctx, client, down, target, up, &v.to_other).await;
            v
        }
        // A failed write names the side written to: that peer is gone
        // (a write fails only after its reset), but what it sent before
        // going may still be unread, its Close frame among them.
        First::Up(PumpEnd::WriteError(e)) => {
            let v = verdict(&Ended::WriteError {
                by: TARGET,
                error: &e,
            });
            let rest = (down_pump, down);
            let notice = (&v.to_other, None);
            after_failed_write(ctx, rest, client, target, write_was_reset(&e), notice).await;
            v
        }
        First::Down(PumpEnd::WriteError(e)) => {
            let v = verdict(&Ended::WriteError {
                by: CLIENT,
                error: &e,
            });
            let rest = (up_pump, up);
            let notice = (&v.to_other, Some(RELAY_MASK));
            after_failed_write(ctx, rest, target, client, write_was_reset(&e), notice).await;
            v
        }
        First::Up(end) => {
            let v = verdict(&ended(CLIENT, &end, up.saw_close(), splice));
            let rest = (down_pump, down);
            let notice = (&v.to_other, Some(RELAY_MASK));
            end_side(ctx, &end, up, target, rest, client, notice).await;
            v
        }
        First::Down(end) => {
            let v = verdict(&ended(TARGET, &end, down.saw_close(), splice));
            let rest = (up_pump, up);
            let notice = (&v.to_other, None);
            end_side(ctx, &end, down, client, rest, target, notice).await;
            v
        }
    }
}

async fn pump(
    ctx: &ForwardCtx<'_>,
    splice: bool,
    src: &Endpoint,
    dst: &Endpoint,
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> PumpEnd {
    if splice {
        return splice::pump(src.stream(), dst.stream(), ctx.pipes, dir, clock).await;
    }
    match ctx.ring_for(src) {
        Some(ring) => ring::pump(src, dst, ring, ctx.buffers, dir, clock).await,
        None => copy::pump(src, dst, ctx.buffers, dir, clock).await,
    }
}

/// Writes one chunk a pump read and records it. `Some` when the pump ends
/// here: the write failed, a stop was asked for, or a TLS 1.2 destination
/// is near its record limit at a frame boundary.
async fn deliver(
    dst: &Endpoint,
    bytes: &[u8],
    dir: &Direction<'_>,
    clock: &Cell<Instant>,
) -> Option<PumpEnd> {
    dir.mid_write.set(true);
    if let Err(e) = dst.write_all(bytes).await {
        return Some(PumpEnd::WriteError(e));
    }
    dir.mid_write.set(false);
    dir.passed(bytes, clock);
    if dir.stop.get() {
        return Some(PumpEnd::Stopped);
    }
    if dst.nearing_record_limit() && dir.at_frame_boundary() {
        return Some(PumpEnd::RecordLimit);
    }
    None
}

/// The two sides of a passthrough session, for the session-end table.
const CLIENT: Side = Side::new("client", Kind::Client);
const TARGET: Side = Side::new("target", Kind::Target);

/// How one direction's end reads in the session-end table. (A failed
/// write is the other side's end, and a stop only follows the first end.)
fn ended<'e>(by: Side, end: &'e PumpEnd, clean: bool, splice: bool) -> Ended<'e> {
    match end {
        PumpEnd::Eof if splice && !clean => Ended::Unframed { by },
        PumpEnd::Eof | PumpEnd::Stopped => Ended::Eof { by, clean },
        PumpEnd::ReadError(error) => Ended::ReadError { by, error },
        PumpEnd::WriteError(error) => Ended::WriteError { by, error },
        PumpEnd::RecordLimit => Ended::RecordLimit,
    }
}

/// What the surviving peer is told when the other vanished without a
/// word (the session-end table's `to_other`), and the mask our frames to
/// it need (we are the WebSocket client toward the target).
type Notice<'v> = (&'v Reply, Option<[u8; 4]>);

/// The pump still running when the other ended, and its direction.
type Rest<'p, 'd, F> = (Pin<&'p mut F>, &'p Direction<'d>);

/// A read that failed because the peer reset the connection.
fn read_was_reset(end: &PumpEnd) -> bool {
    matches!(end, PumpEnd::ReadError(e) if e.kind() == io::ErrorKind::ConnectionReset)
}

/// A write fails with "connection reset" when the peer reset an open
/// connection. A reset that answers our write to a peer that had already
/// sent its FIN (a process that exited, whose kernel then refuses our
/// bytes) is reported as "broken pipe" (Linux `tcp_reset` in CLOSE_WAIT):
/// that peer ended with a FIN, without a word, not with a reset.
fn write_was_reset(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ConnectionReset
}

/// One direction (`ended`, whose source `gone` is finished) stopped. Tell
/// the other peer: after a close handshake, a FIN and a chance to finish
/// (the other pump goes on, bounded); otherwise, once the other pump's
/// write in flight is done, what `close_toward` decides.
async fn end_side<F: Future<Output = PumpEnd>>(
    ctx: &ForwardCtx<'_>,
    end: &PumpEnd,
    ended: &Direction<'_>,
    peer: &Endpoint,
    (other_pump, other): Rest<'_, '_, F>,
    gone: &Endpoint,
    notice: Notice<'_>,
) {
    let clean = matches!(end, PumpEnd::Eof) && ended.saw_close();
    if clean {
        // Half-close: the peer's reply Close may still be in flight.
        peer.shutdown_write().await;
        let _ = monoio::time::timeout(LINGER, other_pump).await;
        answer_close(gone).await;
        return;
    }
    settle(other_pump, other).await;
    close_toward(ctx, ended, peer, gone, read_was_reset(end), notice).await;
}

/// The pump toward `gone` failed a write, so `gone` is gone. Its last words
/// may still wait in our receive queue (a peer that sends Close and then
/// resets: the RST overtakes nothing, the bytes stay readable), so the pump
/// toward `survivor` runs on to its own end, bounded, before the survivor
/// is told anything. (The failed pump has completed and must not be polled
/// again, so this is not `end_side`.)
///
/// A socket reports a reset once: to whichever call comes first. With a
/// receive posted in the ring, that is the read, and the write then fails
/// with "broken pipe"; so a read that ends in a reset counts as `gone`'s
/// reset too.
async fn after_failed_write<F: Future<Output = PumpEnd>>(
    ctx: &ForwardCtx<'_>,
    (toward_survivor, dir): Rest<'_, '_, F>,
    survivor: &Endpoint,
    gone: &Endpoint,
    write_reset: bool,
    notice: Notice<'_>,
) {
    let end = monoio::time::timeout(LINGER, toward_survivor).await;
    let reset = write_reset || end.as_ref().is_ok_and(read_was_reset);
    close_toward(ctx, dir, survivor, gone, reset, notice).await;
}

/// `gone` ended without a close handshake; end `peer`'s side, never
/// speaking for a peer that said something:
/// - a Close frame already went to `peer` (`dir` saw it): a FIN after it;
/// - `gone` reset the connection with no Close: `peer` gets a reset too,
///   after what was already written to it (what `peer` would have seen
///   without the relay: Autobahn's servers fail connections this way);
/// - `gone` vanished without a word (FIN, or an error): the relay's
///   `notice` where a frame boundary allows it, then a FIN.
///
/// After a FIN to `peer`, `gone` gets our close and `peer`'s remaining
/// bytes are read and dropped until its EOF.
async fn close_toward(
    ctx: &ForwardCtx<'_>,
    dir: &Direction<'_>,
    peer: &Endpoint,
    gone: &Endpoint,
    reset: bool,
    (reply, mask): Notice<'_>,
) {
    if reset && !dir.saw_close() {
        peer.reset(LINGER).await;
        return;
    }
    if let (true, Reply::Close(close)) = (dir.injectable(), reply) {
        let frame = close.frame(mask);
        let _ = monoio::time::timeout(LINGER, peer.write_all(&frame)).await;
    }
    peer.shutdown_write().await;
    answer_close(gone).await;
    let _ = monoio::time::timeout(LINGER, peer.discard_until_eof(ctx.buffers)).await;
}

/// Lets a pump that is partway through a write finish it, bounded by
/// `LINGER`, and stop there: bytes it already read are delivered and no TLS
/// record is cut short. A pump waiting for input holds nothing and is
/// simply dropped. Past `LINGER` (a peer that stopped reading) the write is
/// abandoned; that peer is being closed anyway.
async fn settle<F: Future<Output = PumpEnd>>(pump: Pin<&mut F>, dir: &Direction<'_>) {
    if !dir.mid_write.get() {
        return;
    }
    dir.stop.set(true);
    let _ = monoio::time::timeout(LINGER, pump).await;
}

async fn settle_both<A, B>(
    a: Pin<&mut A>,
    a_dir: &Direction<'_>,
    b: Pin<&mut B>,
    b_dir: &Direction<'_>,
) where
    A: Future<Output = PumpEnd>,
    B: Future<Output = PumpEnd>,
{
    monoio::join!(settle(a, a_dir), settle(b, b_dir));
}

/// Ends our side toward the peer that ended first: over TLS its
/// close_notify gets ours (RFC 8446 §6.1; OpenSSL reports a bare FIN as
/// `UNEXPECTED_EOF_WHILE_READING`), then a FIN. Bounded: that peer may have
/// stopped reading.
async fn answer_close(gone: &Endpoint) {
    let _ = monoio::time::timeout(LINGER, gone.shutdown_write()).await;
}

/// The relay ends the session itself (idle, shutdown): 1001 both ways where
/// frame boundaries allow, FIN both ways, then wait briefly for the peers.
async fn close_both(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    down: &Direction<'_>,
    target: &Endpoint,
    up: &Direction<'_>,
    reply: &Reply,
) {
    if let Reply::Close(close) = reply {
        if down.injectable() {
            let frame = close.frame(None);
            let _ = monoio::time::timeout(LINGER, client.write_all(&frame)).await;
        }
        if up.injectable() {
            let frame = close.frame(Some(RELAY_MASK));
            let _ = monoio::time::timeout(LINGER, target.write_all(&frame)).await;
        }
    }
    client.shutdown_write().await;
    target.shutdown_write().await;
    let drain = async {
        let a = client.discard_until_eof(ctx.buffers);
        let b = target.discard_until_eof(ctx.buffers);
        monoio::join!(a, b);
    };
    let _ = monoio::time::timeout(LINGER, drain).await;
}
