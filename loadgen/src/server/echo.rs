//! The echo target: a WebSocket server (plain or TLS) that sends every data
//! frame back unmasked, frame by frame, answers pings and closes, serves
//! `GET /health`, and can stand in for a distant target (`--delay-ms`, a
//! pipelined delay line, not a slow server). For testing the checker it can
//! also inject faults: corrupt, drop or duplicate every Nth message, and
//! ping the client every N messages.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Split, Splitable};
use monoio::net::TcpStream;

use super::delay::{self, DelayLine};
use super::{Running, ServerError};
use crate::clock::{dur_ns, now_ns};
use crate::rt::ThreadPlan;
use crate::ws::frame::{mask_copy, parse_header, write_header, FrameError, OpCode};
use crate::ws::handshake::{self, HandshakeError, Request};

const MAX_HEAD: usize = 8 * 1024;
const BUF: usize = 64 * 1024;
/// Bytes a delayed connection may hold in its delay line.
const DELAY_LINE_LIMIT: usize = 64 * 1024 * 1024;

/// Deliberate misbehaviour, for testing that loadgen notices it.
/// Each value N > 0 applies to messages N, 2N, 3N, ... of a connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Flip one bit in the middle of the payload.
    pub corrupt_every: u64,
    /// Do not echo the message.
    pub drop_every: u64,
    /// Echo the message twice (single-frame messages only).
    pub duplicate_every: u64,
}

/// Echo behaviour.
#[derive(Debug, Clone)]
pub struct EchoOptions {
    /// Answer each message this long after it arrived (pipelined).
    pub delay: Duration,
    pub faults: Faults,
    /// Send a ping to the client after every N echoed messages (0 = never).
    pub ping_every: u64,
    /// Largest frame payload accepted.
    pub max_frame: usize,
}

impl Default for EchoOptions {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            faults: Faults::default(),
            ping_every: 0,
            max_frame: 64 * 1024 * 1024,
        }
    }
}

