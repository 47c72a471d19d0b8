//! The echo server's frame-by-frame transformation: every data frame goes
//! back unmasked as it arrives (never a whole buffered message: that is what
//! keeps the echo fast), pings are answered, a Close is echoed, and the
//! faults of [`Faults`] are injected on request.
//!
//! It is also where the echo server is a conformant RFC 6455 endpoint
//! (Autobahn|Testsuite cases 1-7 and 10): frame order of fragmented
//! messages, masking, UTF-8 of text (incrementally, failing fast even inside
//! a frame still arriving) and Close payloads are checked, and a violation
//! fails the connection with a Close 1002/1007/1009 after the echoes of the
//! frames before it. No I/O here, and no allocation per message.

use std::time::Duration;

use crate::ws::frame::{mask_copy, parse_header, write_header, FrameError, OpCode};
use ws_relay_core::ws::validate::{check_close, BadClose, InvalidUtf8, Utf8Validator};

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

/// Stack scratch for unmasking a frame that is still arriving.
const SCRATCH: usize = 512;

/// Where a connection stands after [`Echoer::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Keep reading.
    Open,
    /// The peer's Close has been answered.
    Closed,
    /// The peer broke the protocol; a Close with this code was queued.
    Failed(u16),
}

/// The frame-by-frame echo transformation, the protocol checks and fault
/// injection.
pub(super) struct Echoer<'a> {
    opts: &'a EchoOptions,
    /// Opcode of the data message in progress (its first frame had no FIN).
    open: Option<OpCode>,
    /// UTF-8 state of the text message in progress.
    utf8: Utf8Validator,
    /// Payload bytes of the (incomplete) frame at the front of the input
    /// already fed to `utf8`.
    checked: usize,
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

/// The close code and reason that answer a bad header.
fn header_failure(e: &FrameError) -> (u16, &'static str) {
    match e {
        FrameError::ReservedBits => (1002, "reserved bits set"),
        FrameError::BadOpcode(_) => (1002, "unknown opcode"),
        FrameError::FragmentedControl => (1002, "fragmented control frame"),
        FrameError::ControlTooLong => (1002, "control frame over 125 bytes"),
        FrameError::LengthMsb => (1002, "64-bit length with the top bit set"),
        FrameError::TooLarge { .. } => (1009, "frame too large"),
        FrameError::MaskedFromServer | FrameError::UnmaskedFromClient => (1002, "bad masking"),
    }
}

