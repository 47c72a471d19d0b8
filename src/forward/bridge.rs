//! The websockify-style bridge between a WebSocket and a TCP stream: each
//! data frame's payload goes to the stream, and stream bytes go back as
//! binary messages. Pings are answered, a Close becomes a FIN on the stream,
//! and the stream's FIN becomes a Close (1000). The relay runs it for
//! `tcp://` targets (server role: peer frames masked, ours not); the tunnel
//! client runs it toward the relay (client role: the reverse).
//!
//! The stream side is anything `ByteStream`: a TCP socket, or the pipe
//! into a reverse tunnel's multiplexer (`pipe.rs`), whose control session
//! also runs a keepalive (`Keepalive`).
//!
//! Owns the two pumps and the session-end policy of a bridged session.
//! Must not: allocate per message (pooled buffers, frames built in place),
//! queue without bound (each pump waits for its writer), or let two writers
//! interleave on the WebSocket (only the down pump writes to it while both
//! run).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use super::{ForwardCtx, Outcome};
use crate::endpoint::Endpoint;
use crate::net::event::Notify;
use crate::net::idle::idle_watch;
use crate::ws::decoder::Role as FrameRole;
use crate::ws::end::{verdict, Ended, Kind, Reply, Side};
use crate::ws::frame::{apply_mask, build_frame, encode_header, opcode, MAX_HEADER_LEN};
use crate::ws::message::{Message, MessageReader, Mode, ReadError};

/// How long the surviving side gets once the other has ended.
const LINGER: Duration = Duration::from_secs(1);
/// How long a half-closed session may sit with no byte moving (when no
/// idle timeout is configured).
const DRAIN_IDLE: Duration = Duration::from_secs(60);

/// Read size of a tunnel bridge, on the relay and in the tunnel client.
/// Each read leaves as one frame, and tunnels carry bulk (SSH, databases,
/// file copies): 64 KiB reads carried 1.4x the bytes of 16 KiB ones through
/// a forward tunnel (docs/tunnels.md "Tunnel performance"). Relayed WebSocket
/// sessions keep `server.buffer_size`, since a slow reader holds its buffer.
pub const BUFFER_BYTES: usize = 64 * 1024;
/// Tunnel buffers a shard or a tunnel client keeps for reuse.
pub const BUFFERS_KEPT: usize = 64;

/// The subprotocol websockify offers and accepts for raw binary frames.
pub const BINARY_PROTOCOL: &str = "binary";

/// The protocol to answer with: `binary` when the client offered it.
pub fn choose_protocol(offered: Option<&str>) -> Option<&'static str> {
    offered?
        .split(',')
        .any(|p| p.trim() == BINARY_PROTOCOL)
        .then_some(BINARY_PROTOCOL)
}

/// What the bridge carries WebSocket payloads to and from.
pub trait ByteStream {
    /// Waits until a read may make progress.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
    /// One non-blocking read: `Ok(Some(0))` = EOF, `Ok(None)` = nothing now.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
    fn write_all(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Ends our sending side (FIN).
    fn shutdown_write(&self) -> impl Future<Output = ()>;
}

impl ByteStream for Endpoint {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        Endpoint::readable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Endpoint::try_read(self, buf)
    }
    fn write_all(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>> {
        Endpoint::write_all(self, buf)
    }
    fn shutdown_write(&self) -> impl Future<Output = ()> {
        Endpoint::shutdown_write(self)
    }
}

impl ByteStream for super::pipe::WsEnd {
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        super::pipe::WsEnd::readable(self)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        super::pipe::WsEnd::try_read(self, buf)
    }
    fn write_all(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>> {
        super::pipe::WsEnd::write_all(self, buf)
    }
    async fn shutdown_write(&self) {
        super::pipe::WsEnd::shutdown_write(self)
    }
}

/// Pings the WebSocket peer every `interval`, and ends the session when
/// nothing at all has arrived from it for `dead_after`: a control session
/// whose peer vanished without a FIN (a cut link, a frozen NAT) is noticed
/// within that bound instead of never.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    pub interval: Duration,
    pub dead_after: Duration,
}

