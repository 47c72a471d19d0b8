//! The echo target: a WebSocket server (plain or TLS) that sends every data
//! frame back unmasked, frame by frame, answers pings and closes, serves
//! `GET /health`, and can stand in for a distant target (`--delay-ms`, a
//! pipelined delay line, not a slow server). For testing the checker it can
//! also inject faults: corrupt, drop or duplicate every Nth message, and
//! ping the client every N messages.
//!
//! This file owns the sockets: the upgrade, the read/echo/write loops and
//! the end of a connection (after the last Close: FIN, then drain, so the
//! peer is never left hanging nor reset). What is echoed, and when the
//! connection must fail (RFC 6455 conformance), is [`super::echoer`]'s.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;

use super::delay::{self, DelayLine};
pub use super::echoer::{EchoOptions, Faults};
use super::echoer::{Echoer, Step};
use super::{Running, ServerError};
use crate::clock::{dur_ns, now_ns};
use crate::rt::ThreadPlan;
use crate::ws::handshake::{self, HandshakeError, Request};

const MAX_HEAD: usize = 8 * 1024;
const BUF: usize = 64 * 1024;
/// Bytes a delayed connection may hold in its delay line.
const DELAY_LINE_LIMIT: usize = 64 * 1024 * 1024;
/// How long a connection waits for the peer's end of TCP after the last
/// Close frame before dropping it anyway.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Per-connection errors (logged nowhere: a mock target just hangs up).
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Starts the echo server on `addr` (port 0: a free one).
pub fn start(
    addr: SocketAddr,
    plan: &ThreadPlan,
    tls: Option<Arc<rustls::ServerConfig>>,
    opts: EchoOptions,
    exit_after: Option<Duration>,
) -> Result<Running, ServerError> {
    let opts = Arc::new(opts);
    super::serve(addr, plan, "echo", exit_after, move |stream: TcpStream| {
        let opts = Rc::new((*opts).clone());
        let tls = tls.clone();
        async move {
            let _ = match tls {
                Some(cfg) => match monoio_rustls::TlsAcceptor::from(cfg).accept(stream).await {
                    Ok(s) => serve_conn(s, &opts).await,
                    Err(_) => return,
                },
                None => serve_conn(stream, &opts).await,
            };
        }
    })
}

async fn serve_conn<S>(mut io: S, opts: &EchoOptions) -> Result<(), EchoError>
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let mut buf = Vec::with_capacity(BUF);
    let head_len = handshake::read_head(&mut io, &mut buf, MAX_HEAD).await?;
    let mut out = Vec::with_capacity(512);
    match handshake::parse_request(&buf[..head_len])? {
        Request::Upgrade { key, .. } => handshake::write_switching(&mut out, &key),
        Request::Get { path } if path == "/health" => {
            handshake::write_simple(
                &mut out,
                200,
                "OK",
                "application/json",
                r#"{"status":"ok"}"#,
            );
        }
        Request::Get { .. } => handshake::write_simple(
            &mut out,
            426,
            "Upgrade Required",
            "text/plain",
            "loadgen echo server: WebSocket upgrade required\n",
        ),
        Request::Other => handshake::write_simple(
            &mut out,
            405,
            "Method Not Allowed",
            "text/plain",
            "GET only\n",
        ),
    }
    let upgraded = out.starts_with(b"HTTP/1.1 101");
    let (res, _) = io.write_all(out).await;
    res?;
    if !upgraded {
        return Ok(());
    }
    buf.drain(..head_len);
    let echoer = Echoer::new(opts);
    if opts.delay.is_zero() {
        echo_direct(io, buf, echoer).await
    } else {
        echo_delayed(io, buf, echoer, dur_ns(opts.delay)).await
    }
}

/// Echo with no delay: read, transform, write, in one loop.
async fn echo_direct<S>(
    mut io: S,
    mut input: Vec<u8>,
    mut echoer: Echoer<'_>,
) -> Result<(), EchoError>
where
    S: AsyncReadRent + AsyncWriteRent,
{
    let mut out = Vec::with_capacity(BUF);
    // Bounded by the peer: ends at a close frame, EOF or an error.
    loop {
        let step = echoer.process(&mut input, &mut out);
        if !out.is_empty() {
            let (res, o) = io.write_all(out).await;
            out = o;
            out.clear();
            res?;
        }
        if step != Step::Open {
            let _ = io.shutdown().await;
            linger(&mut io, input).await;
            return Ok(());
        }
        match handshake::read_more(&mut io, &mut input, 4096).await {
            Ok(_) => {}
            Err(HandshakeError::Eof) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Echo through a delay line: each read's answer is written `delay_ns`
/// after the read completed, while later reads proceed.
async fn echo_delayed<S>(
    io: S,
    mut input: Vec<u8>,
    mut echoer: Echoer<'_>,
    delay_ns: u64,
) -> Result<(), EchoError>
where
    S: AsyncReadRent + AsyncWriteRent + Split,
{
    let (mut rd, mut wr) = io.into_split();
    let line = DelayLine::new(DELAY_LINE_LIMIT);
    let producer = async {
        let mut read_at = now_ns();
        // Ok(true): a Close went into the line (answer or failure).
        let r: Result<bool, EchoError> = async {
            loop {
                let mut out = line.buffer();
                let step = echoer.process(&mut input, &mut out);
                if out.is_empty() {
                    line.recycle(out);
                } else {
                    line.push(read_at + delay_ns, out).await;
                }
                if step != Step::Open {
                    return Ok(true);
                }
                match handshake::read_more(&mut rd, &mut input, 4096).await {
                    Ok(_) => read_at = now_ns(),
                    Err(HandshakeError::Eof) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        .await;
        line.close();
        r
    };
    let consumer = delay::drain(&line, &mut wr);
    let (p, c) = monoio::join!(producer, consumer);
    let closing = p?;
    c?;
    if closing {
        let _ = wr.shutdown().await;
        linger(&mut rd, input).await;
    }
    Ok(())
}

/// After the last Close frame is written and writes are shut down: read and
/// discard until the peer closes too, for at most [`CLOSE_LINGER`]. Closing
/// a socket with unread input sends an RST instead of a FIN, and an RST can
/// destroy the Close frame before the peer has read it.
async fn linger<R: AsyncReadRent>(rd: &mut R, mut buf: Vec<u8>) {
    let discard = async {
        // Bounded by the peer's EOF or an error, and by the timeout around.
        loop {
            buf.clear();
            if handshake::read_more(rd, &mut buf, 4096).await.is_err() {
                return;
            }
        }
    };
    let _ = monoio::time::timeout(CLOSE_LINGER, discard).await;
}
