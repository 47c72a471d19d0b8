//! A server-side WebSocket connection after the 101, for fan-out features:
//! the client's frames come in (control frames answered here, data messages
//! handed to the caller), the connection's [`Outbox`] goes out.
//!
//! Idle, a connection holds no read buffer: it waits for readiness, reads
//! into the stack, and keeps only an incomplete frame's bytes.
//!
//! Backpressure: a client that sends faster than it reads is slowed, not
//! closed. Answers to its own messages (and pongs) always fit in its
//! outbox; while the outbox is full the connection stops reading (the bytes
//! it already read wait in `held`) and writes until it has room. Only
//! deliveries from others overflow a full outbox (1013).
//!
//! Must not: block, let one client's slowness reach another, or send a
//! Close frame in the middle of a frame it is writing.

use std::rc::Rc;
use std::time::Duration;

use super::outbox::Flushed;
use super::{Frame, Outbox};
use crate::endpoint::Endpoint;
use crate::net::event::Event;
use crate::net::io::try_send_vectored;
use crate::ws::decoder::Role;
use crate::ws::end::{verdict, Ended, Kind, Reply, Side};
use crate::ws::frame::{build_frame, opcode};
use crate::ws::message::{Message, MessageReader, Mode, ReadError};

/// How long a client that overflowed its queue gets to take the frame being
/// written (and then the 1013 Close) before the socket is simply dropped.
const SLOW_LINGER: Duration = Duration::from_secs(5);
/// Stack buffer for one read.
const READ_CHUNK: usize = 4096;
/// The one peer, as the session-end table names it.
const CLIENT: Side = Side::new("client", Kind::Client);

/// What the connection does after a message was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Let every other task on the shard run before the next message (the
    /// message reached many outboxes: their writers should drain them
    /// before this client's next broadcast lands on top).
    Yield,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client sent Close (its code, if any); it was echoed.
    ClientClose(Option<u16>),
    /// The client's queue overflowed; closed with 1013.
    Slow,
    /// The feature ended it with its own Close (code, reason): the hub's
    /// "reconnect and recover" (docs/hub.md).
    Closed(u16, &'static str),
    /// Shutdown; closed with 1001.
    Shutdown,
    /// A protocol error; closed with the code it calls for.
    Protocol(ReadError),
    /// EOF or a socket error without a Close.
    Gone,
}

/// A server-side WebSocket connection (client frames are masked).
pub struct ServerWs<'a> {
    ep: &'a Endpoint,
    outbox: Rc<Outbox>,
    /// The client's frames in, whole messages out: made when the client
    /// speaks, dropped when the socket is drained between messages, so an
    /// idle connection holds none of it (hub clients rarely speak).
    reader: Option<Box<MessageReader>>,
    /// `Whole` (oversized messages end the connection with 1009) or
    /// `SkipOversize` (they reach the caller as `Message::TooLarge`).
    mode: Mode,
    max_message: usize,
    /// Client bytes read but not yet handled: what arrived behind the
    /// upgrade request, or what waits for room in the outbox.
    held: Vec<u8>,
    /// The client's Close payload, echoed back.
    close_echo: Vec<u8>,
}

/// What reading found.
enum Read {
    More,
    /// Reading paused (the outbox is full, or the caller asked to yield);
    /// bytes already read wait in `held`.
    Paused,
    End(End),
}

impl<'a> ServerWs<'a> {
    /// `early` holds client bytes that arrived behind the upgrade request.
    pub fn new(
        ep: &'a Endpoint,
        outbox: Rc<Outbox>,
        mode: Mode,
        max_message: usize,
        early: Vec<u8>,
    ) -> Self {
        ServerWs {
            ep,
            outbox,
            reader: None,
            mode,
            max_message,
            held: early,
            close_echo: Vec::new(),
        }
    }

    pub fn outbox(&self) -> &Rc<Outbox> {
        &self.outbox
    }

    /// Runs until the connection ends. `on_message` gets every data message
    /// (`Text`, `Binary`, and `TooLarge` in `SkipOversize` mode), in order;
    /// it may answer with [`Outbox::push_own`].
    pub async fn run(&mut self, close_all: &Event, mut on_message: impl OnMessage) -> End {
        let end = self.serve(close_all, &mut on_message).await;
        self.finish(end).await
    }

    /// The connection's life until it must end. One readiness wait stays
    /// armed across outbox wake-ups, so a delivered frame costs its write and
    /// nothing more on the read side.
    async fn serve(&mut self, close_all: &Event, on_message: &mut impl OnMessage) -> End {
        let ep = self.ep;
        let mut readable = std::pin::pin!(ep.readable());
        loop {
            if let Some(end) = self.flush().await {
                return end;
            }
            let got = if self.held.is_empty() {
                let woke = monoio::select! {
                    r = &mut readable => r.is_ok(),
                    _ = self.outbox.ready() => continue,
                    _ = close_all.wait() => return End::Shutdown,
                };
                if !woke {
                    return End::Gone;
                }
                readable.set(ep.readable());
                self.read_available(on_message)
            } else {
                // Bytes read before a pause go before anything new is read.
                let mut held = std::mem::take(&mut self.held);
                self.consume(&mut held, on_message)
            };
            match got {
                Read::End(end) => return end,
                // Other tasks' writers run before this client is read again.
                Read::Paused => yield_now().await,
                Read::More => {}
            }
        }
    }

