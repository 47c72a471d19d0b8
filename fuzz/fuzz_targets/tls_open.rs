//! The TLS record opener on arbitrary records, fed the way `tls/stream.rs`
//! feeds it (a header `record_len` accepted, then exactly that many bytes):
//! a record nobody sealed with the session's keys must fail (authenticate
//! or fail, never hand out a byte, never panic), under every suite and any
//! sequence number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::tls::record::{record_len, HEADER_LEN};
use ws_relay_core_fuzz::{take_u64, Material, SUITES};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, data)) = data.split_first() else {
        return;
    };
    let suite = SUITES[usize::from(sel) % SUITES.len()];
    let (seq, data) = take_u64(data);
    let (material, _) = Material::take(&[]);
    let mut stream = data;
    let mut keys = material.keys(suite, seq);
    // Several records back to back, as one read could bring them.
    while stream.len() >= HEADER_LEN {
        let header: [u8; HEADER_LEN] = stream[..HEADER_LEN].try_into().unwrap();
        let Ok(len) = record_len(&header) else {
            return;
        };
        if stream.len() < len {
            return;
        }
        let mut record = stream[..len].to_vec();
        let opened = keys.open(&mut record);
        assert!(opened.is_err(), "a forged record was accepted: {opened:?}");
        stream = &stream[len..];
    }
});
