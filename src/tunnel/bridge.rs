//! The websockify-style bridge for `tcp://` targets: each client data
//! frame's payload goes to the TCP stream, and stream bytes come back as
//! binary messages. Pings are answered, a client Close becomes a FIN toward
//! the service, and the service's FIN becomes a Close (1000) to the client.
//!
//! Owns the two pumps and the session-end policy of a bridged session.
//! Must not: allocate per message (pooled buffers, frames built in place),
//! queue without bound (each pump waits for its writer), or let two writers
//! interleave on the client (only the down pump writes to it while both run).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::decode::{DecodeError, Decoder, Piece};
use crate::net::endpoint::Endpoint;
use crate::relay::forward::{discard_until_eof, idle_watch, ForwardCtx, Outcome};
use crate::ws::frame::{
    build_frame, close_code, close_frame, encode_header, opcode, MAX_HEADER_LEN,
};

/// How long the surviving side gets once the other has ended.
const LINGER: Duration = Duration::from_secs(1);
/// RFC 6455 §7.4.1: protocol error.
const PROTOCOL_ERROR: u16 = 1002;
/// RFC 6455 §7.4.1: the Close frame carried no code.
const NO_STATUS: u16 = 1005;

/// A re-armable wake-up from the up pump to the down pump (pongs to send).
#[derive(Default)]
struct Notify {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    fn notify(&self) {
        self.set.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn notified(&self) -> Notified<'_> {
        Notified(self)
    }
}

struct Notified<'a>(&'a Notify);

impl Future for Notified<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.set.replace(false) {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// State the two pumps share.
struct Shared {
    /// The latest Ping's payload, still to be answered (RFC 6455 §5.5.3
    /// allows answering only the most recent one).
    pong: RefCell<Option<([u8; 125], usize)>>,
    wake_down: Notify,
    /// The down pump is halfway through a frame: nothing may be injected.
    mid_frame: Cell<bool>,
    clock: Cell<Instant>,
    up_bytes: Cell<u64>,
    down_bytes: Cell<u64>,
}

impl Shared {
    fn touch(&self, counter: &Cell<u64>, n: usize) {
        counter.set(counter.get() + n as u64);
        self.clock.set(Instant::now());
    }
}

enum UpEnd {
    Close(u16),
    Eof,
    ReadError(io::Error),
    /// Writing to the TCP service failed.
    TargetWrite(io::Error),
    Protocol(DecodeError),
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
}

/// Bridges until the session ends. `early` holds client frames that
/// arrived with the auth message or the upgrade request.
pub async fn bridge(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    tcp: &Endpoint,
    early: Vec<u8>,
) -> Outcome {
    let st = Shared {
        pong: RefCell::new(None),
        wake_down: Notify::default(),
        mid_frame: Cell::new(false),
        clock: Cell::new(Instant::now()),
        up_bytes: Cell::new(0),
        down_bytes: Cell::new(0),
    };
    let first = monoio::select! {
        e = up(ctx, client, tcp, &st, early) => First::Up(e),
        e = down(ctx, client, tcp, &st) => First::Down(e),
        _ = idle_watch(&st.clock, ctx.idle_timeout) => First::Idle,
        _ = ctx.close_all.wait() => First::Shutdown,
    };
    let (closed_by, reason, close) = match first {
        First::Up(UpEnd::Close(code)) => (
            "client",
            "close handshake".to_string(),
            Some((echo_code(code), "")),
        ),
        First::Up(UpEnd::Eof) => (
            "client",
            "client disconnected without a close frame".into(),
            None,
        ),
        First::Up(UpEnd::ReadError(e)) => ("client", format!("client connection error: {e}"), None),
        First::Up(UpEnd::TargetWrite(e)) => (
            "target",
            format!("write to the TCP service failed: {e}"),
            Some((close_code::BAD_GATEWAY, "target went away")),
        ),
        First::Up(UpEnd::Protocol(e)) => (
            "relay",
            format!("client protocol error: {e}"),
            Some((PROTOCOL_ERROR, "protocol error")),
        ),
        First::Down(DownEnd::Eof) => (
            "target",
            "TCP service closed the connection".into(),
            Some((1000, "target closed")),
        ),
        First::Down(DownEnd::ReadError(e)) => (
            "target",
            format!("TCP service connection error: {e}"),
            Some((close_code::BAD_GATEWAY, "target went away")),
        ),
        First::Down(DownEnd::ClientWrite(e)) => {
            ("client", format!("write to the client failed: {e}"), None)
        }
        First::Idle => (
            "relay",
            "idle timeout".into(),
            Some((close_code::GOING_AWAY, "idle timeout")),
        ),
        First::Shutdown => (
            "relay",
            "shutdown".into(),
            Some((close_code::GOING_AWAY, "server shutting down")),
        ),
    };
    // FIN toward the service in every case: a client Close maps to it.
    tcp.shutdown_write().await;
    if let Some((code, why)) = close.filter(|_| !st.mid_frame.get()) {
        // A Close without a code is answered with one without a code.
        let frame = match code {
            NO_STATUS => build_frame(opcode::CLOSE, &[], None),
            _ => close_frame(code, why, None),
        };
        let _ = monoio::time::timeout(LINGER, client.write_all(&frame)).await;
    }
    client.shutdown_write().await;
    let _ = monoio::time::timeout(LINGER, discard_until_eof(client, ctx.buffers)).await;
    Outcome {
        bytes_up: st.up_bytes.get(),
        bytes_down: st.down_bytes.get(),
        closed_by,
        reason,
    }
}

/// The code to answer a client's Close with: its own, unless it may not be
/// sent on the wire (1005, 1006, 1015, or out of range).
fn echo_code(code: u16) -> u16 {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 | NO_STATUS => code,
        _ => 1000,
    }
}

