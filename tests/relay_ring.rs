//! `forward = "ring"` at its limits, over the wire: a session whose
//! readers never read holds a few ring buffers per direction and no more;
//! when such sessions run the ring dry, the next reads go through the copy
//! pool, counted in `/metrics` (`ws_relay_ring_empty_total`), and another
//! session is not stalled; and every buffer comes back when those sessions
//! end (docs/performance.md "Choosing the forward mode"). The rest of ring
//! mode runs in the `matrix!` tests beside copy and splice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// At most this many sessions whose client floods and never reads, toward
/// a target that greets with more than the sockets hold and never reads:
/// both directions end up parked in a write, each holding its buffers.
/// The test adds them until the ring has run dry. (Whether it stays full
/// is timing: a direction that found it dry parks in a `copy` write and
/// holds none, and a buffer freed later may stay free.)
const MAX_STUCK: usize = 14;

/// One shard sized for 15 connections (the stuck sessions and one more): a
/// ring of 16 buffers (two per connection, a power of two, at least 16;
/// `net/ring.rs`), which the stuck sessions run dry.
const RING_ENTRIES: u64 = 16;

/// What one stuck direction may hold (docs/performance.md "Choosing the
/// forward mode"): the buffer it is writing and the four its receive may
/// have queued behind it.
const PER_DIRECTION: u64 = 5;

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
async fn a_dry_ring_is_counted_and_never_stalls_other_sessions() {
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
        max_connections: 15,
        ..RelayConfig::default()
            .with_driver(Driver::IoUring)
            .with_forward(Forward::Ring)
    })
    .await;

    let chunk = encode_frame(true, OP_BINARY, &pattern(64 * 1024, 9), Some([1, 2, 3, 4]));
    let mut stuck = Vec::new();
    loop {
        assert!(
            stuck.len() < MAX_STUCK,
            "{MAX_STUCK} stuck sessions and the ring never ran dry: {} of {RING_ENTRIES} lent",
            metric(relay.port, "ws_relay_ring_buffers_lent").await
        );
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
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lent = metric(relay.port, "ws_relay_ring_buffers_lent").await;
        assert!(
            lent <= RING_ENTRIES,
            "{lent} ring buffers lent, the ring has {RING_ENTRIES}"
        );
        if stuck.len() == 1 {
            // One stuck session alone: a bounded handful, not the ring.
            assert!(
                (2..=2 * PER_DIRECTION).contains(&lent),
                "one stuck session holds {lent} ring buffers (at most {PER_DIRECTION} per direction)"
            );
        }
        // The ring ran dry, and the reads that found it so were counted
        // (they went through the copy pool).
        if metric(relay.port, "ws_relay_ring_empty_total").await > 0 {
            break;
        }
    }

    // Another session still works, promptly, whichever path its reads take.
    let mut ws = connect(AuthMode::Header, relay.port, ALICE_TOKEN, &echo.url("/")).await;
    for i in 0..20 {
        let text = format!("still moving {i}");
        send(&mut ws, Message::text(text.clone())).await;
        expect_text(&mut ws, &text).await;
    }
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
