//! An established TLS session on a non-blocking socket: application data
//! sealed and opened in place by `tls::record` inside pooled record
//! buffers, plus what TLS asks of a session after its handshake (tickets,
//! key updates, alerts, close_notify).
//!
//! Buffers come from a per-thread free list (a shard is one thread, so this
//! is the shard's pool: no lock) and go back as soon as nothing is pending,
//! so an idle session holds none. Must not: allocate per message, hold a
//! `RefCell` borrow across an await, or hand out unauthenticated bytes.

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use super::handshake::{invalid, tls_error, Established, Kernel};
use super::record::{
    record_len, Keys, RecordError, Version, ALERT, APPLICATION_DATA, HANDSHAKE, HEADER_LEN,
    MAX_BODY, MAX_PLAINTEXT,
};
use crate::net::io::{send_all, try_recv, try_send};

/// Two maximum-size records: room to compact a partial record and read on.
const RECORD_BUF_LEN: usize = 2 * (HEADER_LEN + MAX_BODY);
const MAX_FREE_BUFFERS: usize = 256;

const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;
const HELLO_REQUEST: u8 = 0;
const CLOSE_NOTIFY: [u8; 2] = [1, 0];
const USER_CANCELED: u8 = 90;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
/// Records kept in hand below a TLS 1.2 limit: 2^16 of AES-GCM's 2^24
/// (about 1 GiB of full records, room to reach the end of any frame the
/// relay carries), or an eighth of a lowered limit.
fn record_margin(limit: u64) -> u64 {
    (limit / 8).min(1 << 16)
}

/// Consecutive empty application records tolerated (rustls allows 32).
const MAX_EMPTY_RECORDS: u32 = 32;

/// The alert a record the layer refused gets (RFC 8446 §5, §5.2, §5.4;
/// RFC 5246 §7.2.2 for TLS 1.2).
fn alert_for(e: &RecordError) -> u8 {
    match e {
        RecordError::NotTls(_) | RecordError::UnexpectedType(_) | RecordError::NoContentType => {
            UNEXPECTED_MESSAGE
        }
        RecordError::Oversized(_) => RECORD_OVERFLOW,
        RecordError::TooShort(_) => DECODE_ERROR,
        RecordError::BadMac => BAD_RECORD_MAC,
        RecordError::UnsupportedSuite | RecordError::Exhausted => INTERNAL_ERROR,
    }
}

pub struct RecordStream {
    tx: RefCell<Keys>,
    rx: RefCell<Keys>,
    kernel: RefCell<Kernel>,
    inbound: RefCell<Inbound>,
    /// Application data that arrived with the handshake's last flight.
    handshake_plaintext: RefCell<Vec<u8>>,
    version: Version,
    key_limit: u64,
    /// The peer asked us to rotate our sending key (TLS 1.3 KeyUpdate with
    /// update_requested): due before our next application record.
    update_owed: Cell<bool>,
    /// Consecutive empty application-data records received.
    empty_run: Cell<u32>,
    resumed: bool,
}

#[derive(Default)]
struct Inbound {
    buf: Option<RecordBuf>,
    /// Ciphertext not yet opened: `buf[start..end]`.
    start: usize,
    end: usize,
    /// Opened application data not yet handed out.
    plain: Range<usize>,
    /// close_notify or end of stream seen.
    closed: bool,
}

