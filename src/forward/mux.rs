//! yamux over a reverse tunnel's control session: the session itself (the
//! bridge and yamux, joined by a pipe), the connection settings both ends
//! share, driving the connection, opening streams, and carrying one stream
//! to and from one TCP connection.
//!
//! yamux (one byte stream, many streams, a credit window per stream) runs
//! on the pipe end (`pipe::MuxEnd`); the bridge frames its bytes as binary
//! WebSocket messages. Must not: call `poll_new_outbound` past the stream
//! limit (yamux answers that by tearing the whole connection down; see
//! `StreamSlots`), or hold the connection borrowed across an await.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::time::Duration;

use futures_util::{AsyncRead, AsyncWrite};
use tracing::warn;
use yamux::{Config, Connection, ConnectionError, Mode, Stream};

use super::bridge::{bridge, ByteStream, Keepalive, Role};
use super::pipe::{self, MuxEnd};
use super::{ForwardCtx, Outcome};
use crate::endpoint::Endpoint;
use crate::http::head::RequestHead;

/// The request header in which the client announces its keepalive interval
/// (seconds); the relay pings at the same rate and gives up after three.
pub const KEEPALIVE_HEADER: &str = "x-relay-keepalive";
pub const DEFAULT_KEEPALIVE_SECS: u64 = 10;

/// A keepalive interval within what both ends accept: 1–300 s.
pub fn keepalive_secs(asked: u64) -> u64 {
    asked.clamp(1, 300)
}

/// The keepalive the client asked for, within bounds.
pub fn keepalive(head: &RequestHead) -> Keepalive {
    let secs = head
        .header(KEEPALIVE_HEADER)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_KEEPALIVE_SECS, keepalive_secs);
    Keepalive::every(Duration::from_secs(secs))
}

/// Streams one control session may carry at once. yamux's own limit sits
/// above it, so a stream dropped but not yet reaped cannot trip yamux.
pub const MAX_STREAMS: usize = 256;
const YAMUX_MAX_STREAMS: usize = 2 * MAX_STREAMS;
/// yamux's initial per-stream window; the connection-wide cap bounds what
/// a peer can make us buffer.
const STREAM_WINDOW: usize = 256 * 1024;
/// Per direction of a carried stream.
const COPY_BUFFER: usize = 16 * 1024;
/// Bytes buffered each way between the bridge and yamux.
const PIPE_BYTES: usize = 256 * 1024;

pub type Mux = Connection<MuxEnd>;

/// The relay opens streams (one per public connection), the client accepts
/// them; the two modes differ only in stream-id parity.
pub const RELAY_MODE: Mode = Mode::Server;
pub const CLIENT_MODE: Mode = Mode::Client;

/// Runs a control session on the WebSocket `ws` until it ends: the bridge
/// (keepalive included) carries yamux's bytes, while `work`, given the
/// connection, drives it and opens or accepts streams. When yamux ends
/// first, its pipe end closes and the bridge finishes with a Close.
pub async fn control_session<F>(
    ctx: &ForwardCtx<'_>,
    (role, mode): (Role, Mode),
    ws: &Endpoint,
    early: Vec<u8>,
    keepalive: Keepalive,
    work: impl FnOnce(Rc<RefCell<Mux>>) -> F,
) -> Outcome
where
    F: Future<Output = Option<ConnectionError>>,
{
    let (ws_end, mux_end) = pipe::pair(PIPE_BYTES);
    let conn = Rc::new(RefCell::new(Connection::new(mux_end, config(), mode)));
    let mut session = pin!(bridge(ctx, role, ws, &ws_end, early, Some(keepalive)));
    let ended = {
        let work = work(conn.clone());
        monoio::select! {
            out = &mut session => Some(out),
            e = work => {
                if let Some(e) = e {
                    warn!("reverse tunnel: multiplexer ended: {e}");
                }
                None
            }
        }
    };
    match ended {
        Some(out) => out,
        None => {
            drop(conn);
            session.await
        }
    }
}

fn config() -> Config {
    let mut cfg = Config::default();
    cfg.set_max_connection_receive_window(Some(YAMUX_MAX_STREAMS * STREAM_WINDOW));
    cfg.set_max_num_streams(YAMUX_MAX_STREAMS);
    cfg
}

/// Drives the connection (every frame in and out moves only while this is
/// polled), handing each stream the peer opens to `on_stream`. Returns when
/// the connection has ended.
pub async fn drive(
    conn: &RefCell<Mux>,
    mut on_stream: impl FnMut(Stream),
) -> Option<ConnectionError> {
    loop {
        match poll_fn(|cx| conn.borrow_mut().poll_next_inbound(cx)).await {
            None => return None,
            Some(Err(e)) => return Some(e),
            Some(Ok(s)) => on_stream(s),
        }
    }
}

/// Opens a stream toward the peer (no round trip: data may follow at once).
pub async fn open(conn: &RefCell<Mux>) -> Result<Stream, ConnectionError> {
    let mut s = poll_fn(|cx| conn.borrow_mut().poll_new_outbound(cx)).await?;
    // yamux sends a stream's SYN with its first frame. An empty data frame
    // sends it now, so the peer dials its local service at once even when
    // the public side waits for the service to speak first (SSH banners,
    // SMTP, MySQL, VNC).
    poll_fn(|cx| Pin::new(&mut s).poll_write(cx, &[]))
        .await
        .map_err(|_| ConnectionError::Closed)?;
    Ok(s)
}

/// Counts the streams a session carries; a slot is held for a stream's
/// whole life.
#[derive(Clone, Default)]
pub struct StreamSlots(Rc<Cell<usize>>);

pub struct Slot(Rc<Cell<usize>>);

impl StreamSlots {
    pub fn claim(&self) -> Option<Slot> {
        let n = self.0.get();
        (n < MAX_STREAMS).then(|| {
            self.0.set(n + 1);
            Slot(self.0.clone())
        })
    }

    pub fn open(&self) -> usize {
        self.0.get()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// Bytes a carried stream moved: TCP → stream, stream → TCP.
#[derive(Debug, Default, Clone, Copy)]
pub struct Carried {
    pub from_tcp: u64,
    pub to_tcp: u64,
}

/// Copies both ways until both have ended: the TCP side's FIN closes the
/// stream's sending half (a yamux FIN), and the stream's end shuts down the
/// TCP side's writing half, so half-closed protocols work.
pub async fn carry(stream: Stream, tcp: &impl ByteStream) -> (Carried, Option<io::Error>) {
    let stream = RefCell::new(stream);
    let counts = Cell::new(Carried::default());
    let to_tcp = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            let n =
                poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf)).await?;
            if n == 0 {
                tcp.shutdown_write().await;
                return Ok::<_, io::Error>(());
            }
            tcp.write_all(&buf[..n]).await?;
            let mut c = counts.get();
            c.to_tcp += n as u64;
            counts.set(c);
        }
    };
    let from_tcp = async {
        let mut buf = vec![0u8; COPY_BUFFER];
        loop {
            tcp.readable().await?;
            while let Some(n) = tcp.try_read(&mut buf)? {
                if n == 0 {
                    poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_close(cx)).await?;
                    return Ok::<_, io::Error>(());
                }
                write_all(&stream, &buf[..n]).await?;
                let mut c = counts.get();
                c.from_tcp += n as u64;
                counts.set(c);
            }
        }
    };
    let result = futures_util::future::try_join(to_tcp, from_tcp).await;
    (counts.get(), result.err())
}

async fn write_all(stream: &RefCell<Stream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, buf)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
    }
    Ok(())
}