impl Keepalive {
    /// Three missed intervals mean the peer is gone.
    pub fn every(interval: Duration) -> Keepalive {
        Keepalive {
            interval,
            dead_after: interval * 3,
        }
    }
}

/// Which end of the WebSocket this side is.
#[derive(Clone, Copy)]
pub struct Role {
    /// Frames we send are masked (we are the WebSocket client).
    pub masks: bool,
    /// The two sides, as the session-end table names them.
    pub ws_peer: Side,
    pub stream: Side,
}

impl Role {
    /// The relay, serving a `tcp://` target to a WebSocket client.
    pub const RELAY: Role = Role {
        masks: false,
        ws_peer: Side::new("client", Kind::Client),
        stream: Side::new("target", Kind::Stream),
    };
    /// The tunnel client, carrying a local connection to the relay.
    pub const TUNNEL_CLIENT: Role = Role {
        masks: true,
        ws_peer: Side::new("server", Kind::Target),
        stream: Side::new("local", Kind::Stream),
    };
}

/// Masking keys from the system's CSPRNG (RFC 6455 §5.3), fetched 1 KiB at
/// a time so a frame costs no syscall.
struct Masks {
    pool: RefCell<([u8; 1024], usize)>,
}

impl Masks {
    fn new() -> Masks {
        Masks {
            pool: RefCell::new(([0; 1024], 1024)),
        }
    }

    fn next(&self) -> [u8; 4] {
        let mut p = self.pool.borrow_mut();
        if p.1 + 4 > p.0.len() {
            use ring::rand::SecureRandom;
            // A failing system RNG leaves the previous bytes: still masks.
            let _ = ring::rand::SystemRandom::new().fill(&mut p.0);
            p.1 = 0;
        }
        let at = p.1;
        p.1 += 4;
        [p.0[at], p.0[at + 1], p.0[at + 2], p.0[at + 3]]
    }
}

/// State the two pumps share.
struct Shared {
    role: Role,
    /// `Some` in the client role.
    masks: Option<Masks>,
    /// The latest Ping's payload, still to be answered (RFC 6455 §5.5.3
    /// allows answering only the most recent one).
    pong: RefCell<Option<([u8; 125], usize)>>,
    /// The keepalive wants a Ping sent.
    ping_due: Cell<bool>,
    /// When the WebSocket peer last sent anything (for the keepalive).
    heard: Cell<Instant>,
    /// The up pump tells the down pump to look again (pongs to send).
    wake_down: Notify,
    /// The down pump is halfway through a frame: nothing may be injected.
    mid_frame: Cell<bool>,
    /// The peer's Close arrived: its payload, echoed once the stream is done.
    peer_close: RefCell<Option<([u8; 125], usize)>>,
    /// Our Close went out.
    sent_close: Cell<bool>,
    /// A write to the stream failed: it is gone, and its EOF is no FIN to
    /// report as a clean "stream closed".
    stream_gone: Cell<bool>,
    clock: Cell<Instant>,
    up_bytes: Cell<u64>,
    down_bytes: Cell<u64>,
}

impl Shared {
    fn mask(&self) -> Option<[u8; 4]> {
        self.masks.as_ref().map(Masks::next)
    }

    fn touch(&self, counter: &Cell<u64>, n: usize) {
        counter.set(counter.get() + n as u64);
        self.clock.set(Instant::now());
    }
}

enum UpEnd {
    /// The peer's Close (its code, if it had one).
    Close(Option<u16>),
    Eof,
    ReadError(io::Error),
    /// Writing to the TCP service failed.
    TargetWrite(io::Error),
    Protocol(ReadError),
}

enum DownEnd {
    Eof,
    ReadError(io::Error),
    ClientWrite(io::Error),
}

enum First {
    Up(UpEnd),
    Down(DownEnd),
    Idle,
    Shutdown,
    /// The keepalive heard nothing for this long.
    Silent(Duration),
}

