//! The relay's first-message auth JSON (`{"token":…,"target":…}`) and the
//! header/query credentials of header mode: any bytes give credentials or a
//! precise error, never a panic, and the token never shows in `Debug`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::http::head::parse_request_head;
use ws_relay_core::relay::auth::{from_request, parse_auth_json};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = parse_auth_json(data) {
        let expected = format!(
            "Credentials {{ token: \"<redacted>\", target: {:?} }}",
            c.target
        );
        assert_eq!(format!("{c:?}"), expected, "Debug must redact the token");
    }
    if let Ok(Some(head)) = parse_request_head(data, 8192, 32) {
        let _ = from_request(&head);
    }
});