impl RecordStream {
    pub fn new(est: Established) -> io::Result<RecordStream> {
        let (tx_seq, tx) = est.secrets.tx;
        let (rx_seq, rx) = est.secrets.rx;
        let mut inbound = Inbound::default();
        if !est.leftover.is_empty() {
            let mut buf = RecordBuf::take();
            let n = est.leftover.len();
            if n > buf.0.len() {
                return Err(invalid(
                    "TLS record larger than allowed after the handshake",
                ));
            }
            buf.0[..n].copy_from_slice(&est.leftover);
            inbound.buf = Some(buf);
            inbound.end = n;
        }
        Ok(RecordStream {
            tx: RefCell::new(Keys::new(est.version, tx_seq, tx)?),
            rx: RefCell::new(Keys::new(est.version, rx_seq, rx)?),
            kernel: RefCell::new(est.kernel),
            inbound: RefCell::new(inbound),
            handshake_plaintext: RefCell::new(est.plaintext),
            version: est.version,
            key_limit: est.key_limit,
            update_owed: Cell::new(false),
            empty_run: Cell::new(0),
            resumed: est.resumed,
        })
    }

    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// True once a TLS 1.2 session (which cannot rekey) is within
    /// [`record_margin`] records of its cipher's limit: time for the relay
    /// to end it with a Close at the next frame boundary, while records are
    /// left to carry that Close and the close_notify. TLS 1.3 rekeys
    /// instead, so it never nears the limit.
    pub fn nearing_record_limit(&self) -> bool {
        self.version == Version::Tls12
            && self.key_limit.saturating_sub(self.tx.borrow().seq())
                <= record_margin(self.key_limit)
    }

    /// Whether a read can make progress without waiting for the socket.
    pub fn has_buffered(&self) -> bool {
        if !self.handshake_plaintext.borrow().is_empty() {
            return true;
        }
        let inb = self.inbound.borrow();
        inb.closed || !inb.plain.is_empty() || inb.complete_record().is_some()
    }

    /// Hands out opened application data, reading and opening records as
    /// needed (at most one `recv`). `Ok(Some(0))` = end of stream,
    /// `Ok(None)` = nothing now.
    pub fn try_read(&self, fd: RawFd, out: &mut [u8]) -> io::Result<Option<usize>> {
        if let Some(n) = self.take_handshake_plaintext(out) {
            return Ok(Some(n));
        }
        let mut inb = self.inbound.borrow_mut();
        let mut written = 0;
        let mut received = false;
        loop {
            written += inb.copy_plain(&mut out[written..]);
            if written == out.len() {
                break;
            }
            if inb.closed {
                // Data opened before the close_notify has been handed out;
                // whatever follows it is ignored, never opened (RFC 8446
                // §6.1: "Any data received after a closure alert has been
                // received MUST be ignored").
                break;
            }
            if let Some(len) = inb.complete_record() {
                let len = len.map_err(|e| self.fatal(fd, alert_for(&e), e.into()))?;
                self.open_next(fd, &mut inb, len)?;
                continue;
            }
            if written > 0 || received {
                break;
            }
            if !inb.fill(fd)? {
                inb.release_if_drained();
                return Ok(None);
            }
            received = true;
        }
        inb.release_if_drained();
        match written {
            // A recv that brought only a partial record or a non-data one.
            0 if !inb.closed => Ok(None),
            n => Ok(Some(n)),
        }
    }

    fn take_handshake_plaintext(&self, out: &mut [u8]) -> Option<usize> {
        let mut pending = self.handshake_plaintext.borrow_mut();
        if pending.is_empty() {
            return None;
        }
        let n = pending.len().min(out.len());
        out[..n].copy_from_slice(&pending[..n]);
        pending.drain(..n);
        if pending.is_empty() {
            *pending = Vec::new();
        }
        Some(n)
    }

    /// Opens the `len`-byte record at the front of the ciphertext.
    fn open_next(&self, fd: RawFd, inb: &mut Inbound, len: usize) -> io::Result<()> {
        let at = inb.start..inb.start + len;
        inb.start += len;
        let Some(buf) = inb.buf.as_mut() else {
            return Ok(());
        };
        let opened = self.rx.borrow_mut().open(&mut buf.0[at.clone()]);
        let (typ, content) = opened.map_err(|e| self.fatal(fd, alert_for(&e), e.into()))?;
        let content = at.start + content.start..at.start + content.end;
        match typ {
            APPLICATION_DATA => {
                self.count_empty(fd, content.is_empty())?;
                inb.plain = content;
            }
            HANDSHAKE => self.post_handshake(fd, &buf.0[content])?,
            // A warning after close_notify (user_canceled) must not reopen
            // the peer's side: closed stays closed.
            ALERT => inb.closed |= self.alert(&buf.0[content])?,
            other => {
                return Err(self.fatal(
                    fd,
                    UNEXPECTED_MESSAGE,
                    RecordError::UnexpectedType(other).into(),
                ))
            }
        }
        Ok(())
    }

