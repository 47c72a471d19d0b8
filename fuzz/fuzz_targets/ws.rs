//! The WebSocket layer (`ws::decoder`, `ws::message`): one stream, read
//! whole and cut at fuzz-chosen points, must give the same messages, data
//! pieces (up to the failing frame's, in `Mode::Stream`), control frames
//! and verdict, in every role and mode; never a
//! panic, and data ranges stay inside their chunk. The relay's passthrough
//! view (boundary, Close seen) after each cut must equal its state fed byte
//! by byte, and must leave the bytes untouched. `parse_header` accepts only
//! well-formed headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::ws::decoder::{Decoder, Role};
use ws_relay_core::ws::frame::parse_header;
use ws_relay_core::ws::message::{Message, MessageReader, Mode};
use ws_relay_core_fuzz::{chunks, split_front};

/// Everything a reader reported, data pieces joined per frame.
fn read<'a>(
    role: Role,
    mode: Mode,
    limit: usize,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> Vec<String> {
    let mut r = MessageReader::new(role, mode, limit);
    let mut seen = Vec::new();
    let mut data = Vec::new();
    for piece in pieces {
        let mut chunk = piece.to_vec();
        let len = chunk.len();
        let mut pos = 0;
        loop {
            match r.next(&mut chunk, &mut pos) {
                Ok(None) => break,
                Ok(Some(Message::Data { start, end })) => {
                    assert!(start <= end && end <= len);
                    data.extend_from_slice(&chunk[start..end]);
                }
                Ok(Some(m)) => {
                    if !data.is_empty() {
                        seen.push(format!("data {:?}", std::mem::take(&mut data)));
                    }
                    if let Message::Text(t) = m {
                        assert!(std::str::from_utf8(t).is_ok(), "text must be UTF-8");
                    }
                    seen.push(format!("{m:?}"));
                }
                Err(e) => {
                    // Streamed data leaves as it arrives: how much of the
                    // failing frame went out before the bad byte depends on
                    // the split, and is allowed to.
                    seen.push(format!("error {e:?} {}", e.close_code()));
                    return seen;
                }
            }
            assert!(pos <= len);
        }
    }
    if !data.is_empty() {
        seen.push(format!("data {data:?}"));
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = split_front(data, usize::from(mode >> 4));
    if let Ok(Some(h)) = parse_header(stream) {
        assert!(h.header_len >= 2 && h.header_len <= 14 && h.header_len <= stream.len());
        if h.is_control() {
            assert!(
                h.payload_len <= 125 && h.fin,
                "control frames are short and whole"
            );
        }
    }

    // The message reader: any split gives the same messages.
    let role = if mode & 1 == 0 {
        Role::FromClient
    } else {
        Role::FromServer
    };
    let (how, limit) = match (mode >> 1) & 3 {
        0 => (Mode::Whole, 64),
        1 => (Mode::Whole, 1 << 20),
        2 => (Mode::SkipOversize, 64),
        _ => (Mode::Stream, 0),
    };
    let whole = read(role, how, limit, std::iter::once(stream));
    let split = read(role, how, limit, chunks(stream, sizes));
    assert_eq!(whole, split, "messages depend on how the stream was split");

    // The relay's passthrough view: byte by byte vs. in chunks.
    let fresh = || {
        if mode & 8 == 8 {
            Decoder::passthrough().allowing_reserved_bits()
        } else {
            Decoder::passthrough()
        }
    };
    let mut one = fresh();
    let mut after = Vec::with_capacity(stream.len() + 1);
    after.push((one.at_frame_boundary(), one.saw_close()));
    for b in stream {
        one.observe(std::slice::from_ref(b));
        after.push((one.at_frame_boundary(), one.saw_close()));
    }
    let mut cut = fresh();
    let mut at = 0;
    for chunk in chunks(stream, sizes) {
        cut.observe(chunk);
        at += chunk.len();
        assert_eq!(
            (cut.at_frame_boundary(), cut.saw_close()),
            after[at],
            "passthrough state at byte {at} depends on how the stream was split"
        );
    }
});
