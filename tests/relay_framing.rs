//! Copy mode follows frame boundaries as bytes pass (docs/relay.md "Session end") so it can inject
//! a Close frame at a boundary. These tests split frames at awkward places
//! (inside 2-, 4- and 10-byte headers, inside masks, mid-payload, control
//! frames between fragments), deliver the pieces in separate TCP reads, then
//! make the relay inject a Close: 1014 when the target vanishes, 1001 on the
//! idle timeout (masked towards the target). A tracker that lost sync would
//! inject into the middle of a frame and the peer would see a protocol error.
//! Copy mode only (splice never sees frames), under both drivers.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::{Bytes, Message};

matrix!(copy: target_frames_split_across_reads_then_target_vanishes, client_frames_split_across_reads_then_idle_close, a_target_that_vanishes_under_a_blocked_write_resets_the_client);

/// The frame sequence both tests send, encoded with or without a mask, and
/// the cut points: a few bytes into every frame header, and mid-payload.
fn frames(mask: Option<[u8; 4]>) -> (Vec<u8>, Vec<usize>) {
    let parts: Vec<Vec<u8>> = vec![
        encode_frame(true, OP_TEXT, "t".repeat(200).as_bytes(), mask),
        encode_frame(true, OP_BINARY, &pattern(70_000, 3), mask),
        encode_frame(false, OP_TEXT, b"frag-", mask),
        encode_frame(true, OP_PING, b"p", mask),
        encode_frame(true, OP_CONT, b"ment", mask),
        encode_frame(true, OP_BINARY, b"", mask),
        encode_frame(true, OP_TEXT, "u".repeat(126).as_bytes(), mask),
    ];
    let mut bytes = Vec::new();
    let mut cuts = Vec::new();
    for p in parts {
        let start = bytes.len();
        for k in [1, 2, 3, 5, 7, 9, 11, 13] {
            if k < p.len() {
                cuts.push(start + k);
            }
        }
        if p.len() > 40 {
            cuts.push(start + p.len() / 2);
        }
        bytes.extend(p);
        cuts.push(bytes.len());
    }
    cuts.sort_unstable();
    cuts.dedup();
    (bytes, cuts)
}

fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut prev = 0;
    for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
        if c > prev {
            out.push(bytes[prev..c].to_vec());
            prev = c;
        }
    }
    out
}

/// Expects the messages `frames` encodes. `pong_expected`: the frames went
/// to the echo target, whose Pong comes back (order vs. the text is free).
async fn expect_frames(ws: &mut Ws, from_target: bool) {
    expect_text(ws, &"t".repeat(200)).await;
    expect_binary(ws, &pattern(70_000, 3)).await;
    let (mut control, mut text) = (false, false);
    while !(control && text) {
        match next_msg(ws, STEP).await {
            Message::Ping(p) if from_target && p.as_ref() == b"p" => control = true,
            Message::Pong(p) if !from_target && p.as_ref() == b"p" => control = true,
            Message::Text(t) if t.as_str() == "frag-ment" => text = true,
            other => panic!(
                "expected the fragmented text and a control frame, got {}",
                describe(&other)
            ),
        }
    }
    expect_binary(ws, b"").await;
    expect_text(ws, &"u".repeat(126)).await;
}

async fn target_frames_split_across_reads_then_target_vanishes(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let (bytes, cuts) = frames(None);
    for piece in pieces(&bytes, &cuts) {
        target.raw(Some(conn), piece);
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    expect_frames(&mut ws, true).await;
    // Our automatic Pong goes out with the next read; let it reach the target.
    within(STEP, "flush", futures_util::SinkExt::flush(&mut ws))
        .await
        .unwrap();
    target
        .wait_event(
            "the client's Pong",
            STEP,
            |e| matches!(e, Ev::Msg { msg: Message::Pong(p), .. } if p.as_ref() == b"p"),
        )
        .await;
    target.vanish(Some(conn));
    expect_close(&mut ws, 1014, Duration::from_secs(5)).await;
    expect_end(&mut ws, Duration::from_secs(5)).await;
}

async fn client_frames_split_across_reads_then_idle_close(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        idle_timeout_secs: 1,
        ..v.config()
    })
    .await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let (bytes, cuts) = frames(Some([0xa1, 0x00, 0xff, 0x5c]));
    for piece in pieces(&bytes, &cuts) {
        within(STEP, "raw write", ws.get_mut().write_all(&piece))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    expect_frames(&mut ws, false).await;
    // A normal message afterwards still round-trips.
    send(&mut ws, Message::Binary(Bytes::from_static(b"after"))).await;
    expect_binary(&mut ws, b"after").await;
    // Now idle: Close 1001 both ways, masked towards the target.
    expect_close(&mut ws, 1001, Duration::from_secs(6)).await;
    let ev = target
        .wait_event("Close 1001 at the target", Duration::from_secs(5), |e| {
            matches!(
                e,
                Ev::Msg {
                    msg: Message::Close(_),
                    ..
                } | Ev::Ended { .. }
            )
        })
        .await;
    match ev {
        Ev::Msg {
            msg: Message::Close(Some(cf)),
            conn: c,
        } => {
            assert_eq!(c, conn);
            assert_eq!(u16::from(cf.code), 1001);
        }
        other => panic!("target saw {other:?} instead of a clean masked Close 1001"),
    }
}

/// A target that stops reading, then vanishes while the relay is blocked
/// writing to it: with bytes unread, its kernel resets the connection, and
/// the relay may learn of it from the failed write rather than from a read.
/// Either way the client's connection is reset too, promptly, with no Close
/// frame invented for a target that sent none (docs/relay.md "Session end": what
/// the client would see without the relay, and what Autobahn checks). It
/// used to get a bare FIN when the write noticed first, then 1014. Several
/// sessions, since which side notices first is a race.
async fn a_target_that_vanishes_under_a_blocked_write_resets_the_client(v: Variant) {
    let mut target = Target::start(TargetOpts {
        stall: true,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(v.config()).await;
    let chunk = encode_frame(true, OP_BINARY, &pattern(64 * 1024, 9), Some([1, 2, 3, 4]));
    for round in 0..6 {
        let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
        let (conn, _) = target.connected().await;
        // Far more than the target's receive and the relay's send buffers
        // hold: the relay ends up parked in a write toward the target.
        let _ = tokio::time::timeout(Duration::from_millis(800), async {
            for _ in 0..512 {
                ws.get_mut().write_all(&chunk).await?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
        target.vanish(Some(conn));
        match try_next(&mut ws, Duration::from_secs(5)).await {
            Next::End(e) if format!("{e:?}").contains("reset") => {}
            Next::End(e) => panic!("round {round}: ended without the target's reset ({e:?})"),
            Next::Msg(Message::Close(_)) => panic!(
                "round {round}: the relay spoke for a target that reset: {:?}",
                raw_close(&ws)
            ),
            Next::Msg(other) => panic!("round {round}: unexpected {}", describe(&other)),
            Next::Timeout => panic!("round {round}: nothing within 5 s of the target vanishing"),
        }
    }
}
