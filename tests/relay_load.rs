//! Concurrency and backpressure over the wire: 500 concurrent sessions on 2
//! shards, every message checked in order (half first-message, half header
//! auth); 100 sessions exchanging messages while garbage, half-open, silent,
//! unauthed, reset and stalled connections hit the same relay and the config
//! is reloaded twice; and a slow reader on either side slows its writer with
//! the relay's memory bounded and nothing lost. Both drivers, both forward
//! modes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

matrix!(engine: five_hundred_sessions_two_shards, chaos_while_sessions_run, slow_reader_backpressure);

fn msg(session: usize, seq: usize) -> Message {
    let head = format!("s{session}-m{seq}-");
    let len = (session * 7 + seq * 13) % 700;
    if seq % 4 == 3 {
        let mut b = head.into_bytes();
        b.extend(pattern(len, session as u8));
        Message::binary(b)
    } else {
        Message::text(format!("{head}{}", "z".repeat(len)))
    }
}

/// Opens `n` sessions (at most 64 handshakes at a time), all held open.
async fn open_sessions(port: u16, target: &str, n: usize) -> Vec<Ws> {
    let sem = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (sem, target) = (sem.clone(), target.to_string());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.unwrap();
            let mode = if i % 2 == 0 {
                AuthMode::FirstMessage
            } else {
                AuthMode::Header
            };
            (i, connect(mode, port, ALICE_TOKEN, &target).await)
        });
    }
    let mut out: Vec<Option<Ws>> = (0..n).map(|_| None).collect();
    let mut failures = Vec::new();
    while let Some(res) = within(
        Duration::from_secs(120),
        "opening sessions",
        set.join_next(),
    )
    .await
    {
        match res {
            Ok((i, ws)) => out[i] = Some(ws),
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n} sessions failed to open; first: {}",
        failures.len(),
        failures[0]
    );
    out.into_iter().map(Option::unwrap).collect()
}

/// Runs `rounds` rounds of `per_round` pipelined messages on every session,
/// checking each echo in order, then closes cleanly. Returns failures.
async fn exchange(
    sessions: Vec<Ws>,
    rounds: usize,
    per_round: usize,
    pause: Duration,
) -> Vec<String> {
    let mut set = JoinSet::new();
    for (i, mut ws) in sessions.into_iter().enumerate() {
        set.spawn(async move {
            for r in 0..rounds {
                for k in 0..per_round {
                    ws.feed(msg(i, r * per_round + k))
                        .await
                        .map_err(|e| format!("session {i}: send: {e}"))?;
                }
                ws.flush()
                    .await
                    .map_err(|e| format!("session {i}: flush: {e}"))?;
                for k in 0..per_round {
                    let seq = r * per_round + k;
                    match try_next(&mut ws, Duration::from_secs(30)).await {
                        Next::Msg(m) if m == msg(i, seq) => {}
                        Next::Msg(m) => {
                            return Err(format!(
                                "session {i} message {seq}: got {}, expected {}",
                                describe(&m),
                                describe(&msg(i, seq))
                            ))
                        }
                        other => return Err(format!("session {i} message {seq}: {other:?}")),
                    }
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            close_and_expect_echo(&mut ws, 1000, "").await;
            Ok::<(), String>(())
        });
    }
    let mut failures = Vec::new();
    while let Some(res) = within(
        Duration::from_secs(180),
        "session exchanges",
        set.join_next(),
    )
    .await
    {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("task panicked: {e}")),
        }
    }
    failures
}

