//! The tunnel bridge's frame decoder (client frames, masked; or server
//! frames for the tunnel client): the data bytes and control pieces it
//! yields, and whether it fails, must not depend on how reads split the
//! stream; never a panic, and Data ranges stay inside their chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::tunnel::decode::{Decoder, Piece};
use ws_relay_core_fuzz::{chunks, split_front};

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Data(Vec<u8>),
    Control(String),
    Failed,
}

fn decode<'a>(mut dec: Decoder, pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Seen> {
    let mut seen = Vec::new();
    let mut data = Vec::new();
    for piece in pieces {
        let mut chunk = piece.to_vec();
        let mut pos = 0;
        loop {
            match dec.next(&mut chunk, &mut pos) {
                Ok(None) => break,
                Ok(Some(Piece::Data { start, end })) => {
                    assert!(start <= end && end <= chunk.len());
                    data.extend_from_slice(&chunk[start..end]);
                }
                Ok(Some(p)) => {
                    if !data.is_empty() {
                        seen.push(Seen::Data(std::mem::take(&mut data)));
                    }
                    seen.push(Seen::Control(format!("{p:?} {:?}", dec.control_payload())));
                }
                Err(_) => {
                    if !data.is_empty() {
                        seen.push(Seen::Data(std::mem::take(&mut data)));
                    }
                    seen.push(Seen::Failed);
                    return seen;
                }
            }
        }
    }
    if !data.is_empty() {
        seen.push(Seen::Data(data));
    }
    seen
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = split_front(data, usize::from(mode >> 4));
    let fresh = || {
        if mode & 1 == 1 {
            Decoder::for_server_frames()
        } else {
            Decoder::default()
        }
    };
    let whole = decode(fresh(), std::iter::once(stream));
    let split = decode(fresh(), chunks(stream, sizes));
    assert_eq!(whole, split, "decoding depends on how the stream was split");
});