    /// Writes every queued frame. `Some` when the connection must end.
    async fn flush(&mut self) -> Option<End> {
        let written = monoio::select! {
            r = self.write_queued() => r.is_ok(),
            _ = slow_deadline(&self.outbox) => false,
        };
        if !written {
            return Some(End::Gone);
        }
        if !self.outbox.overflowed() {
            return None;
        }
        Some(match self.outbox.ending() {
            Some((code, reason)) => End::Closed(code, reason),
            None => End::Slow,
        })
    }

    /// Plain sockets take everything queued in one vectored send; TLS seals
    /// frame by frame through the record layer.
    async fn write_queued(&self) -> std::io::Result<()> {
        if self.ep.is_tls() {
            while let Some(frame) = self.outbox.pop() {
                self.ep.write_all(&frame).await?;
            }
            return Ok(());
        }
        let fd = self.ep.fd();
        while self.outbox.send_queued(|iov| try_send_vectored(fd, iov))? == Flushed::Blocked {
            self.ep.stream().writable(false).await?;
        }
        Ok(())
    }

    /// Reads what the socket has now (stack buffer) and handles it.
    fn read_available(&mut self, on_message: &mut impl OnMessage) -> Read {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match self.ep.try_read(&mut buf) {
                Ok(Some(0)) | Err(_) => return Read::End(End::Gone),
                Ok(None) => {
                    // Drained: an idle connection keeps no reader.
                    if self.reader.as_ref().is_some_and(|r| r.is_idle()) {
                        self.reader = None;
                    }
                    return Read::More;
                }
                Ok(Some(n)) => match self.consume(&mut buf[..n], on_message) {
                    Read::More => {}
                    paused_or_end => return paused_or_end,
                },
            }
        }
    }

    /// Feeds `data` to the message reader: messages to `on_message`, pings
    /// answered, a Close or a protocol error ends the connection. Stops with
    /// the rest of `data` in `held` when the outbox is full or the caller
    /// asked to yield.
    fn consume(&mut self, data: &mut [u8], on_message: &mut impl OnMessage) -> Read {
        let (mode, max) = (self.mode, self.max_message);
        let reader = self
            .reader
            .get_or_insert_with(|| Box::new(MessageReader::new(Role::FromClient, mode, max)));
        let mut pos = 0;
        loop {
            let flow = match reader.next(data, &mut pos) {
                Ok(None) => return Read::More,
                Ok(Some(m @ (Message::Text(_) | Message::Binary(_) | Message::TooLarge))) => {
                    on_message(m)
                }
                Ok(Some(Message::Ping(p))) => {
                    let pong = Frame::from(build_frame(opcode::PONG, p, None));
                    self.outbox.push_own(&pong);
                    Flow::Continue
                }
                Ok(Some(Message::Close { code, payload })) => {
                    self.close_echo = payload.to_vec();
                    return Read::End(End::ClientClose(code));
                }
                Ok(Some(_)) => Flow::Continue,
                Err(e) => return Read::End(End::Protocol(e)),
            };
            if flow == Flow::Yield || self.outbox.is_full() {
                self.held = data[pos..].to_vec();
                return Read::Paused;
            }
        }
    }

    /// Sends the Close frame `end` calls for (the session-end table's reply
    /// to the client, bounded in time), then FIN.
    async fn finish(&mut self, end: End) -> End {
        self.outbox.close();
        let ended = match &end {
            End::Gone => return end,
            End::Closed(code, reason) => {
                let frame = crate::ws::frame::close_frame(*code, reason, None);
                return self.send_close(end, &frame, Duration::from_secs(1)).await;
            }
            End::ClientClose(code) => Ended::Close {
                by: CLIENT,
                code: *code,
            },
            End::Slow => Ended::Slow { by: CLIENT },
            End::Shutdown => Ended::Shutdown,
            End::Protocol(error) => Ended::Protocol { by: CLIENT, error },
        };
        let frame = match verdict(&ended).reply_to(CLIENT) {
            Reply::Nothing => return end,
            Reply::Echo => build_frame(opcode::CLOSE, &self.close_echo, None),
            Reply::Close(close) => close.frame(None),
        };
        let linger = if end == End::Slow {
            SLOW_LINGER
        } else {
            Duration::from_secs(1)
        };
        self.send_close(end, &frame, linger).await
    }

    /// Writes `frame` (a Close) within `linger`, then FIN, then lets the
    /// client's Close arrive.
    async fn send_close(&mut self, end: End, frame: &[u8], linger: Duration) -> End {
        if monoio::time::timeout(linger, self.ep.write_all(frame))
            .await
            .is_ok()
        {
            self.ep.shutdown_write().await;
            // Let the client's Close arrive so the kernel does not reset.
            let _ = monoio::time::timeout(Duration::from_secs(1), drain(self.ep)).await;
        }
        end
    }
}

/// What a [`ServerWs`] hands each data message to.
pub trait OnMessage: FnMut(Message<'_>) -> Flow {}
impl<F: FnMut(Message<'_>) -> Flow> OnMessage for F {}

/// Returns to the scheduler once, so every other ready task runs first
/// (monoio has no `yield_now`).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// Ready `SLOW_LINGER` after the outbox overflowed; never otherwise.
async fn slow_deadline(outbox: &Outbox) {
    outbox.overflow().await;
    monoio::time::sleep(SLOW_LINGER).await;
}

async fn drain(ep: &Endpoint) {
    while ep.readable().await.is_ok() && discard_once(ep) {}
}

/// Reads and drops what is there; `false` at EOF or error. The buffer is on
/// the stack of this call, not in every connection's future.
fn discard_once(ep: &Endpoint) -> bool {
    let mut buf = [0u8; 512];
    !matches!(ep.try_read(&mut buf), Ok(Some(0)) | Err(_))
}