    /// Empty application records are legal but carry nothing; a long run
    /// of them is a peer making us spin, ended like rustls does.
    fn count_empty(&self, fd: RawFd, empty: bool) -> io::Result<()> {
        let run = if empty { self.empty_run.get() + 1 } else { 0 };
        self.empty_run.set(run);
        if run > MAX_EMPTY_RECORDS {
            let e = invalid("too many consecutive empty TLS records");
            return Err(self.fatal(fd, UNEXPECTED_MESSAGE, e));
        }
        Ok(())
    }

    /// Handshake messages after the handshake: tickets toward targets, key
    /// updates from either peer. Each must arrive whole in one record (every
    /// TLS stack we know sends them so); anything else ends the session.
    fn post_handshake(&self, fd: RawFd, mut msgs: &[u8]) -> io::Result<()> {
        while !msgs.is_empty() {
            let Some((&[typ, a, b, c], rest)) = msgs.split_first_chunk::<4>() else {
                return Err(self.fatal(
                    fd,
                    DECODE_ERROR,
                    invalid("truncated post-handshake message"),
                ));
            };
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            if rest.len() < len {
                return Err(self.fatal(
                    fd,
                    UNEXPECTED_MESSAGE,
                    invalid("post-handshake message split across records"),
                ));
            }
            let (body, rest) = rest.split_at(len);
            msgs = rest;
            match (typ, &mut *self.kernel.borrow_mut()) {
                (NEW_SESSION_TICKET, Kernel::Client(k)) => {
                    k.handle_new_session_ticket(body).map_err(tls_error)?
                }
                (KEY_UPDATE, kernel) if msgs.is_empty() => {
                    let requested = match body {
                        [0] => false,
                        [1] => true,
                        _ => {
                            return Err(self.fatal(
                                fd,
                                DECODE_ERROR,
                                invalid("malformed KeyUpdate"),
                            ))
                        }
                    };
                    let (seq, secrets) = kernel.next_rx_secret().map_err(tls_error)?;
                    *self.rx.borrow_mut() = Keys::new(self.version, seq, secrets)?;
                    if requested {
                        self.update_owed.set(true);
                    }
                }
                // Renegotiation is never offered; ignoring the request is
                // the polite refusal (RFC 5246 §7.4.1.1).
                (HELLO_REQUEST, Kernel::Client(_)) if self.version == Version::Tls12 => {}
                (typ, _) => {
                    let what = format!("unexpected post-handshake message type {typ}");
                    return Err(self.fatal(fd, UNEXPECTED_MESSAGE, invalid(&what)));
                }
            }
        }
        Ok(())
    }

