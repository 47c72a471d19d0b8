//! How sessions end: Close frames pass end to end in both directions (codes
//! and reasons preserved); a target that vanishes (TCP drop, no Close) ends the
//! client with Close 1014 (copy mode; splice mode can only close TCP); a
//! client that vanishes ends the target's connection; the idle timeout closes
//! an idle session (client Close 1001, masked Close 1001 to the target) and
//! spares one that is active in either direction; SIGTERM stops accepting,
//! lets sessions drain up to `shutdown_grace_secs`, closes the rest with 1001
//! and exits 0. Under both drivers and both forward modes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

matrix!(engine: close_from_client_reaches_target, close_from_target_reaches_client,
    target_vanishes_mid_session, client_vanishes_mid_session, idle_session_is_closed,
    active_session_survives_idle_timeout, sigterm_closes_sessions_after_grace);

async fn close_from_client_reaches_target(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    send(&mut ws, Message::text("before close")).await;
    expect_text(&mut ws, "before close").await;
    close_and_expect_echo(&mut ws, 4000, "client says bye").await;
    let ev = target
        .wait_event("the client's Close", STEP, |e| {
            matches!(
                e,
                Ev::Msg {
                    msg: Message::Close(_),
                    ..
                }
            )
        })
        .await;
    match ev {
        Ev::Msg {
            msg: Message::Close(Some(cf)),
            conn: c,
        } => {
            assert_eq!(c, conn);
            assert_eq!(u16::from(cf.code), 4000);
            assert_eq!(cf.reason.as_str(), "client says bye");
        }
        other => panic!("target got {other:?}"),
    }
    target
        .wait_event(
            "the target connection to end",
            Duration::from_secs(5),
            |e| matches!(e, Ev::Ended { .. }),
        )
        .await;
    drop(relay);
}

async fn close_from_target_reaches_client(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    target.close(Some(conn), 4001, "target says bye");
    let reason = expect_close(&mut ws, 4001, STEP).await;
    assert_eq!(reason, "target says bye");
    // Our automatic Close reply travels back to the target; then TCP ends.
    within(STEP, "flush close reply", ws.flush()).await.ok();
    let ev = target
        .wait_event("the client's Close reply", STEP, |e| {
            matches!(
                e,
                Ev::Msg {
                    msg: Message::Close(_),
                    ..
                }
            )
        })
        .await;
    if let Ev::Msg {
        msg: Message::Close(Some(cf)),
        ..
    } = ev
    {
        assert_eq!(u16::from(cf.code), 4001, "close reply code");
    } else {
        panic!("close reply without a code: {ev:?}");
    }
    expect_end(&mut ws, Duration::from_secs(5)).await;
    drop(relay);
}

async fn target_vanishes_mid_session(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    send(&mut ws, Message::text("hello")).await;
    expect_text(&mut ws, "hello").await;
    target.vanish(Some(conn));
    match v.forward {
        Forward::Copy | Forward::Ring => {
            expect_close(&mut ws, 1014, Duration::from_secs(5)).await;
            expect_end(&mut ws, Duration::from_secs(5)).await;
        }
        // splice never sees frames: a Close 1014 is welcome, a TCP close is enough.
        Forward::Splice => loop {
            match try_next(&mut ws, Duration::from_secs(5)).await {
                Next::Msg(Message::Close(_)) => assert_eq!(raw_close(&ws).code, Some(1014)),
                Next::Msg(other) => panic!("unexpected {}", describe(&other)),
                Next::End(_) => break,
                Next::Timeout => panic!("client not closed within 5 s after the target vanished"),
            }
        },
    }
    let log = relay
        .wait_for_log("a session end line", Duration::from_secs(5), |l| {
            l.contains("session end")
        })
        .await;
    assert!(!log.contains(ALICE_TOKEN));
}

async fn client_vanishes_mid_session(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(v.config()).await;
    for rst in [false, true] {
        let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
        let (conn, _) = target.connected().await;
        send(&mut ws, Message::text("hello")).await;
        expect_text(&mut ws, "hello").await;
        let tcp = ws.into_inner().into_tcp();
        if rst {
            tcp.set_zero_linger().unwrap();
        }
        drop(tcp);
        let how = if rst { "RST" } else { "FIN" };
        target
            .wait_event(
                &format!("the target's connection to end after the client's {how}"),
                Duration::from_secs(3),
                |e| matches!(e, Ev::Ended { conn: c, .. } if *c == conn),
            )
            .await;
    }
    drop(relay);
}