/// Client → service: decode frames, unmask in place, write payloads.
async fn up(
    ctx: &ForwardCtx<'_>,
    client: &Endpoint,
    tcp: &Endpoint,
    st: &Shared,
    mut early: Vec<u8>,
) -> UpEnd {
    let mut dec = Decoder::default();
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
async fn feed(dec: &mut Decoder, chunk: &mut [u8], tcp: &Endpoint, st: &Shared) -> Option<UpEnd> {
    let mut pos = 0;
    loop {
        match dec.next(chunk, &mut pos) {
            Err(e) => return Some(UpEnd::Protocol(e)),
            Ok(None) => return None,
            Ok(Some(Piece::Data { start, end })) => {
                if let Err(e) = tcp.write_all(&chunk[start..end]).await {
                    return Some(UpEnd::TargetWrite(e));
                }
                st.touch(&st.up_bytes, end - start);
            }
            Ok(Some(Piece::Ping)) => {
                let p = dec.control_payload();
                let mut copy = [0u8; 125];
                copy[..p.len()].copy_from_slice(p);
                *st.pong.borrow_mut() = Some((copy, p.len()));
                st.wake_down.notify();
                st.clock.set(Instant::now());
            }
            Ok(Some(Piece::Pong)) => st.clock.set(Instant::now()),
            Ok(Some(Piece::Close(code))) => return Some(UpEnd::Close(code)),
        }
    }
}

/// Service → client: each read leaves as one binary frame, its header
/// written into the buffer just before the payload.
async fn down(ctx: &ForwardCtx<'_>, client: &Endpoint, tcp: &Endpoint, st: &Shared) -> DownEnd {
    loop {
        monoio::select! {
            r = tcp.readable() => {
                if let Err(e) = r {
                    return DownEnd::ReadError(e);
                }
            }
            _ = st.wake_down.notified() => {}
        }
        if let Err(e) = send_pong(client, st).await {
            return DownEnd::ClientWrite(e);
        }
        let mut buf = ctx.buffers.borrow();
        loop {
            let n = match tcp.try_read(&mut buf[MAX_HEADER_LEN..]) {
                Ok(Some(0)) => return DownEnd::Eof,
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => return DownEnd::ReadError(e),
            };
            let mut header = [0u8; MAX_HEADER_LEN];
            let h = encode_header(&mut header, true, opcode::BINARY, n as u64, None);
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

async fn send_pong(client: &Endpoint, st: &Shared) -> io::Result<()> {
    let Some((payload, len)) = st.pong.borrow_mut().take() else {
        return Ok(());
    };
    let mut frame = [0u8; MAX_HEADER_LEN + 125];
    let h = encode_header(
        (&mut frame[..MAX_HEADER_LEN])
            .try_into()
            .expect("header space"),
        true,
        opcode::PONG,
        len as u64,
        None,
    );
    frame[h..h + len].copy_from_slice(&payload[..len]);
    st.mid_frame.set(true);
    client.write_all(&frame[..h + len]).await?;
    st.mid_frame.set(false);
    Ok(())
}