async fn five_hundred_sessions_two_shards(v: Variant) {
    let limit = raise_nofile_limit();
    assert!(
        limit >= 4096,
        "RLIMIT_NOFILE hard limit {limit} too low for 500 sessions"
    );
    let target = Target::start(TargetOpts {
        report_msgs: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig {
        workers: 2,
        ..v.config()
    })
    .await;
    let sessions = open_sessions(relay.port, &target.url("/load"), 500).await;
    assert_eq!(
        target.accepts(),
        500,
        "target connections for 500 open sessions"
    );
    let failures = exchange(sessions, 2, 10, Duration::ZERO).await;
    assert!(
        failures.is_empty(),
        "{} of 500 sessions failed; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let log = relay
        .wait_for_log("500 `session end` lines", Duration::from_secs(10), |l| {
            l.matches("session end").count() >= 500
        })
        .await;
    let ends: Vec<&str> = log.lines().filter(|l| l.contains("session end")).collect();
    assert_eq!(ends.len(), 500, "session end lines");
    if ends.iter().any(|l| l.contains("shard=")) {
        for shard in ["shard=0", "shard=1"] {
            assert!(
                ends.iter().any(|l| l.contains(shard)),
                "no session ran on {shard} (workers = 2)"
            );
        }
    }
}

async fn chaos_while_sessions_run(v: Variant) {
    raise_nofile_limit();
    let target = Target::start(TargetOpts {
        report_msgs: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig {
        workers: 2,
        ..v.config()
    })
    .await;
    let port = relay.port;
    let url = target.url("/chaos");
    let sessions = open_sessions(port, &url, 100).await;
    let runner = tokio::spawn(exchange(sessions, 30, 3, Duration::from_millis(10)));

    let mut held_tcp = Vec::new();
    let mut held_ws = Vec::new();
    for round in 0..10 {
        for _ in 0..5 {
            // Half-open: part of a head, then silence.
            let mut t = TcpStream::connect(relay.addr()).await.unwrap();
            t.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpg")
                .await
                .unwrap();
            held_tcp.push(t);
            // Silent TCP connection.
            held_tcp.push(TcpStream::connect(relay.addr()).await.unwrap());
            // Reset right after connecting / after a partial head.
            let t = TcpStream::connect(relay.addr()).await.unwrap();
            t.set_zero_linger().unwrap();
            drop(t);
            let mut t = TcpStream::connect(relay.addr()).await.unwrap();
            let _ = t
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
                .await;
            t.set_zero_linger().unwrap();
            drop(t);
            // Garbage.
            let mut t = TcpStream::connect(relay.addr()).await.unwrap();
            let _ = t.write_all(&pattern(300, round as u8)).await;
            let _ = t.write_all(b"\r\n\r\n").await;
            drop(t);
        }
        // Upgraded, never authenticates.
        held_ws.push(upgrade(port, "/").await);
        // Upgraded, half an auth frame.
        let mut ws = upgrade(port, "/").await;
        let f = client_frame(OP_TEXT, auth_json(ALICE_TOKEN, &url).as_bytes());
        ws.get_mut().write_all(&f[..7]).await.unwrap();
        held_ws.push(ws);
        // A session whose client resets mid-message.
        let mut ws = connect(AuthMode::FirstMessage, port, ALICE_TOKEN, &url).await;
        let f = client_frame(OP_BINARY, &pattern(5000, 1));
        ws.get_mut().write_all(&f[..2500]).await.unwrap();
        let tcp = ws.into_inner().into_tcp();
        tcp.set_zero_linger().unwrap();
        drop(tcp);
        // A session stalled mid-frame, held open.
        let mut ws = connect(AuthMode::Header, port, ALICE_TOKEN, &url).await;
        ws.get_mut().write_all(&f[..100]).await.unwrap();
        held_ws.push(ws);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    // Two reloads while all this goes on.
    let mut relay = relay;
    for users in [
        vec![UserSpec::alice(), UserSpec::bob()],
        vec![UserSpec::alice()],
    ] {
        relay.write_config(relay.cfg.clone().with_users(users));
        let out = relay.reload_cli().await;
        assert_eq!(out.code, Some(0), "reload during chaos: {out:?}");
    }

    let failures = within(Duration::from_secs(200), "sessions under chaos", runner)
        .await
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} of 100 sessions failed under chaos; first ones: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let health = common::http::get(port, "/health")
        .await
        .expect("health after chaos");
    assert_eq!(health.status, 200);
    // Still accepting new sessions.
    let mut ws = connect(AuthMode::FirstMessage, port, ALICE_TOKEN, &url).await;
    send(&mut ws, Message::text("after chaos")).await;
    expect_text(&mut ws, "after chaos").await;
    drop(held_tcp);
    drop(held_ws);
}

/// No unbounded queue: a target that stops reading makes the client's writes
/// block, and a client that stops reading makes the target's writes block,
/// while the relay's resident memory stays flat; nothing is lost once the
/// reader resumes.
async fn slow_reader_backpressure(v: Variant) {
    const MIB: usize = 1 << 20;
    const BOUND_KIB: u64 = 32 * 1024;
    // Client → stalled target.
    let stalled = Target::start(TargetOpts {
        stall: true,
        report_msgs: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig {
        workers: 2,
        ..v.config()
    })
    .await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &stalled.url("/")).await;
    let rss0 = relay.rss_kib();
    let frame = client_frame(OP_BINARY, &pattern(MIB, 1));
    let mut written = 0usize;
    while written < 128 * MIB {
        match tokio::time::timeout(Duration::from_secs(2), ws.get_mut().write_all(&frame)).await {
            Ok(Ok(())) => written += frame.len(),
            Ok(Err(e)) => panic!("write failed after {written} bytes: {e}"),
            Err(_) => break,
        }
    }
    let rss1 = relay.rss_kib();
    eprintln!(
        "client → stalled target: {} MiB accepted before blocking; relay RSS {rss0} → {rss1} KiB",
        written / MIB
    );
    assert!(
        written < 96 * MIB,
        "the client wrote {} MiB to a target that reads nothing: no backpressure",
        written / MIB
    );
    assert!(
        rss1 <= rss0 + BOUND_KIB,
        "relay RSS grew from {rss0} KiB to {rss1} KiB while the target read nothing ({} MiB written)",
        written / MIB
    );
    drop(ws);

    // Target → client that does not read for a while.
    let mut target = Target::echo().await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let rss2 = relay.rss_kib();
    let count = 48;
    for i in 0..count {
        target.raw(Some(conn), server_frame(OP_BINARY, &pattern(MIB, i as u8)));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss3 = relay.rss_kib();
    eprintln!("target → non-reading client: relay RSS {rss2} → {rss3} KiB");
    assert!(
        rss3 <= rss2 + BOUND_KIB,
        "relay RSS grew from {rss2} KiB to {rss3} KiB while the client read nothing"
    );
    for i in 0..count {
        match try_next(&mut ws, Duration::from_secs(30)).await {
            Next::Msg(Message::Binary(b)) => assert!(
                b.as_ref() == pattern(MIB, i as u8).as_slice(),
                "1 MiB message {i} differs"
            ),
            other => panic!("message {i} of {count}: {other:?}"),
        }
    }
    close_and_expect_echo(&mut ws, 1000, "").await;
}
