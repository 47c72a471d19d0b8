//! `forward = "ring"` at its limits, over the wire: sessions whose readers
//! never read hold one ring buffer per direction and no more; when they
//! hold every buffer, another session's reads go through the copy pool,
//! counted in `/metrics` (`ws_relay_ring_empty_total`), and it is not
//! stalled; and every buffer comes back when those sessions end
//! (docs/performance.md "Choosing the forward mode"). The rest of ring mode
//! runs in the `matrix!` tests beside copy and splice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// Sessions whose client floods and never reads, toward a target that
/// greets with more than the sockets hold and never reads: both
/// directions end up parked in a write, each holding its buffer.
const STUCK: usize = 8;

/// One shard sized for 10 connections: a ring of 16 buffers (two per
/// connection, a power of two, at least 16; `net/ring.rs`), which the
/// stuck sessions' 16 directions take whole.
const RING_ENTRIES: u64 = 16;

/// A sample of the relay's `/metrics` (the counters it prints by name).
async fn metric(port: u16, name: &str) -> u64 {
    let resp = http::get(port, "/metrics").await.expect("GET /metrics");
    assert_eq!(resp.status, 200);
    let text = String::from_utf8_lossy(&resp.body);
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test]
async fn a_full_ring_reads_as_copy_and_never_stalls_other_sessions() {
    let stalled = Target::start(TargetOpts {
        stall: true,
        echo: false,
        report_msgs: false,
        greeting: vec![Greeting::Binary(pattern(8 << 20, 3))],
        ..TargetOpts::default()
    })
    .await;
    let echo = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        workers: 1,
        max_connections: 10,
        ..RelayConfig::default()
            .with_driver(Driver::IoUring)
            .with_forward(Forward::Ring)
    })
    .await;

    let chunk = encode_frame(true, OP_BINARY, &pattern(64 * 1024, 9), Some([1, 2, 3, 4]));
    let mut stuck = Vec::new();
    for _ in 0..STUCK {
        let mut ws = connect(AuthMode::Header, relay.port, ALICE_TOKEN, &stalled.url("/")).await;
        // Far more than the target's receive and the relay's send buffers
        // hold: the relay ends up parked in a write toward the target.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            for _ in 0..256 {
                ws.get_mut().write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        stuck.push(ws);
    }

    // Every buffer is held, one per stuck direction, none more.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lent = metric(relay.port, "ws_relay_ring_buffers_lent").await;
        if lent == RING_ENTRIES {
            break;
        }
        assert!(
            lent < RING_ENTRIES,
            "{lent} ring buffers lent, the ring has {RING_ENTRIES}"
        );
        assert!(
            Instant::now() < deadline,
            "only {lent} of {RING_ENTRIES} ring buffers held by the stuck sessions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let empty_before = metric(relay.port, "ws_relay_ring_empty_total").await;

    // Another session still works, promptly: its reads find the ring empty
    // and go through the copy pool.
    let mut ws = connect(AuthMode::Header, relay.port, ALICE_TOKEN, &echo.url("/")).await;
    for i in 0..20 {
        let text = format!("still moving {i}");
        send(&mut ws, Message::text(text.clone())).await;
        expect_text(&mut ws, &text).await;
    }
    let empty_after = metric(relay.port, "ws_relay_ring_empty_total").await;
    assert!(
        empty_after >= empty_before + 20,
        "20 client messages read while the ring was empty, but ws_relay_ring_empty_total went {empty_before} -> {empty_after}"
    );
    close_and_expect_echo(&mut ws, 1000, "done").await;

    // The stuck sessions end: every buffer goes back to the ring.
    drop(stuck);
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lent = metric(relay.port, "ws_relay_ring_buffers_lent").await;
        if lent == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lent} ring buffers still lent after every session ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
