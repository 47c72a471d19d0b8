//! HTTP/1.1 request and response heads, as read off the client and target
//! sockets: any bytes give a head, "incomplete" or an error, never a panic,
//! and a complete head never claims more bytes than it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::http::head::{parse_request_head, parse_response_head};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = parse_request_head(data, 8192, 32) {
        assert!(head.len <= data.len() && head.len <= 8192);
        let _ = (head.path(), head.query(), head.is_websocket_upgrade());
    }
    if let Ok(Some(head)) = parse_response_head(data) {
        let _ = head.header("upgrade");
    }
});
