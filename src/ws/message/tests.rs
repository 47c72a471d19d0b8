use super::*;
use crate::ws::frame::build_frame;

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

fn frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = build_frame(op, payload, MASK);
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

/// What a reader makes of `stream` fed in pieces cut at `cuts`.
fn read(mode: Mode, limit: usize, stream: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut r = MessageReader::new(Role::FromClient, mode, limit);
    let mut out = Vec::new();
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut data = Vec::new();
    for w in bounds.windows(2) {
        let mut chunk = stream[w[0]..w[1]].to_vec();
        let mut pos = 0;
        loop {
            match r.next(&mut chunk, &mut pos) {
                Ok(None) => break,
                Ok(Some(Message::Data { start, end })) => {
                    data.extend_from_slice(&chunk[start..end]);
                    continue;
                }
                Ok(Some(m)) => {
                    if !data.is_empty() {
                        out.push(format!("data {}", String::from_utf8_lossy(&data)));
                        data.clear();
                    }
                    out.push(show(&m));
                }
                Err(e) => {
                    out.push(format!("error {} {e}", e.close_code()));
                    return out;
                }
            }
        }
    }
    out
}

fn show(m: &Message) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match m {
        Message::Text(t) => format!("text {}", s(t)),
        Message::Binary(b) => format!("binary {}", b.len()),
        Message::TooLarge => "too large".into(),
        Message::DataFrame { opcode, fin, len } => format!("frame {opcode} {fin} {len}"),
        Message::Data { .. } => unreachable!(),
        Message::Ping(p) => format!("ping {}", s(p)),
        Message::Pong(p) => format!("pong {}", s(p)),
        Message::Close { code, payload } => format!("close {code:?} {}", payload.len()),
    }
}

fn every_split_agrees(mode: Mode, limit: usize, stream: &[u8]) -> Vec<String> {
    let whole = read(mode, limit, stream, &[]);
    for cut in 0..stream.len() {
        let split = read(mode, limit, stream, &[cut, cut + 1, cut + 5]);
        assert_eq!(split, whole, "cut {cut}");
    }
    whole
}

#[test]
fn fragments_with_control_frames_between_them() {
    let mut s = frame(false, opcode::TEXT, "κό".as_bytes());
    s.extend(frame(true, opcode::PING, b"p"));
    s.extend(frame(false, opcode::CONTINUATION, &"σμε".as_bytes()[..1]));
    s.extend(frame(true, opcode::CONTINUATION, &"σμε".as_bytes()[1..]));
    s.extend(frame(true, opcode::BINARY, &[7; 300]));
    s.extend(frame(true, opcode::PONG, b""));
    s.extend(frame(true, opcode::CLOSE, b"\x03\xe8bye"));
    let got = every_split_agrees(Mode::Whole, 1000, &s);
    assert_eq!(
        got,
        [
            "ping p",
            "text κόσμε",
            "binary 300",
            "pong ",
            "close Some(1000) 5"
        ]
    );
}

#[test]
fn utf8_fails_fast_across_fragments() {
    // U+110000 is impossible at its second byte, in the next fragment.
    let mut s = frame(false, opcode::TEXT, b"ok \xf4");
    s.extend(frame(false, opcode::CONTINUATION, b"\x90"));
    s.extend(frame(true, opcode::CONTINUATION, b"\x80\x80"));
    let got = every_split_agrees(Mode::Whole, 1000, &s);
    assert_eq!(got, ["error 1007 text message is not valid UTF-8"]);
    // A sequence left open at the end of the message.
    let s = frame(true, opcode::TEXT, b"\xe2\x82");
    assert_eq!(
        read(Mode::Whole, 100, &s, &[])[0],
        "error 1007 text message is not valid UTF-8"
    );
    // Binary is not judged.
    let s = frame(true, opcode::BINARY, b"\xff");
    assert_eq!(read(Mode::Whole, 100, &s, &[]), ["binary 1"]);
}

#[test]
fn close_payloads_are_judged() {
    let code = |payload: &[u8]| read(Mode::Whole, 100, &frame(true, opcode::CLOSE, payload), &[]);
    assert_eq!(code(b""), ["close None 0"]);
    assert_eq!(code(b"\x03"), ["error 1002 close payload of 1 byte"]);
    assert_eq!(code(b"\x03\xed"), ["error 1002 invalid close code 1005"]);
    assert_eq!(
        code(b"\x03\xe8\xff"),
        ["error 1007 close reason is not UTF-8"]
    );
    assert_eq!(code(b"\x0f\xa0"), ["close Some(4000) 2"]);
}

#[test]
fn limits_refuse_or_skip() {
    let mut s = frame(false, opcode::TEXT, &[b'a'; 60]);
    s.extend(frame(true, opcode::PING, b"mid"));
    s.extend(frame(true, opcode::CONTINUATION, &[b'b'; 60]));
    s.extend(frame(true, opcode::TEXT, b"after"));
    assert_eq!(
        every_split_agrees(Mode::Whole, 100, &s),
        ["ping mid", "error 1009 message larger than 100 bytes"]
    );
    assert_eq!(
        every_split_agrees(Mode::SkipOversize, 100, &s),
        ["ping mid", "too large", "text after"]
    );
    // Exactly at the limit is fine.
    let s = frame(true, opcode::BINARY, &[0; 100]);
    assert_eq!(read(Mode::Whole, 100, &s, &[]), ["binary 100"]);
}

#[test]
fn stream_mode_passes_data_through_and_keeps_controls_whole() {
    let mut s = frame(false, opcode::BINARY, b"hello ");
    s.extend(frame(true, opcode::PING, b"p!"));
    s.extend(frame(true, opcode::CONTINUATION, b"world"));
    s.extend(frame(true, opcode::TEXT, b"\xce"));
    let got = every_split_agrees(Mode::Stream, 0, &s[..s.len() - 1]);
    assert_eq!(got[0], "frame 2 false 6");
    assert_eq!(got[got.len() - 1], "frame 1 true 1");
    let joined = read(Mode::Stream, 0, &s, &[]);
    assert_eq!(
        joined,
        [
            "frame 2 false 6",
            "data hello ",
            "ping p!",
            "frame 0 true 5",
            "data world",
            "frame 1 true 1",
            "error 1007 text message is not valid UTF-8"
        ]
    );
}

#[test]
fn stops_right_after_the_message_and_is_idle_after_it() {
    let mut s = frame(true, opcode::TEXT, b"{\"auth\":1}");
    let end = s.len();
    s.extend_from_slice(b"target bytes");
    let mut r = MessageReader::new(Role::FromClient, Mode::Whole, 100);
    let mut pos = 0;
    assert!(matches!(
        r.next(&mut s, &mut pos),
        Ok(Some(Message::Text(_)))
    ));
    assert_eq!(pos, end);
    assert_eq!(&s[pos..], b"target bytes");
    assert!(r.is_idle());
    // Unmasked client frames are refused.
    let mut r = MessageReader::new(Role::FromClient, Mode::Whole, 100);
    let mut s = build_frame(opcode::TEXT, b"x", None);
    assert_eq!(r.next(&mut s, &mut 0).unwrap_err().close_code(), 1002);
}
