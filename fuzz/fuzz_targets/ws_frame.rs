//! WebSocket frame headers and the frame-boundary tracker the passthrough
//! relies on to inject a Close only between frames. The tracker is fed one
//! stream cut at fuzz-chosen points and byte by byte: what it reports after
//! each cut (boundary, Close seen) must not depend on how reads split the
//! stream. `parse_header` must agree with `encode_header` on what it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::ws::frame::{parse_header, FrameTracker};
use ws_relay_core_fuzz::{chunks, split_front};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = split_front(data, usize::from(mode >> 4));
    if let Ok(Some(h)) = parse_header(stream) {
        assert!(h.header_len <= stream.len());
        assert!(h.header_len >= 2 && h.header_len <= 14);
        if h.is_control() {
            assert!(
                h.payload_len <= 125 && h.fin,
                "control frames are short and whole"
            );
        }
    }
    let fresh = || {
        if mode & 1 == 1 {
            FrameTracker::allowing_reserved_bits()
        } else {
            FrameTracker::default()
        }
    };
    // Byte by byte: the state after every prefix.
    let mut one = fresh();
    let mut after = Vec::with_capacity(stream.len() + 1);
    after.push((one.at_frame_boundary(), one.saw_close()));
    for b in stream {
        one.observe(std::slice::from_ref(b));
        after.push((one.at_frame_boundary(), one.saw_close()));
    }
    // The same stream in fuzz-chosen chunks.
    let mut cut = fresh();
    let mut at = 0;
    for chunk in chunks(stream, sizes) {
        cut.observe(chunk);
        at += chunk.len();
        assert_eq!(
            (cut.at_frame_boundary(), cut.saw_close()),
            after[at],
            "tracker state at byte {at} depends on how the stream was split"
        );
    }
});