/// Bridges until the session ends. `early` holds client frames that
/// arrived with the auth message or the upgrade request.
pub async fn bridge(
    ctx: &ForwardCtx<'_>,
    role: Role,
    client: &Endpoint,
    tcp: &impl ByteStream,
    early: Vec<u8>,
    keepalive: Option<Keepalive>,
) -> Outcome {
    let st = Shared {
        role,
        masks: role.masks.then(Masks::new),
        pong: RefCell::new(None),
        ping_due: Cell::new(false),
        heard: Cell::new(Instant::now()),
        wake_down: Notify::default(),
        mid_frame: Cell::new(false),
        peer_close: RefCell::new(None),
        sent_close: Cell::new(false),
        stream_gone: Cell::new(false),
        clock: Cell::new(Instant::now()),
        up_bytes: Cell::new(0),
        down_bytes: Cell::new(0),
    };
    let mut up_f = pin!(up(ctx, client, tcp, &st, early));
    let mut down_f = pin!(down(ctx, client, tcp, &st));
    let first = monoio::select! {
        e = &mut up_f => First::Up(e),
        e = &mut down_f => First::Down(e),
        _ = idle_watch(&st.clock, ctx.idle_timeout) => First::Idle,
        _ = ctx.close_all.wait() => First::Shutdown,
        d = keep_alive(&st, keepalive) => First::Silent(d),
    };
    // Half-close: the peer's Close is a FIN toward the stream and the
    // stream's FIN is a Close toward the peer (sent by the down pump), while
    // the other direction keeps flowing until it ends as well.
    let draining = ctx.idle_timeout.or(Some(DRAIN_IDLE));
    let last = match &first {
        First::Up(UpEnd::Close(_)) => {
            tcp.shutdown_write().await;
            Some(monoio::select! {
                e = &mut down_f => First::Down(e),
                _ = idle_watch(&st.clock, draining) => First::Idle,
                _ = ctx.close_all.wait() => First::Shutdown,
            })
        }
        // The stream is gone (a write fails only after its reset), but
        // what it sent before going may still be unread: deliver that
        // before the Close that says it went away.
        First::Up(UpEnd::TargetWrite(_)) => {
            st.stream_gone.set(true);
            let _ = monoio::time::timeout(LINGER, &mut down_f).await;
            None
        }
        First::Down(DownEnd::Eof) => Some(monoio::select! {
            e = &mut up_f => First::Up(e),
            _ = idle_watch(&st.clock, draining) => First::Idle,
            _ = ctx.close_all.wait() => First::Shutdown,
        }),
        _ => None,
    };
    let v = verdict(&ended(&first, role));
    let (closed_by, reason) = (v.closed_by, v.reason);
    let last = last.as_ref().unwrap_or(&first);
    let last = verdict(&ended(last, role));
    tcp.shutdown_write().await;
    if !st.sent_close.get() && !st.mid_frame.get() {
        if let Some(frame) = reply_frame(last.reply_to(role.ws_peer), &st) {
            let _ = monoio::time::timeout(LINGER, client.write_all(&frame)).await;
        }
    }
    client.shutdown_write().await;
    let _ = monoio::time::timeout(LINGER, client.discard_until_eof(ctx.buffers)).await;
    Outcome {
        bytes_up: st.up_bytes.get(),
        bytes_down: st.down_bytes.get(),
        closed_by,
        reason,
    }
}

/// The Close frame a reply to the WebSocket peer is, if any.
fn reply_frame(reply: &Reply, st: &Shared) -> Option<Vec<u8>> {
    match reply {
        Reply::Nothing => None,
        Reply::Close(close) => Some(close.frame(st.mask())),
        Reply::Echo => {
            let echo = st.peer_close.borrow();
            let payload = echo.as_ref().map_or(&[][..], |(p, n)| &p[..*n]);
            Some(build_frame(opcode::CLOSE, payload, st.mask()))
        }
    }
}

