//! Criterion micro-benchmarks of the pieces on the relay's hot paths: request
//! head parsing, frame header parsing and tracking, auth JSON parsing, token
//! lookup, and buffer-pool borrow/return.
//!
//! `cargo bench --bench hot_path`. Timings on a shared 2-vCPU VM are noisy;
//! compare runs side by side, and use `benches/instructions.sh` for counts.

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ws_relay_core::config::Config;
use ws_relay_core::http::head::parse_request_head;
use ws_relay_core::net::pool::BufferPool;
use ws_relay_core::relay::auth::parse_auth_json;
use ws_relay_core::ws::decoder::Decoder;
use ws_relay_core::ws::frame::{build_frame, opcode, parse_header};

const UPGRADE: &[u8] = b"GET /?token=abc HTTP/1.1\r\nHost: relay.example.com\r\nUser-Agent: bench/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\nOrigin: https://example.com\r\n\r\n";

fn http_head(c: &mut Criterion) {
    c.bench_function("parse_request_head/upgrade", |b| {
        b.iter(|| parse_request_head(black_box(UPGRADE), 8192, 100).unwrap())
    });
}

fn frames(c: &mut Criterion) {
    let masked = build_frame(opcode::TEXT, &[0x41; 64], Some([1, 2, 3, 4]));
    c.bench_function("parse_header/64B_masked", |b| {
        b.iter(|| parse_header(black_box(&masked)).unwrap())
    });
    // What copy mode does per chunk: follow frame boundaries of a burst.
    let burst: Vec<u8> = (0..256)
        .flat_map(|_| build_frame(opcode::BINARY, &[0u8; 64], Some([9, 9, 9, 9])))
        .collect();
    let mut g = c.benchmark_group("frame_tracker");
    g.throughput(Throughput::Bytes(burst.len() as u64));
    g.bench_function("observe/256x64B", |b| {
        b.iter(|| {
            let mut t = Decoder::passthrough();
            t.observe(black_box(&burst));
            t.at_frame_boundary()
        })
    });
    g.finish();
}

fn auth(c: &mut Criterion) {
    let msg = br#"{"token":"0123456789abcdef0123456789abcdef","target":"wss://stream.example.com/feed?x=1"}"#;
    c.bench_function("parse_auth_json", |b| {
        b.iter(|| parse_auth_json(black_box(msg)).unwrap())
    });
}

fn token_lookup(c: &mut Criterion) {
    let mut text = String::from("[server]\nenable_tls = false\n");
    for i in 0..100 {
        text.push_str(&format!(
            "[[users]]\nname = \"u{i}\"\ntoken = \"token-{i:032}\"\n"
        ));
    }
    let config = Config::parse(Path::new("bench.toml"), &text).unwrap();
    let wanted = format!("token-{:032}", 57);
    c.bench_function("authenticate/100_users", |b| {
        b.iter(|| {
            config
                .users
                .authenticate(black_box(wanted.as_bytes()))
                .unwrap()
        })
    });
}

fn pool(c: &mut Criterion) {
    let pool = BufferPool::new(16 * 1024, 64);
    drop(pool.borrow());
    c.bench_function("buffer_pool/borrow_return_16KiB", |b| {
        b.iter(|| {
            let buf = pool.borrow();
            black_box(buf.len())
        })
    });
}

criterion_group!(benches, http_head, frames, auth, token_lookup, pool);
criterion_main!(benches);
