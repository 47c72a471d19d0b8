//! Redis replies as a shard's own connections read them (`hub::resp`):
//! any bytes give replies, "not yet" or an error, never a panic; a reply
//! never takes more bytes than given; and the bytes cut at a fuzz-chosen
//! point give the same replies as the bytes whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_relay_core::hub::resp::{parse, Reply};

/// Replies from `buf` (consumed from the front) until "not yet" or an
/// error; `true` when it stopped at an error.
fn drain(buf: &mut Vec<u8>, out: &mut Vec<Reply>) -> bool {
    loop {
        match parse(buf) {
            Ok(Some((reply, used))) => {
                assert!(
                    used > 0 && used <= buf.len(),
                    "took {used} of {}",
                    buf.len()
                );
                buf.drain(..used);
                out.push(reply);
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    let mut whole = Vec::new();
    let whole_err = drain(&mut data.to_vec(), &mut whole);
    let cut = usize::from(cut).min(data.len());
    let mut streamed = Vec::new();
    let mut buf = data[..cut].to_vec();
    let mut err = drain(&mut buf, &mut streamed);
    if !err {
        buf.extend_from_slice(&data[cut..]);
        err = drain(&mut buf, &mut streamed);
    }
    assert_eq!(whole, streamed, "cut at {cut} changed the replies");
    assert_eq!(whole_err, err);
});