/// How a bridged session's first (or last) event reads in the session-end
/// table.
fn ended(first: &First, role: Role) -> Ended<'_> {
    let (ws, stream) = (role.ws_peer, role.stream);
    match first {
        First::Up(UpEnd::Close(code)) => Ended::Close {
            by: ws,
            code: *code,
        },
        First::Up(UpEnd::Eof) => Ended::Eof {
            by: ws,
            clean: false,
        },
        First::Up(UpEnd::ReadError(error)) => Ended::ReadError { by: ws, error },
        First::Up(UpEnd::TargetWrite(error)) => Ended::WriteError { by: stream, error },
        First::Up(UpEnd::Protocol(error)) => Ended::Protocol { by: ws, error },
        First::Down(DownEnd::Eof) => Ended::Eof {
            by: stream,
            clean: false,
        },
        First::Down(DownEnd::ReadError(error)) => Ended::ReadError { by: stream, error },
        First::Down(DownEnd::ClientWrite(error)) => Ended::WriteError { by: ws, error },
        First::Idle => Ended::Idle,
        First::Shutdown => Ended::Shutdown,
        First::Silent(quiet) => Ended::Silent {
            by: ws,
            quiet: *quiet,
        },
    }
}

/// Asks the down pump for a Ping every interval; returns once the peer has
/// been silent for `dead_after`. Without a keepalive it never returns.
async fn keep_alive(st: &Shared, keepalive: Option<Keepalive>) -> Duration {
    let Some(k) = keepalive else {
        return std::future::pending().await;
    };
    loop {
        monoio::time::sleep(k.interval).await;
        if st.heard.get().elapsed() >= k.dead_after {
            return k.dead_after;
        }
        st.ping_due.set(true);
        st.wake_down.notify();
    }
}

/// Client → service: decode frames, unmask in place, write payloads.
async fn up(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    tcp: &impl ByteStream,
    st: &Shared,
    mut early: Vec<u8>,
) -> UpEnd {
    let role = match st.role.masks {
        false => FrameRole::FromClient,
        true => FrameRole::FromServer,
    };
    // Data streams straight through; nothing is buffered, so no limit.
    let mut dec = MessageReader::new(role, Mode::Stream, 0);
    if let Some(end) = feed(&mut dec, &mut early, tcp, st).await {
        return end;
    }
    drop(early);
    loop {
        if let Err(e) = client.readable().await {
            return UpEnd::ReadError(e);
        }
        let mut buf = ctx.buffers.borrow();
        loop {
            let n = match client.try_read(&mut buf) {
                Ok(Some(0)) => return UpEnd::Eof,
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return UpEnd::ReadError(e),
            };
            st.heard.set(Instant::now());
            if let Some(end) = feed(&mut dec, &mut buf[..n], tcp, st).await {
                return end;
            }
            if n < buf.len() {
                break;
            }
        }
    }
}

/// Handles one chunk of client bytes; `Some` when the session must end.
async fn feed(
    dec: &mut MessageReader,
    chunk: &mut [u8],
    tcp: &impl ByteStream,
    st: &Shared,
) -> Option<UpEnd> {
    let mut pos = 0;
    loop {
        match dec.next(chunk, &mut pos) {
            Err(e) => return Some(UpEnd::Protocol(e)),
            Ok(None) => return None,
            Ok(Some(Message::Data { start, end })) => {
                if let Err(e) = tcp.write_all(&chunk[start..end]).await {
                    return Some(UpEnd::TargetWrite(e));
                }
                st.touch(&st.up_bytes, end - start);
            }
            Ok(Some(Message::Ping(p))) => {
                let mut copy = [0u8; 125];
                copy[..p.len()].copy_from_slice(p);
                *st.pong.borrow_mut() = Some((copy, p.len()));
                st.wake_down.notify();
                st.clock.set(Instant::now());
            }
            Ok(Some(Message::Close { code, payload })) => {
                let mut copy = [0u8; 125];
                copy[..payload.len()].copy_from_slice(payload);
                *st.peer_close.borrow_mut() = Some((copy, payload.len()));
                return Some(UpEnd::Close(code));
            }
            Ok(Some(Message::Pong(_))) => st.clock.set(Instant::now()),
            // A data frame's header: its payload touches the clock.
            Ok(Some(_)) => {}
        }
    }
}

