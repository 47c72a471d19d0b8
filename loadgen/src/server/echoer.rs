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

use ws_relay_core::ws::decoder::Role;
use ws_relay_core::ws::frame::{opcode, push_header};
use ws_relay_core::ws::message::{Message, MessageReader, Mode, Ready};

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

/// The data frame being received: its header, and where its payload
/// starts in the input (unmasked in place there as it arrives).
#[derive(Debug, Clone, Copy)]
struct Current {
    fin: bool,
    opcode: u8,
    start: usize,
    len: usize,
}

/// The frame-by-frame echo transformation over the engine's message
/// reader (`Mode::Stream`: every rule checked as bytes arrive), and fault
/// injection.
pub(super) struct Echoer<'a> {
    opts: &'a EchoOptions,
    ws: MessageReader,
    /// Input bytes the reader has consumed (unmasked in place).
    fed: usize,
    current: Option<Current>,
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

/// Queues the Close that fails the connection.
fn fail(out: &mut Vec<u8>, code: u16, reason: &str) -> Step {
    push_header(out, true, opcode::CLOSE, 2 + reason.len() as u64, None);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    Step::Failed(code)
}

impl<'a> Echoer<'a> {
    pub(super) fn new(opts: &'a EchoOptions) -> Self {
        Self {
            opts,
            ws: MessageReader::new(Role::FromClient, Mode::Stream, 0),
            fed: 0,
            current: None,
            messages: 0,
            dropping: false,
            corrupt_pending: false,
            duplicate: false,
            pings_sent: 0,
        }
    }

    /// Consumes `input` and appends the answers to `out`: each data frame is
    /// echoed once it is whole, so a violation (found as soon as its byte is
    /// in, even inside a frame still arriving) fails the connection with a
    /// Close after the echoes of the frames before it, never inside one.
    /// `input` keeps only the payload of a frame still arriving.
    pub(super) fn process(&mut self, input: &mut Vec<u8>, out: &mut Vec<u8>) -> Step {
        let step = loop {
            let ready = match self.ws.advance(input, &mut self.fed) {
                Ok(Some(r)) => r,
                Ok(None) => break Step::Open,
                Err(e) => break fail(out, e.close_code(), &e.to_string()),
            };
            match ready {
                Ready::DataFrame { opcode, fin, len } => {
                    if len > self.opts.max_frame as u64 {
                        break fail(out, 1009, "frame too large");
                    }
                    let len = len as usize;
                    let c = Current {
                        fin,
                        opcode,
                        start: self.fed,
                        len,
                    };
                    if len > 0 {
                        // Make room for the rest of a large frame in one go.
                        input.reserve((c.start + len).saturating_sub(input.len()));
                        self.current = Some(c);
                        continue;
                    }
                    self.data_frame(c, &[], out);
                }
                Ready::Data { end, .. } => {
                    let Some(c) = self.current else { continue };
                    if end == c.start + c.len {
                        self.current = None;
                        self.data_frame(c, &input[c.start..end], out);
                    }
                }
                Ready::Ping => {
                    if let Message::Ping(p) = self.ws.message(ready, input) {
                        push_header(out, true, opcode::PONG, p.len() as u64, None);
                        out.extend_from_slice(p);
                    }
                }
                Ready::Close(code) => {
                    // Echo the status code (RFC 6455 §5.5.1), not the reason.
                    let code = code.map(u16::to_be_bytes);
                    let code = code.as_ref().map_or(&[][..], |c| &c[..]);
                    push_header(out, true, opcode::CLOSE, code.len() as u64, None);
                    out.extend_from_slice(code);
                    break Step::Closed;
                }
                _ => {}
            }
        };
        // Bytes before `keep` are answered and can go: all the reader has
        // consumed, but the payload of a frame still arriving.
        let keep = self.current.map_or(self.fed, |c| c.start);
        input.drain(..keep);
        self.fed -= keep;
        if let Some(c) = &mut self.current {
            c.start -= keep;
        }
        step
    }