/// Queues the Close that fails the connection.
fn fail(out: &mut Vec<u8>, code: u16, reason: &'static str) -> Step {
    write_header(out, true, OpCode::Close, None, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    Step::Failed(code)
}

impl<'a> Echoer<'a> {
    pub(super) fn new(opts: &'a EchoOptions) -> Self {
        Self {
            opts,
            open: None,
            utf8: Utf8Validator::new(),
            checked: 0,
            messages: 0,
            dropping: false,
            corrupt_pending: false,
            duplicate: false,
            pings_sent: 0,
        }
    }

    /// Consumes every complete frame at the front of `input` and appends the
    /// answers to `out`, stopping at a Close (answered) or a violation
    /// (a failing Close appended after the echoes of the frames before it).
    pub(super) fn process(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Step {
        let mut pos = 0;
        let step = loop {
            let h = match parse_header(&input[pos..], self.opts.max_frame) {
                Ok(Some(h)) => h,
                Ok(None) => break Step::Open,
                Err(e) => {
                    let (code, why) = header_failure(&e);
                    break fail(out, code, why);
                }
            };
            // Header-level rules fail before the payload has arrived.
            let Some(key) = h.mask else {
                break fail(out, 1002, "unmasked client frame");
            };
            let text = match self.sequence(h.opcode) {
                Ok(t) => t,
                Err(why) => break fail(out, 1002, why),
            };
            let p0 = pos + h.header_len;
            if input.len() - pos < h.frame_len() {
                // Fail fast on UTF-8 even inside a frame still arriving.
                if text && self.check_partial(&input[p0..], key).is_err() {
                    break fail(out, 1007, "invalid UTF-8 in a text message");
                }
                // Make room for the rest of a large frame in one go.
                input.reserve(h.frame_len() - (input.len() - pos));
                break Step::Open;
            }
            let payload = &input[p0..p0 + h.payload_len];
            pos += h.frame_len();
            match h.opcode {
                OpCode::Ping => emit(out, true, OpCode::Pong, payload, key),
                OpCode::Pong => {}
                OpCode::Close => break close(payload, key, out),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    if let Err(step) = self.data_frame(h.fin, h.opcode, text, payload, key, out) {
                        break step;
                    }
                }
            }
        };
        input.drain(..pos);
        step
    }

    /// Checks a frame's place in the message sequence (RFC 6455 §5.4):
    /// control frames may come anywhere, a continuation only inside a
    /// fragmented message, a new message only outside one. Ok(true): the
    /// payload is text. Changes nothing: the frame may still be arriving.
    fn sequence(&self, opcode: OpCode) -> Result<bool, &'static str> {
        match (opcode, self.open) {
            (OpCode::Continuation, None) => Err("continuation frame without a message"),
            (OpCode::Continuation, Some(op)) => Ok(op == OpCode::Text),
            (OpCode::Text | OpCode::Binary, Some(_)) => Err("new message inside a fragmented one"),
            (op, _) => Ok(op == OpCode::Text),
        }
    }

    /// Feeds the bytes of an incomplete text frame that arrived since the
    /// last call, unmasked through a stack buffer (they are unmasked again
    /// into the echo when the frame completes; only text pays for this).
    fn check_partial(&mut self, masked: &[u8], key: [u8; 4]) -> Result<(), InvalidUtf8> {
        let mut scratch = [0u8; SCRATCH];
        while self.checked < masked.len() {
            let off = self.checked;
            let n = (masked.len() - off).min(SCRATCH);
            let mut k = key;
            k.rotate_left(off % 4);
            mask_copy(&mut scratch[..n], &masked[off..off + n], k);
            self.utf8.feed(&scratch[..n])?;
            self.checked += n;
        }
        Ok(())
    }

    /// Echoes one complete data frame, after checking its text. Err: the
    /// step that ends the connection (its frame is not echoed).
    fn data_frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        text: bool,
        payload: &[u8],
        key: [u8; 4],
        out: &mut Vec<u8>,
    ) -> Result<(), Step> {
        let f = self.opts.faults;
        if opcode != OpCode::Continuation {
            let n = self.messages + 1;
            self.dropping = nth(f.drop_every, n);
            self.corrupt_pending = nth(f.corrupt_every, n);
            self.duplicate = fin && nth(f.duplicate_every, n);
            self.open = Some(opcode);
        }
        // Unmask into the echo first, then validate the plain bytes there:
        // one pass over the payload either way.
        let at = out.len();
        emit(out, fin, opcode, payload, key);
        let body = out.len() - payload.len();
        let checked = std::mem::take(&mut self.checked);
        if text {
            let ok = self.utf8.feed(&out[body + checked..]);
            let ok = ok.and_then(|()| if fin { self.utf8.finish() } else { Ok(()) });
            if ok.is_err() {
                out.truncate(at);
                return Err(fail(out, 1007, "invalid UTF-8 in a text message"));
            }
        }
        if fin {
            self.open = None;
        }
        if self.dropping {
            out.truncate(at);
        } else {
            if self.corrupt_pending && !payload.is_empty() {
                out[body + payload.len() / 2] ^= 0x01;
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
        Ok(())
    }
}

/// Answers a Close: a valid one is echoed with its status code (RFC 6455
/// §5.5.1), a bad one fails the connection.
fn close(masked: &[u8], key: [u8; 4], out: &mut Vec<u8>) -> Step {
    // Control payloads are at most 125 bytes (checked with the header).
    let mut buf = [0u8; 125];
    let p = &mut buf[..masked.len()];
    mask_copy(p, masked, key);
    match check_close(p) {
        Ok(_) => {
            let n = p.len().min(2);
            write_header(out, true, OpCode::Close, None, n);
            out.extend_from_slice(&p[..n]);
            Step::Closed
        }
        Err(e) => {
            let why = match e {
                BadClose::OneByte => "close payload of 1 byte",
                BadClose::Code(_) => "invalid close code",
                BadClose::Reason => "close reason is not UTF-8",
            };
            fail(out, e.close_code(), why)
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
    use monoio::io::AsyncWriteRent;

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
        assert_eq!(e.process(&mut input, &mut out), Step::Open);
        input.extend_from_slice(&tail);
        assert_eq!(e.process(&mut input, &mut out), Step::Open);
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
        assert_eq!(e.process(&mut input, &mut out), Step::Open);
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

    // Hand-built client frames, for sequences FrameWriter never produces.
    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const FIN: u8 = 0x80;
    const CONT: u8 = 0x0;
    const TEXT: u8 = 0x1;
    const BIN: u8 = 0x2;
    const CLOSE: u8 = 0x88;
    const PING: u8 = 0x89;

    /// One masked frame whose first header byte is `b0`.
    fn raw(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_header(&mut v, true, OpCode::Binary, Some(KEY), payload.len());
        v[0] = b0;
        let at = v.len();
        v.resize(at + payload.len(), 0);
        mask_copy(&mut v[at..], payload, KEY);
        v
    }

    /// Feeds `wire` in one piece to a fresh echoer.
    fn run(wire: &[Vec<u8>]) -> (Step, Vec<(bool, OpCode, Vec<u8>)>) {
        let opts = EchoOptions::default();
        let mut e = Echoer::new(&opts);
        let mut input = wire.concat();
        let mut out = Vec::new();
        let step = e.process(&mut input, &mut out);
        (step, frames(&out))
    }

    fn close_of(f: &(bool, OpCode, Vec<u8>)) -> u16 {
        assert_eq!((f.0, f.1), (true, OpCode::Close));
        u16::from_be_bytes([f.2[0], f.2[1]])
    }

    #[test]
    fn text_split_mid_codepoint_with_a_ping_between_fragments() {
        let wire = [
            raw(TEXT, b"caf\xc3"),
            raw(PING, b"p"),
            raw(CONT, b"\xa9 \xe2\x82"),
            raw(FIN | CONT, b"\xac"),
        ];
        let (step, f) = run(&wire);
        assert_eq!(step, Step::Open);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], (false, OpCode::Text, b"caf\xc3".to_vec()));
        assert_eq!(f[1], (true, OpCode::Pong, b"p".to_vec()));
        let text = [f[0].2.as_slice(), &f[2].2, &f[3].2].concat();
        assert_eq!(text, "café €".as_bytes());
        assert!(f[3].0, "the last fragment has FIN");
    }

    #[test]
    fn invalid_utf8_across_frames_fails_1007_at_the_first_bad_frame() {
        // U+110000 would start in frame 1; its second byte (frame 2) is
        // already impossible, so frame 3 is never looked at.
        let wire = [
            raw(TEXT, b"ok\xf4"),
            raw(CONT, b"\x90\x80"),
            raw(FIN | CONT, b"\x80"),
        ];
        let (step, f) = run(&wire);
        assert_eq!(step, Step::Failed(1007));
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0], (false, OpCode::Text, b"ok\xf4".to_vec()));
        assert_eq!(close_of(&f[1]), 1007);
        // A sequence still open at FIN is invalid too; binary is never checked.
        let (step, f) = run(&[raw(FIN | BIN, b"\xff"), raw(FIN | TEXT, b"a\xe2\x82")]);
        assert_eq!(step, Step::Failed(1007));
        assert_eq!(f[0], (true, OpCode::Binary, vec![0xff]));
        assert_eq!(close_of(&f[1]), 1007);
    }

    #[test]
    fn invalid_utf8_fails_before_its_frame_has_fully_arrived() {
        let opts = EchoOptions::default();
        let mut e = Echoer::new(&opts);
        let mut text = "κόσμε ".repeat(100).into_bytes();
        let valid = raw(FIN | TEXT, &text);
        // Valid text in 7-byte chops (codepoints split everywhere) waits...
        let (mut input, mut out) = (Vec::new(), Vec::new());
        for chop in valid.chunks(7) {
            assert!(out.is_empty());
            input.extend_from_slice(chop);
            assert_eq!(e.process(&mut input, &mut out), Step::Open);
        }
        assert_eq!(frames(&out), [(true, OpCode::Text, text.clone())]);
        // ... and an invalid byte fails as soon as it is in.
        text[40] = 0xc0;
        let bad = raw(FIN | TEXT, &text);
        let (mut input, mut out) = (bad[..60].to_vec(), Vec::new());
        assert_eq!(e.process(&mut input, &mut out), Step::Failed(1007));
        assert_eq!(close_of(&frames(&out)[0]), 1007);
    }

    #[test]
    fn fragmentation_order_violations_fail_1002_after_earlier_echoes() {
        let (step, f) = run(&[raw(FIN | BIN, b"first"), raw(FIN | CONT, b"orphan")]);
        assert_eq!(step, Step::Failed(1002));
        assert_eq!(f[0], (true, OpCode::Binary, b"first".to_vec()));
        assert_eq!((f.len(), close_of(&f[1])), (2, 1002));
        let (step, f) = run(&[raw(TEXT, b"frag"), raw(FIN | TEXT, b"new")]);
        assert_eq!(step, Step::Failed(1002));
        assert_eq!(f[0], (false, OpCode::Text, b"frag".to_vec()));
        assert_eq!((f.len(), close_of(&f[1])), (2, 1002));
    }

    #[test]
    fn bad_headers_fail_1002() {
        let mut unmasked = Vec::new();
        write_header(&mut unmasked, true, OpCode::Binary, None, 2);
        unmasked.extend_from_slice(b"hi");
        for wire in [
            raw(FIN | 0x40 | BIN, b"rsv1"),
            raw(FIN | 0x3, b"opcode 3"),
            raw(0x09, b"fragmented ping"),
            raw(PING, &[0; 126]),
            unmasked,
        ] {
            let (step, f) = run(&[wire]);
            assert_eq!(step, Step::Failed(1002));
            assert_eq!((f.len(), close_of(&f[0])), (1, 1002));
        }
    }

    #[test]
    fn close_frames_are_checked_and_echoed() {
        // Valid: echoed with the code; nothing after it is echoed.
        for code in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice("bye κ".as_bytes());
            let (step, f) = run(&[raw(CLOSE, &p), raw(FIN | BIN, b"late")]);
            assert_eq!(step, Step::Closed);
            assert_eq!((f.len(), close_of(&f[0])), (1, code));
        }
        let (step, f) = run(&[raw(CLOSE, b"")]);
        assert_eq!(step, Step::Closed);
        assert_eq!(f, [(true, OpCode::Close, vec![])]);
        // Invalid: 1 byte, bad codes (1002), reason not UTF-8 (1007).
        let (step, f) = run(&[raw(CLOSE, &[0x03])]);
        assert_eq!((step, close_of(&f[0])), (Step::Failed(1002), 1002));
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            let (step, f) = run(&[raw(CLOSE, &code.to_be_bytes())]);
            assert_eq!(
                (step, close_of(&f[0])),
                (Step::Failed(1002), 1002),
                "{code}"
            );
        }
        let (step, f) = run(&[raw(CLOSE, b"\x03\xe8\xce")]);
        assert_eq!((step, close_of(&f[0])), (Step::Failed(1007), 1007));
    }

    #[test]
    fn faults_still_apply_to_valid_text() {
        let opts = EchoOptions {
            faults: Faults {
                drop_every: 2,
                ..Faults::default()
            },
            ..EchoOptions::default()
        };
        let mut e = Echoer::new(&opts);
        let mut input = [
            raw(FIN | TEXT, b"one"),
            raw(FIN | TEXT, b"two"),
            raw(FIN | TEXT, b"3"),
        ]
        .concat();
        let mut out = Vec::new();
        assert_eq!(e.process(&mut input, &mut out), Step::Open);
        let f = frames(&out);
        assert_eq!(
            f,
            [
                (true, OpCode::Text, b"one".to_vec()),
                (true, OpCode::Text, b"3".to_vec())
            ]
        );
    }
}
