//! The push hub's `POST` body by the seed's rules: a request or a JSON
//! reason, never a panic; an accepted push frames once into one whole text
//! frame carrying valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::hub::message::parse;
use ws_relay_core::ws::frame::parse_header;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse(data, "fuzz".to_string()) else {
        return;
    };
    let _ = req.push.audience();
    let frame = req.push.frame(1_700_000_000_000);
    let h = parse_header(&frame)
        .expect("valid header")
        .expect("whole header");
    assert_eq!(h.frame_len(), frame.len() as u64, "one whole frame");
    let body: serde_json::Value =
        serde_json::from_slice(&frame[h.header_len..]).expect("the frame carries JSON");
    assert!(body["event"].is_string());
    assert!(body["data"]["ts"].is_u64());
});