async fn idle_session_is_closed(v: Variant) {
    let mut target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        idle_timeout_secs: 1,
        ..v.config()
    })
    .await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let start = Instant::now();
    match v.forward {
        Forward::Copy | Forward::Ring => {
            expect_close(&mut ws, 1001, Duration::from_secs(6)).await;
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(800),
                "idle session closed after {took:?} (idle_timeout_secs = 1)"
            );
            expect_end(&mut ws, Duration::from_secs(5)).await;
            // The target got a Close 1001 too, masked (the target's server-role
            // WebSocket reports an error for an unmasked frame instead).
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
                    assert_eq!(u16::from(cf.code), 1001, "close code at the target");
                }
                other => panic!("target saw {other:?} instead of a masked Close 1001"),
            }
        }
        Forward::Splice => {
            loop {
                match try_next(&mut ws, Duration::from_secs(6)).await {
                    Next::Msg(Message::Close(_)) => assert_eq!(raw_close(&ws).code, Some(1001)),
                    Next::Msg(other) => panic!("unexpected {}", describe(&other)),
                    Next::End(_) => break,
                    Next::Timeout => panic!("idle splice session not closed within 6 s"),
                }
            }
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(800),
                "idle session closed after {took:?} (idle_timeout_secs = 1)"
            );
        }
    }
    target
        .wait_event(
            "the target connection to end",
            Duration::from_secs(5),
            |e| matches!(e, Ev::Ended { conn: c, .. } if *c == conn),
        )
        .await;
}

/// Traffic in either direction alone keeps a session alive past the idle
/// timeout (a true idle timer, not a lifetime), and it still closes once idle.
async fn active_session_survives_idle_timeout(v: Variant) {
    let mut target = Target::start(TargetOpts {
        echo: false,
        ..TargetOpts::default()
    })
    .await;
    let relay = Relay::start(RelayConfig {
        idle_timeout_secs: 1,
        ..v.config()
    })
    .await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let tick = Duration::from_millis(250);

    // Client → target only, for 3 s (3 × the idle timeout).
    for i in 0..12 {
        send(&mut ws, Message::text(format!("up-{i}"))).await;
        target
            .wait_event(&format!("up-{i}"), STEP, |e| matches!(e, Ev::Msg { msg: Message::Text(t), .. } if t.as_str() == format!("up-{i}")))
            .await;
        tokio::time::sleep(tick).await;
    }
    // Target → client only, for 3 s.
    for i in 0..12 {
        target.send(Some(conn), Message::text(format!("down-{i}")));
        match try_next(&mut ws, STEP).await {
            Next::Msg(Message::Text(t)) if t.as_str() == format!("down-{i}") => {}
            other => panic!("active session (target → client only) at {i}: got {other:?}"),
        }
        tokio::time::sleep(tick).await;
    }
    // Now idle: closed within the timeout plus slack.
    match try_next(&mut ws, Duration::from_secs(6)).await {
        Next::Msg(Message::Close(_)) => assert_eq!(raw_close(&ws).code, Some(1001)),
        Next::End(_) if v.forward == Forward::Splice => {}
        other => panic!("session did not close once idle: {other:?}"),
    }
}

/// `connect_first_message` that must not succeed (relay shutting down).
async fn assert_not_accepting(port: u16, target: &str) {
    let attempt = tokio::time::timeout(Duration::from_secs(1), async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://127.0.0.1:{port}/"), tcp)
            .await
            .ok()?;
        ws.send(Message::text(auth_json(ALICE_TOKEN, target)))
            .await
            .ok()?;
        match futures_util::StreamExt::next(&mut ws).await {
            Some(Ok(Message::Text(t))) if t.as_str() == CONNECTED => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        !matches!(attempt, Ok(Some(()))),
        "a new session was accepted after SIGTERM"
    );
}

async fn sigterm_closes_sessions_after_grace(v: Variant) {
    let mut target = Target::echo().await;
    let mut relay = Relay::start(RelayConfig {
        shutdown_grace_secs: 2,
        ..v.config()
    })
    .await;
    let mut ws = connect(v.auth, relay.port, ALICE_TOKEN, &target.url("/")).await;
    let (conn, _) = target.connected().await;
    let start = Instant::now();
    relay.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Draining: the live session keeps working, new ones are not accepted.
    send(&mut ws, Message::text("during drain")).await;
    expect_text(&mut ws, "during drain").await;
    assert_not_accepting(relay.port, &target.url("/")).await;
    send(&mut ws, Message::text("still draining")).await;
    expect_text(&mut ws, "still draining").await;
    // After the grace period: Close 1001 (copy mode) or TCP close (splice).
    loop {
        match try_next(&mut ws, Duration::from_secs(8)).await {
            Next::Msg(Message::Close(_)) => {
                assert_eq!(raw_close(&ws).code, Some(1001), "close code at shutdown")
            }
            Next::Msg(other) => panic!("unexpected {}", describe(&other)),
            Next::End(_) => break,
            Next::Timeout => panic!(
                "session still open {:?} after SIGTERM (grace 2 s)",
                start.elapsed()
            ),
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "session closed {took:?} after SIGTERM, before the 2 s grace"
    );
    if v.forward.sees_frames() {
        let ev = target
            .wait_event("Close 1001 at the target", Duration::from_secs(5), |e| {
                matches!(e, Ev::Msg { msg: Message::Close(_), conn: c } | Ev::Ended { conn: c, .. } if *c == conn)
            })
            .await;
        match ev {
            Ev::Msg {
                msg: Message::Close(Some(cf)),
                ..
            } => assert_eq!(u16::from(cf.code), 1001),
            other => panic!("target saw {other:?} instead of a masked Close 1001"),
        }
    }
    let status = relay
        .wait_exit(Duration::from_secs(6))
        .await
        .expect("relay still running 6 s after the grace period");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}"
    );
}

