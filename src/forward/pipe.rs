//! An in-memory, bounded duplex between the WebSocket bridge and yamux.
//!
//! A reverse tunnel's control session is a WebSocket whose binary payloads
//! carry a yamux byte stream. Rather than teach yamux WebSocket framing, the
//! proven bridge (`bridge.rs`: pings, keepalive, close handshake, masking)
//! runs against one end of this pipe as if it were a TCP stream, and yamux
//! runs against the other end through `futures::io`. The cost is one memcpy
//! per chunk each way; what it buys is one framing implementation.
//!
//! Owns the two byte queues and their wakers. Must not: grow past its
//! capacity (a full queue is backpressure: the writer waits), allocate after
//! creation, or be shared across threads (single shard, `Rc`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One direction: bytes, whether the writer has finished, who waits.
struct Queue {
    bytes: VecDeque<u8>,
    cap: usize,
    /// The writing end shut down or was dropped: EOF once drained.
    closed: bool,
    /// The reading end is gone: writes fail.
    reader_gone: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Queue {
    fn new(cap: usize) -> Queue {
        Queue {
            bytes: VecDeque::with_capacity(cap),
            cap,
            closed: false,
            reader_gone: false,
            reader: None,
            writer: None,
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    /// Copies out what is buffered; `Ready(0)` is EOF.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<usize> {
        if self.bytes.is_empty() {
            if self.closed || buf.is_empty() {
                return Poll::Ready(0);
            }
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(self.take(buf))
    }

    fn take(&mut self, buf: &mut [u8]) -> usize {
        let (a, b) = self.bytes.as_slices();
        let n = buf.len().min(a.len() + b.len());
        let from_a = n.min(a.len());
        buf[..from_a].copy_from_slice(&a[..from_a]);
        buf[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.bytes.drain(..n);
        self.wake_writer();
        n
    }

    /// Copies in as much as fits; waits while full.
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.reader_gone || self.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = self.cap - self.bytes.len();
        if room == 0 {
            self.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        self.bytes.extend(&buf[..n]);
        self.wake_reader();
        Poll::Ready(Ok(n))
    }

    fn close(&mut self) {
        self.closed = true;
        self.wake_reader();
    }

    fn drop_reader(&mut self) {
        self.reader_gone = true;
        self.wake_writer();
    }
}

struct Shared {
    /// Bridge → yamux (payloads that arrived on the WebSocket).
    to_mux: Queue,
    /// yamux → bridge (bytes to send as binary messages).
    to_ws: Queue,
}

/// Creates the pipe; each direction buffers at most `cap` bytes.
pub fn pair(cap: usize) -> (WsEnd, MuxEnd) {
    let shared = Rc::new(RefCell::new(Shared {
        to_mux: Queue::new(cap),
        to_ws: Queue::new(cap),
    }));
    (WsEnd(shared.clone()), MuxEnd(shared))
}

/// The bridge's end: looks like a TCP stream (`bridge::ByteStream`).
pub struct WsEnd(Rc<RefCell<Shared>>);

impl WsEnd {
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut s = self.0.borrow_mut();
            let q = &mut s.to_ws;
            if !q.bytes.is_empty() || q.closed {
                return Poll::Ready(Ok(()));
            }
            q.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// `Ok(Some(0))` = yamux is done, `Ok(None)` = nothing now.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let mut s = self.0.borrow_mut();
        let q = &mut s.to_ws;
        match (q.bytes.is_empty(), q.closed) {
            (false, _) => Ok(Some(q.take(buf))),
            (true, true) => Ok(Some(0)),
            (true, false) => Ok(None),
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.0.borrow_mut().to_mux.poll_write(cx, buf)).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    pub fn shutdown_write(&self) {
        self.0.borrow_mut().to_mux.close();
    }
}

impl Drop for WsEnd {
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.to_mux.close();
        s.to_ws.drop_reader();
    }
}

/// yamux's end, through `futures::io`.
pub struct MuxEnd(Rc<RefCell<Shared>>);

impl futures_util::AsyncRead for MuxEnd {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().to_mux.poll_read(cx, buf).map(Ok)
    }
}

impl futures_util::AsyncWrite for MuxEnd {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.borrow_mut().to_ws.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.borrow_mut().to_ws.close();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxEnd {
    fn drop(&mut self) {
        let mut s = self.0.borrow_mut();
        s.to_ws.close();
        s.to_mux.drop_reader();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{AsyncReadExt, AsyncWriteExt};

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn bytes_cross_both_ways_in_order_through_a_small_pipe() {
        run(async {
            let (ws, mut mux) = pair(7);
            let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
            let sent = data.clone();
            let writer = async {
                ws.write_all(&sent).await.unwrap();
                ws.shutdown_write();
            };
            let reader = async {
                let mut got = Vec::new();
                mux.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), got) = futures_util::future::join(writer, reader).await;
            assert_eq!(got, data);

            mux.write_all(b"back").await.unwrap();
            mux.close().await.unwrap();
            let mut buf = [0u8; 16];
            ws.readable().await.unwrap();
            assert_eq!(ws.try_read(&mut buf).unwrap(), Some(4));
            assert_eq!(&buf[..4], b"back");
            assert_eq!(ws.try_read(&mut buf).unwrap(), Some(0), "EOF after close");
        });
    }

    #[test]
    fn a_dropped_end_is_eof_for_reads_and_broken_pipe_for_writes() {
        run(async {
            let (ws, mut mux) = pair(4);
            drop(ws);
            let mut buf = [0u8; 4];
            assert_eq!(mux.read(&mut buf).await.unwrap(), 0);
            let e = mux.write(b"x").await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        });
    }

    #[test]
    fn an_empty_pipe_has_nothing_to_read_yet() {
        let (ws, _mux) = pair(4);
        let mut buf = [0u8; 4];
        assert_eq!(ws.try_read(&mut buf).unwrap(), None);
    }
}