/// Service → client: each read leaves as one binary frame, its header
/// written into the buffer just before the payload.
async fn down(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    tcp: &impl ByteStream,
    st: &Shared,
) -> DownEnd {
    loop {
        monoio::select! {
            r = tcp.readable() => {
                if let Err(e) = r {
                    return DownEnd::ReadError(e);
                }
            }
            _ = st.wake_down.notified() => {}
        }
        if let Err(e) = send_control(client, st).await {
            return DownEnd::ClientWrite(e);
        }
        let mut buf = ctx.buffers.borrow();
        loop {
            let n = match tcp.try_read(&mut buf[MAX_HEADER_LEN..]) {
                Ok(Some(0)) if st.stream_gone.get() => return DownEnd::Eof,
                Ok(Some(0)) => {
                    // The stream's FIN: our Close, the peer's own echoed
                    // when it closed first.
                    let end = match st.peer_close.borrow().is_some() {
                        true => Ended::Close {
                            by: st.role.ws_peer,
                            code: None,
                        },
                        false => Ended::Eof {
                            by: st.role.stream,
                            clean: false,
                        },
                    };
                    let v = verdict(&end);
                    if let Some(frame) = reply_frame(v.reply_to(st.role.ws_peer), st) {
                        if let Err(e) = client.write_all(&frame).await {
                            return DownEnd::ClientWrite(e);
                        }
                        st.sent_close.set(true);
                    }
                    return DownEnd::Eof;
                }
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return DownEnd::ReadError(e),
            };
            let mut header = [0u8; MAX_HEADER_LEN];
            let mask = st.mask();
            let h = encode_header(&mut header, true, opcode::BINARY, n as u64, mask);
            if let Some(m) = mask {
                apply_mask(&mut buf[MAX_HEADER_LEN..MAX_HEADER_LEN + n], m, 0);
            }
            let start = MAX_HEADER_LEN - h;
            buf[start..MAX_HEADER_LEN].copy_from_slice(&header[..h]);
            st.mid_frame.set(true);
            if let Err(e) = client.write_all(&buf[start..MAX_HEADER_LEN + n]).await {
                return DownEnd::ClientWrite(e);
            }
            st.mid_frame.set(false);
            st.touch(&st.down_bytes, n);
            if MAX_HEADER_LEN + n < buf.len() {
                break;
            }
        }
    }
}

/// Sends what the up pump and the keepalive asked for: a Pong, a Ping.
async fn send_control(client: &Endpoint, st: &Shared) -> io::Result<()> {
    send_pong(client, st).await?;
    if st.ping_due.replace(false) {
        let ping = build_frame(opcode::PING, &[], st.mask());
        st.mid_frame.set(true);
        client.write_all(&ping).await?;
        st.mid_frame.set(false);
    }
    Ok(())
}

async fn send_pong(client: &Endpoint, st: &Shared) -> io::Result<()> {
    let Some((payload, len)) = st.pong.borrow_mut().take() else {
        return Ok(());
    };
    let mut frame = [0u8; MAX_HEADER_LEN + 125];
    // The client role masks every frame it sends, control frames included
    // (RFC 6455 §5.3): the relay refuses an unmasked one.
    let mask = st.mask();
    let h = encode_header(
        (&mut frame[..MAX_HEADER_LEN])
            .try_into()
            .expect("header space"),
        true,
        opcode::PONG,
        len as u64,
        mask,
    );
    frame[h..h + len].copy_from_slice(&payload[..len]);
    if let Some(m) = mask {
        apply_mask(&mut frame[h..h + len], m, 0);
    }
    st.mid_frame.set(true);
    client.write_all(&frame[..h + len]).await?;
    st.mid_frame.set(false);
    Ok(())
}