    /// Echoes one complete (valid, unmasked) data frame, with the faults.
    fn data_frame(&mut self, c: Current, payload: &[u8], out: &mut Vec<u8>) {
        let f = self.opts.faults;
        if c.opcode != opcode::CONTINUATION {
            let n = self.messages + 1;
            self.dropping = nth(f.drop_every, n);
            self.corrupt_pending = nth(f.corrupt_every, n);
            self.duplicate = c.fin && nth(f.duplicate_every, n);
        }
        if !self.dropping {
            let at = out.len();
            push_header(out, c.fin, c.opcode, payload.len() as u64, None);
            let body = out.len();
            out.extend_from_slice(payload);
            if self.corrupt_pending && !payload.is_empty() {
                out[body + payload.len() / 2] ^= 0x01;
                self.corrupt_pending = false;
            }
            if self.duplicate {
                out.extend_from_within(at..);
            }
        }
        if c.fin {
            self.messages += 1;
            if nth(self.opts.ping_every, self.messages) {
                self.pings_sent += 1;
                let tag = self.pings_sent.to_be_bytes();
                push_header(out, true, opcode::PING, tag.len() as u64, None);
                out.extend_from_slice(&tag);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FrameWriter;
    use monoio::io::AsyncWriteRent;
    use ws_relay_core::ws::frame::{build_frame, parse_header};

    fn frames(mut b: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
        let mut v = Vec::new();
        while !b.is_empty() {
            let h = parse_header(b).unwrap().unwrap();
            assert!(h.mask.is_none());
            let end = h.frame_len() as usize;
            v.push((h.fin, h.opcode, b[h.header_len..end].to_vec()));
            b = &b[end..];
        }
        v
    }

    fn client_bytes(msgs: &[&[u8]], fragment: usize) -> Vec<u8> {
        let mut w = FrameWriter::new(fragment);
        for m in msgs {
            w.push_message(opcode::BINARY, m);
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
        assert_eq!(f[0].1, opcode::BINARY);
        assert_eq!(f[3], (true, opcode::BINARY, b"x".to_vec()));
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
            .filter(|x| x.1 == opcode::BINARY)
            .map(|x| &x.2)
            .collect();
        let pings = f.iter().filter(|x| x.1 == opcode::PING).count();
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
        let mut v = build_frame(opcode::BINARY, payload, Some(KEY));
        v[0] = b0;
        v
    }

    /// Feeds `wire` in one piece to a fresh echoer.
    fn run(wire: &[Vec<u8>]) -> (Step, Vec<(bool, u8, Vec<u8>)>) {
        let opts = EchoOptions::default();
        let mut e = Echoer::new(&opts);
        let mut input = wire.concat();
        let mut out = Vec::new();
        let step = e.process(&mut input, &mut out);
        (step, frames(&out))
    }

    fn close_of(f: &(bool, u8, Vec<u8>)) -> u16 {
        assert_eq!((f.0, f.1), (true, opcode::CLOSE));
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
        assert_eq!(f[0], (false, opcode::TEXT, b"caf\xc3".to_vec()));
        assert_eq!(f[1], (true, opcode::PONG, b"p".to_vec()));
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
        assert_eq!(f[0], (false, opcode::TEXT, b"ok\xf4".to_vec()));
        assert_eq!(close_of(&f[1]), 1007);
        // A sequence still open at FIN is invalid too; binary is never checked.
        let (step, f) = run(&[raw(FIN | BIN, b"\xff"), raw(FIN | TEXT, b"a\xe2\x82")]);
        assert_eq!(step, Step::Failed(1007));
        assert_eq!(f[0], (true, opcode::BINARY, vec![0xff]));
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
        assert_eq!(frames(&out), [(true, opcode::TEXT, text.clone())]);
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
        assert_eq!(f[0], (true, opcode::BINARY, b"first".to_vec()));
        assert_eq!((f.len(), close_of(&f[1])), (2, 1002));
        let (step, f) = run(&[raw(TEXT, b"frag"), raw(FIN | TEXT, b"new")]);
        assert_eq!(step, Step::Failed(1002));
        assert_eq!(f[0], (false, opcode::TEXT, b"frag".to_vec()));
        assert_eq!((f.len(), close_of(&f[1])), (2, 1002));
    }

    #[test]
    fn bad_headers_fail_1002() {
        let mut unmasked = Vec::new();
        push_header(&mut unmasked, true, opcode::BINARY, 2, None);
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
        assert_eq!(f, [(true, opcode::CLOSE, vec![])]);
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
                (true, opcode::TEXT, b"one".to_vec()),
                (true, opcode::TEXT, b"3".to_vec())
            ]
        );
    }
}