    /// Returns whether the alert ends the peer's sending side.
    fn alert(&self, alert: &[u8]) -> io::Result<bool> {
        match alert {
            a if a == CLOSE_NOTIFY => Ok(true),
            [1, USER_CANCELED] => Ok(false),
            [_, desc] => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("peer sent TLS alert {desc}"),
            )),
            _ => Err(invalid("malformed TLS alert")),
        }
    }

    /// Seals `data` into records (as many per buffer as fit) and sends them;
    /// a full socket makes this wait (backpressure).
    pub async fn write_all(&self, stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
        let mut out = RecordBuf::take();
        while !data.is_empty() {
            let len = self.seal_batch(&mut out.0, &mut data)?;
            send_all(stream, &out.0[..len]).await?;
        }
        Ok(())
    }

    fn seal_batch(&self, out: &mut [u8], data: &mut &[u8]) -> io::Result<usize> {
        let mut tx = self.tx.borrow_mut();
        let mut len = 0;
        while !data.is_empty() {
            if self.update_owed.get() || tx.seq() >= self.key_limit {
                len += self.rotate_tx(&mut tx, &mut out[len..])?;
            }
            // Keep room for a KeyUpdate record in the next round.
            let reserve = 2 * tx.overhead() + 8;
            let room = out.len() - len;
            if room <= reserve {
                break;
            }
            let n = data.len().min(MAX_PLAINTEXT).min(room - reserve);
            len += tx.seal(APPLICATION_DATA, &data[..n], &mut out[len..])?;
            *data = &data[n..];
        }
        Ok(len)
    }

    /// Sends a KeyUpdate under the old key and switches to the next one.
    /// TLS 1.2 has no rekeying: at the limit the session must end.
    fn rotate_tx(&self, tx: &mut Keys, out: &mut [u8]) -> io::Result<usize> {
        if self.version == Version::Tls12 {
            return Err(invalid(
                "TLS 1.2 session reached its cipher's record limit (TLS 1.2 cannot rekey)",
            ));
        }
        let n = tx.seal(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        let (seq, secrets) = self
            .kernel
            .borrow_mut()
            .next_tx_secret()
            .map_err(tls_error)?;
        *tx = Keys::new(self.version, seq, secrets)?;
        self.update_owed.set(false);
        Ok(n)
    }

    /// Sends close_notify (bounded wait: the peer may have stopped reading).
    pub async fn close_notify(&self, stream: &TcpStream) {
        let mut record = [0u8; 64];
        let sealed = self.tx.borrow_mut().seal(ALERT, &CLOSE_NOTIFY, &mut record);
        if let Ok(n) = sealed {
            let _ =
                monoio::time::timeout(Duration::from_secs(1), send_all(stream, &record[..n])).await;
        }
    }

    /// Best effort: tells the peer why (alert `desc`) before the session
    /// ends with `e`.
    fn fatal(&self, fd: RawFd, desc: u8, e: io::Error) -> io::Error {
        self.send_alert(fd, desc);
        e
    }

    fn send_alert(&self, fd: RawFd, desc: u8) {
        let mut record = [0u8; 64];
        let Ok(mut tx) = self.tx.try_borrow_mut() else {
            return;
        };
        if let Ok(n) = tx.seal(ALERT, &[2, desc], &mut record) {
            let _ = try_send(fd, &record[..n]);
        }
    }
}

impl Inbound {
    /// The length of the next record if it has fully arrived.
    fn complete_record(&self) -> Option<Result<usize, RecordError>> {
        let buf = self.buf.as_ref()?;
        let pending = &buf.0[self.start..self.end];
        let header: &[u8; HEADER_LEN] = pending.first_chunk()?;
        match record_len(header) {
            Ok(len) if pending.len() >= len => Some(Ok(len)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn copy_plain(&mut self, out: &mut [u8]) -> usize {
        let Some(buf) = self.buf.as_ref() else {
            return 0;
        };
        let n = self.plain.len().min(out.len());
        out[..n].copy_from_slice(&buf.0[self.plain.start..self.plain.start + n]);
        self.plain.start += n;
        n
    }

    /// One non-blocking recv behind the pending ciphertext. Returns false
    /// when the socket had nothing.
    fn fill(&mut self, fd: RawFd) -> io::Result<bool> {
        let buf = self.buf.get_or_insert_with(RecordBuf::take);
        if self.start > 0 && self.plain.is_empty() {
            buf.0.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match try_recv(fd, &mut buf.0[self.end..])? {
            None => Ok(false),
            // End of stream; a peer that skips close_notify still ends it.
            Some(0) => {
                self.closed = true;
                Ok(true)
            }
            Some(n) => {
                self.end += n;
                Ok(true)
            }
        }
    }

    fn release_if_drained(&mut self) {
        if self.plain.is_empty() && self.start == self.end {
            *self = Inbound {
                closed: self.closed,
                ..Inbound::default()
            };
        }
    }
}

/// A record-sized buffer from this thread's free list.
struct RecordBuf(Box<[u8]>);

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

impl RecordBuf {
    fn take() -> RecordBuf {
        let reused = FREE.try_with(|f| f.borrow_mut().pop()).ok().flatten();
        RecordBuf(reused.unwrap_or_else(|| vec![0u8; RECORD_BUF_LEN].into_boxed_slice()))
    }
}

impl Drop for RecordBuf {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        let _ = FREE.try_with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < MAX_FREE_BUFFERS {
                free.push(buf);
            }
        });
    }
}