/// Per-connection errors (logged nowhere: a mock target just hangs up).
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Frame(#[from] FrameError),
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
    // Bounded by the peer: ends at its close frame, EOF or an error.
    loop {
        let closed = echoer.process(&mut input, &mut out)?;
        if !out.is_empty() {
            let (res, o) = io.write_all(out).await;
            out = o;
            out.clear();
            res?;
        }
        if closed {
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
        let r: Result<(), EchoError> = async {
            loop {
                let mut out = line.buffer();
                let closed = echoer.process(&mut input, &mut out)?;
                if out.is_empty() {
                    line.recycle(out);
                } else {
                    line.push(read_at + delay_ns, out).await;
                }
                if closed {
                    return Ok(());
                }
                match handshake::read_more(&mut rd, &mut input, 4096).await {
                    Ok(_) => read_at = now_ns(),
                    Err(HandshakeError::Eof) => return Ok(()),
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
    p?;
    c?;
    Ok(())
}

/// The frame-by-frame echo transformation and fault injection.
struct Echoer<'a> {
    opts: &'a EchoOptions,
    /// Data messages completed so far on this connection.
    messages: u64,
    dropping: bool,
    corrupt_pending: bool,
    duplicate: bool,
    pings_sent: u64,
}

fn nth(every: u64, n: u64) -> bool {
    every > 0 && n % every == 0
}

impl<'a> Echoer<'a> {
    fn new(opts: &'a EchoOptions) -> Self {
        Self {
            opts,
            messages: 0,
            dropping: false,
            corrupt_pending: false,
            duplicate: false,
            pings_sent: 0,
        }
    }

    /// Consumes every complete frame at the front of `input` and appends the
    /// answers to `out`. True once a close frame has been answered.
    fn process(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, FrameError> {
        let mut pos = 0;
        let mut closed = false;
        while let Some(h) = parse_header(&input[pos..], self.opts.max_frame)? {
            if input.len() - pos < h.frame_len() {
                // Make room for the rest of a large frame in one go.
                input.reserve(h.frame_len() - (input.len() - pos));
                break;
            }
            let key = h.mask.ok_or(FrameError::UnmaskedFromClient)?;
            let payload = &input[pos + h.header_len..pos + h.frame_len()];
            pos += h.frame_len();
            match h.opcode {
                OpCode::Ping => emit(out, true, OpCode::Pong, payload, key),
                OpCode::Pong => {}
                OpCode::Close => {
                    // Echo the status code back (RFC 6455 §5.5.1).
                    let n = payload.len().min(2);
                    emit(out, true, OpCode::Close, &payload[..n], key);
                    closed = true;
                    break;
                }
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    self.data_frame(h.fin, h.opcode, payload, key, out)
                }
            }
        }
        input.drain(..pos);
        Ok(closed)
    }

    fn data_frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
        key: [u8; 4],
        out: &mut Vec<u8>,
    ) {
        let f = self.opts.faults;
        if opcode != OpCode::Continuation {
            let n = self.messages + 1;
            self.dropping = nth(f.drop_every, n);
            self.corrupt_pending = nth(f.corrupt_every, n);
            self.duplicate = fin && nth(f.duplicate_every, n);
        }
        if !self.dropping {
            let at = out.len();
            emit(out, fin, opcode, payload, key);
            if self.corrupt_pending && !payload.is_empty() {
                let len = payload.len();
                let body = out.len() - len;
                out[body + len / 2] ^= 0x01;
                self.corrupt_pending = false;
            }
            if self.duplicate {
                out.extend_from_within(at..);
            }
        }
        if fin {
            self.messages += 1;
            if nth(self.opts.ping_every, self.messages) {
                self.pings_sent += 1;
                let tag = self.pings_sent.to_be_bytes();
                write_header(out, true, OpCode::Ping, None, tag.len());
                out.extend_from_slice(&tag);
            }
        }
    }
}

/// Appends an unmasked frame carrying the unmasked `masked_payload`.
fn emit(out: &mut Vec<u8>, fin: bool, opcode: OpCode, masked_payload: &[u8], key: [u8; 4]) {
    write_header(out, fin, opcode, None, masked_payload.len());
    let start = out.len();
    out.resize(start + masked_payload.len(), 0);
    mask_copy(&mut out[start..], masked_payload, key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FrameWriter;

    fn frames(mut b: &[u8]) -> Vec<(bool, OpCode, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let h = parse_header(b, usize::MAX).unwrap().unwrap();
            assert!(h.mask.is_none());
            v.push((h.fin, h.opcode, b[h.header_len..h.frame_len()].to_vec()));
            b = &b[h.frame_len()..];
        }
        v
    }

    fn client_bytes(msgs: &[&[u8]], fragment: usize) -> Vec<u8> {
        let mut w = FrameWriter::new(fragment);
        for m in msgs {
            w.push_message(OpCode::Binary, m);
        }
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let mut sink = Vec::new();
        rt.block_on(async {
            let mut cursor = Sink(&mut sink);
            w.flush(&mut cursor).await.unwrap();
        });
        sink
    }

    /// A write-only in-memory stream for the test above.
    struct Sink<'a>(&'a mut Vec<u8>);
    impl AsyncWriteRent for Sink<'_> {
        async fn write<T: monoio::buf::IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
            // SAFETY: an IoBuf promises `bytes_init` readable bytes at `read_ptr`.
            let s = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
            self.0.extend_from_slice(s);
            (Ok(s.len()), buf)
        }
        async fn writev<T: monoio::buf::IoVecBuf>(
            &mut self,
            buf: T,
        ) -> monoio::BufResult<usize, T> {
            (Ok(0), buf)
        }
        async fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
        async fn shutdown(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn echoes_fragments_frame_by_frame_and_keeps_partial_input() {
        let opts = EchoOptions::default();
        let mut e = Echoer::new(&opts);
        let mut input = client_bytes(&[b"hello world", b"x"], 4);
        let tail = input.split_off(input.len() - 3);
        let mut out = Vec::new();
        assert!(!e.process(&mut input, &mut out).unwrap());
        input.extend_from_slice(&tail);
        assert!(!e.process(&mut input, &mut out).unwrap());
        assert!(input.is_empty());
        let f = frames(&out);
        let joined: Vec<u8> = f.iter().take(3).flat_map(|x| x.2.clone()).collect();
        assert_eq!(joined, b"hello world");
        assert_eq!(f[0].1, OpCode::Binary);
        assert_eq!(f[3], (true, OpCode::Binary, b"x".to_vec()));
    }

    #[test]
    fn faults_hit_exactly_every_nth_message() {
        let opts = EchoOptions {
            faults: Faults {
                corrupt_every: 3,
                drop_every: 4,
                duplicate_every: 5,
            },
            ping_every: 2,
            ..EchoOptions::default()
        };
        let mut e = Echoer::new(&opts);
        let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8]).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
        let mut input = client_bytes(&refs, 0);
        let mut out = Vec::new();
        e.process(&mut input, &mut out).unwrap();
        let f = frames(&out);
        let data: Vec<&Vec<u8>> = f
            .iter()
            .filter(|x| x.1 == OpCode::Binary)
            .map(|x| &x.2)
            .collect();
        let pings = f.iter().filter(|x| x.1 == OpCode::Ping).count();
        assert_eq!(pings, 5);
        // 10 messages, minus #4 and #8 dropped, plus #5 and #10 doubled.
        assert_eq!(data.len(), 10);
        let corrupted = data.iter().filter(|d| d.iter().any(|b| *b != d[0])).count();
        assert_eq!(corrupted, 3, "messages 3, 6 and 9");
    }
}
