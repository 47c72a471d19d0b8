//! Resource exhaustion (issue 14, item 4): at the descriptor limit the relay
//! stops accepting and backs off (one warning, low CPU) instead of spinning
//! on a failing `accept`; sessions already open keep echoing; once
//! descriptors free up it accepts again by itself. A flood of half-open
//! connections past `max_connections` leaves open sessions echoing with
//! bounded latency, and each flood connection ends at its auth deadline.

mod common;

use std::time::Duration;

use common::*;
use tokio_tungstenite::tungstenite::Message;

/// User + system CPU seconds of `pid` (100 Hz ticks).
fn cpu_secs(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    (f[0] + f[1]) as f64 / 100.0
}

#[tokio::test]
async fn fd_exhaustion_backs_off_keeps_sessions_and_recovers() {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        workers: 1,
        fd_limit: Some(64),
        ..RelayConfig::default()
    })
    .await;
    let mut live = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
    send(&mut live, Message::text("before")).await;
    expect_text(&mut live, "before").await;
    // Idle connections until accept fails with EMFILE (the kernel still
    // completes the handshakes into the listen backlog).
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
                .await
                .unwrap(),
        );
    }
    let warned = relay
        .wait_for_log("EMFILE back-off", STEP * 2, |l| l.contains("backing off"))
        .await;
    assert!(warned.contains("Too many open files"), "{warned}");
    // Saturated: the shard must be sleeping between retries, not spinning.
    let t0 = cpu_secs(relay.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_secs(relay.pid()) - t0;
    assert!(
        used < 0.4,
        "relay used {used:.2} CPU s in 2 s while out of fds"
    );
    // The session that was open keeps working meanwhile.
    send(&mut live, Message::text("during")).await;
    expect_text(&mut live, "during").await;
    // Free the descriptors: the relay closes the idle ones (EOF) and accepts
    // again without help.
    drop(idle);
    let mut fresh = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = common::http::get(relay.port, "/health").await {
            if r.status == 200 {
                fresh =
                    Some(connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await);
                break;
            }
        }
    }
    let mut fresh = fresh.expect("the relay did not accept again within 5 s");
    send(&mut fresh, Message::text("after")).await;
    expect_text(&mut fresh, "after").await;
    send(&mut live, Message::text("still")).await;
    expect_text(&mut live, "still").await;
    let warnings = relay.log().matches("backing off").count();
    assert!(
        warnings <= 2,
        "{warnings} back-off warnings: rate limit broken"
    );
}

/// A flood of half-open connections (connected, never a byte) past
/// `max_connections`: the open session keeps echoing with bounded latency,
/// every flood connection is closed by the auth deadline, and new sessions
/// are served afterwards.
#[tokio::test]
async fn half_open_flood_spares_open_sessions() {
    let target = Target::echo().await;
    let relay = Relay::start(RelayConfig {
        max_connections: 50,
        auth_timeout_secs: 1,
        ..RelayConfig::default()
    })
    .await;
    let mut live = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
    let mut flood = Vec::new();
    for _ in 0..500 {
        flood.push(
            tokio::net::TcpStream::connect(("127.0.0.1", relay.port))
                .await
                .unwrap(),
        );
    }
    let mut worst = Duration::ZERO;
    for i in 0..100 {
        let t = std::time::Instant::now();
        let m = format!("ping {i}");
        send(&mut live, Message::text(m.clone())).await;
        expect_text(&mut live, &m).await;
        worst = worst.max(t.elapsed());
    }
    eprintln!("worst echo during the flood: {worst:?}");
    assert!(
        worst < Duration::from_millis(250),
        "echo took {worst:?} during the flood"
    );
    // Each flood connection is answered or closed once its deadline passes.
    let ended = async {
        for mut c in flood {
            let mut buf = [0u8; 512];
            use tokio::io::AsyncReadExt;
            while matches!(c.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    };
    within(Duration::from_secs(5), "flood connections closed", ended).await;
    // The relay lingers on each closed connection until it reads the
    // client's FIN, and counts it against max_connections until then; the
    // last FINs were sent just now. Wait until only the live session (and
    // the scrape itself) is open, as an operator would on `/metrics`.
    let t = std::time::Instant::now();
    within(
        Duration::from_secs(5),
        "flood connections released",
        async {
            while connections_open(relay.port).await > 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;
    eprintln!("flood released {:?} after the last EOF", t.elapsed());
    let mut fresh = connect_first_message(relay.port, ALICE_TOKEN, &target.url("/")).await;
    send(&mut fresh, Message::text("after")).await;
    expect_text(&mut fresh, "after").await;
}

/// `ws_relay_connections_open` summed over shards, this scrape included.
async fn connections_open(port: u16) -> u64 {
    let resp = common::http::get(port, "/metrics").await.unwrap();
    assert_eq!(resp.status, 200);
    String::from_utf8(resp.body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("ws_relay_connections_open{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}
