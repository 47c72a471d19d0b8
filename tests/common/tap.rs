//! A client-side stream wrapper that follows the server→client frame headers
//! as bytes are read and records every Close frame's raw code and reason.
//!
//! Needed because tungstenite (0.28) does not know close code 1014 (Bad
//! Gateway): it hands the application `1002 "Protocol violation"` instead of
//! the code on the wire (and answers the relay with a Close 1002). Tests that
//! check close codes read the raw code recorded here.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use ws_relay_core::ws::decoder::{Decoder, Event};
use ws_relay_core::ws::frame::opcode;

/// A Close frame as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawClose {
    /// `None` for an empty Close payload.
    pub code: Option<u16>,
    pub reason: String,
}

#[derive(Debug)]
struct Tracker {
    /// The HTTP response head, until its blank line; then frames.
    head: Option<Vec<u8>>,
    /// The engine's decoder (`ws::decoder`) as a lenient observer: frames
    /// followed, order not judged.
    frames: Decoder,
    /// The payload of the Close frame being read.
    close: Option<Vec<u8>>,
    closes: Vec<RawClose>,
}

impl Tracker {
    fn finish_close(&mut self, payload: Vec<u8>) {
        let rc = if payload.len() >= 2 {
            RawClose {
                code: Some(u16::from_be_bytes([payload[0], payload[1]])),
                reason: String::from_utf8_lossy(&payload[2..]).into_owned(),
            }
        } else {
            RawClose {
                code: None,
                reason: String::new(),
            }
        };
        self.closes.push(rc);
    }

    fn feed(&mut self, mut data: &[u8]) {
        if let Some(head) = &mut self.head {
            while let Some((&b, rest)) = data.split_first() {
                head.push(b);
                data = rest;
                if head.ends_with(b"\r\n\r\n") {
                    self.head = None;
                    break;
                }
            }
        }
        let mut chunk = data.to_vec();
        let mut pos = 0;
        while let Ok(Some(event)) = self.frames.next(&mut chunk, &mut pos) {
            match event {
                Event::Header(h) => self.close = (h.opcode == opcode::CLOSE).then(Vec::new),
                Event::Payload { start, end } => {
                    if let Some(c) = &mut self.close {
                        c.extend_from_slice(&chunk[start..end]);
                    }
                }
                Event::End => {
                    if let Some(p) = self.close.take() {
                        self.finish_close(p);
                    }
                }
            }
        }
    }
}

/// TcpStream + close-frame tracker.
#[derive(Debug)]
pub struct Tap {
    inner: TcpStream,
    tracker: Arc<Mutex<Tracker>>,
}

impl Tap {
    /// For a stream whose next bytes are an HTTP response head.
    pub fn http(inner: TcpStream) -> Tap {
        Tap::with(inner, Some(Vec::new()))
    }

    /// For a stream already past the HTTP head (next bytes are frames).
    pub fn frames(inner: TcpStream) -> Tap {
        Tap::with(inner, None)
    }

    fn with(inner: TcpStream, head: Option<Vec<u8>>) -> Tap {
        Tap {
            inner,
            tracker: Arc::new(Mutex::new(Tracker {
                head,
                frames: Decoder::passthrough().allowing_reserved_bits(),
                close: None,
                closes: Vec::new(),
            })),
        }
    }

    /// Feeds bytes that were read past the head by someone else.
    pub fn feed(&self, data: &[u8]) {
        self.tracker.lock().unwrap().feed(data);
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.inner
    }

    pub fn into_tcp(self) -> TcpStream {
        self.inner
    }

    /// Close frames received so far, as on the wire.
    pub fn closes(&self) -> Vec<RawClose> {
        self.tracker.lock().unwrap().closes.clone()
    }

    pub fn last_close(&self) -> Option<RawClose> {
        self.tracker.lock().unwrap().closes.last().cloned()
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                self.tracker.lock().unwrap().feed(new);
            }
        }
        res
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
