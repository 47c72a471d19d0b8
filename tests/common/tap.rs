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

/// A Close frame as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawClose {
    /// `None` for an empty Close payload.
    pub code: Option<u16>,
    pub reason: String,
}

#[derive(Debug)]
enum St {
    /// Inside the HTTP response head (until the blank line).
    Http(Vec<u8>),
    /// Collecting a frame header.
    Hdr(Vec<u8>),
    /// Inside a payload; Close payloads are collected.
    Payload { left: u64, close: Option<Vec<u8>> },
}

#[derive(Debug)]
struct Tracker {
    st: St,
    closes: Vec<RawClose>,
}

fn header_len(h: &[u8]) -> Option<usize> {
    if h.len() < 2 {
        return None;
    }
    let ext = match h[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
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
        while !data.is_empty() {
            match &mut self.st {
                St::Http(buf) => {
                    buf.push(data[0]);
                    data = &data[1..];
                    if buf.ends_with(b"\r\n\r\n") {
                        self.st = St::Hdr(Vec::new());
                    }
                }
                St::Hdr(h) => {
                    h.push(data[0]);
                    data = &data[1..];
                    if header_len(h) == Some(h.len()) {
                        let len = match h[1] & 0x7f {
                            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
                            127 => u64::from_be_bytes(h[2..10].try_into().unwrap()),
                            n => n as u64,
                        };
                        let is_close = h[0] & 0x0f == 0x8;
                        let close = is_close.then(Vec::new);
                        if len == 0 {
                            self.st = St::Hdr(Vec::new());
                            if let Some(p) = close {
                                self.finish_close(p);
                            }
                        } else {
                            self.st = St::Payload { left: len, close };
                        }
                    }
                }
                St::Payload { left, close } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    if let Some(c) = close {
                        c.extend_from_slice(&data[..n]);
                    }
                    *left -= n as u64;
                    data = &data[n..];
                    if *left == 0 {
                        let done = close.take();
                        self.st = St::Hdr(Vec::new());
                        if let Some(p) = done {
                            self.finish_close(p);
                        }
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
        Tap::with(inner, St::Http(Vec::new()))
    }

    /// For a stream already past the HTTP head (next bytes are frames).
    pub fn frames(inner: TcpStream) -> Tap {
        Tap::with(inner, St::Hdr(Vec::new()))
    }

    fn with(inner: TcpStream, st: St) -> Tap {
        Tap {
            inner,
            tracker: Arc::new(Mutex::new(Tracker {
                st,
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