/// Sessions that end by themselves let the process exit before the grace
/// period; with none open, SIGTERM and SIGINT exit promptly.
#[tokio::test]
async fn shutdown_exits_once_sessions_drain() {
    let target = Target::echo().await;
    let mut relay = Relay::start(RelayConfig {
        shutdown_grace_secs: 30,
        ..RelayConfig::default()
    })
    .await;
    let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
    relay.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut ws, Message::text("draining")).await;
    expect_text(&mut ws, "draining").await;
    assert!(
        relay.wait_exit(Duration::from_millis(500)).await.is_none(),
        "exited with a live session"
    );
    close_and_expect_echo(&mut ws, 1000, "").await;
    let status = relay
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("relay still running 5 s after its last session ended");
    assert_eq!(status.code(), Some(0), "{status}");

    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut relay = Relay::start(RelayConfig {
            shutdown_grace_secs: 30,
            ..RelayConfig::default()
        })
        .await;
        relay.signal(sig);
        let status = relay
            .wait_exit(Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no exit within 3 s of signal {sig} with no sessions"));
        assert_eq!(status.code(), Some(0), "signal {sig}: {status}");
    }
}

/// A second instance on the same port (another control socket, so the
/// control-socket check cannot catch it) refuses to start and names the
/// process that owns the port, instead of binding through SO_REUSEPORT and
/// silently taking half the connections. The first keeps serving.
#[tokio::test]
async fn second_instance_on_the_same_port_is_refused() {
    let relay = Relay::start(RelayConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("second.toml");
    let text = relay
        .cfg
        .render(relay.port, &dir.path().join("second.sock"));
    std::fs::write(&second, text).unwrap();
    let out = run_cli(&second, "serve").await;
    assert_ne!(out.code, Some(0), "{out:?}");
    let expected = format!("address in use by process {} (ws-relay-core)", relay.pid());
    assert!(out.stderr.contains(&expected), "{out:?}");
    assert!(out.stderr.contains("server.port"), "{out:?}");
    for _ in 0..20 {
        let r = common::http::get(relay.port, "/health")
            .await
            .expect("first instance");
        assert_eq!(r.status, 200);
    }
}

/// A port held only by a connection's local end (the kernel hands ports out
/// as source ports, so a relay restarted after a crash can meet one) is
/// refused with that said, not blamed on a listener that does not exist.
#[tokio::test]
async fn a_port_held_by_a_connection_is_named_as_such() {
    let relay = Relay::start(RelayConfig::default()).await;
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    held.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    let port = held.local_addr().unwrap().as_socket().unwrap().port();
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", relay.port).parse().unwrap();
    held.connect(&target.into()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("held.toml");
    std::fs::write(&cfg, relay.cfg.render(port, &dir.path().join("held.sock"))).unwrap();
    let out = run_cli(&cfg, "serve").await;
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("a connection holds this local port"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("another process"), "{out:?}");
}

/// A relay killed with sessions open and started again at once gets its
/// port back. io_uring tears a dead process's ring down after the process
/// is reaped, so its listener can outlive it for a moment, held by no pid;
/// a supervisor restarting the relay (systemd `Restart=always`) must not
/// meet "address in use" for that, nor "a connection holds this port" for
/// the dead process's sessions, torn down just after.
#[tokio::test]
async fn a_relay_restarted_right_after_a_crash_gets_its_port_back() {
    let target = Target::echo().await;
    let mut relay = Relay::start(RelayConfig::default()).await;
    for round in 0..40 {
        let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
        send(&mut ws, Message::text(format!("round {round}"))).await;
        expect_text(&mut ws, &format!("round {round}")).await;
        relay.crash_and_restart().await;
    }
    let mut ws = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
    send(&mut ws, Message::text("after")).await;
    expect_text(&mut ws, "after").await;
}
