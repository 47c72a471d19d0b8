//! Hostile or broken clients on the TLS listener (`auth_timeout_secs = 1`,
//! one shard, so every bad connection shares the shard with a healthy
//! wss→ws session that must keep echoing throughout): a silent client, a
//! partial ClientHello, a ClientHello trickled byte by byte, garbage instead
//! of a ClientHello, and a finished handshake with no request are all closed
//! within the auth timeout (+1 s slack); a client that closes or half-closes
//! before finishing the handshake must not stall the shard.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const AUTH_TIMEOUT: u64 = 1;
/// auth_timeout + 1 s slack + scheduling margin on a busy 2-vCPU machine.
const CLOSE_BY: Duration = Duration::from_millis(AUTH_TIMEOUT * 1000 + 1500);

struct Fixture {
    ca: Ca,
    relay: TlsRelay,
    _target: EchoTarget,
    client: Arc<rustls::ClientConfig>,
    healthy: Ws,
}

async fn fixture() -> Fixture {
    let ca = Ca::new("timeouts CA");
    let target = EchoTarget::plain().await;
    let relay = TlsRelay::start(
        RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))
            .workers(1)
            .auth_timeout(AUTH_TIMEOUT),
    )
    .await;
    let client = client_config(&[&ca.der]);
    let io: BoxIo = Box::new(tls(relay.port, &client, "localhost").await);
    let healthy = first_message(io, relay.port, TOKEN, &target.url()).await;
    Fixture {
        ca,
        relay,
        _target: target,
        client,
        healthy,
    }
}

/// Echoes on the healthy session every 100 ms for `dur`; each round trip must
/// take under 1 s (the bad client shares its shard).
async fn keep_echoing(ws: &mut Ws, dur: Duration) {
    if let Err(e) = try_echoing(ws, dur).await {
        panic!("the healthy TLS session stopped echoing: {e}");
    }
}

async fn try_echoing(ws: &mut Ws, dur: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < dur {
        let msg = format!("heartbeat {i}");
        let ok = tokio::time::timeout(Duration::from_secs(1), async {
            send(ws, Message::text(msg.clone())).await;
            expect_text(ws, &msg).await;
        })
        .await;
        if ok.is_err() {
            return Err(format!(
                "{msg} got no echo within 1 s ({:?} in)",
                start.elapsed()
            ));
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Runs `bad` (which returns how long until the relay closed it, or None)
/// alongside the heartbeat, then checks the relay still serves new clients.
async fn check(
    f: &mut Fixture,
    what: &str,
    min: Duration,
    bad: impl std::future::Future<Output = Option<Duration>>,
) {
    let (closed, ()) = tokio::join!(
        bad,
        keep_echoing(&mut f.healthy, CLOSE_BY + Duration::from_millis(500))
    );
    let took = closed.unwrap_or_else(|| {
        panic!("{what}: the relay did not close the connection within {CLOSE_BY:?} (auth_timeout_secs = {AUTH_TIMEOUT})")
    });
    assert!(took <= CLOSE_BY, "{what}: closed only after {took:?}");
    assert!(
        took >= min,
        "{what}: closed after {took:?}, before the auth timeout could have expired"
    );
    keep_echoing(&mut f.healthy, Duration::from_millis(300)).await;
    let fresh = within(
        Duration::from_secs(3),
        "new TLS client after the bad one",
        async { http_get(tls(f.relay.port, &f.client, "localhost").await, "/health").await },
    )
    .await;
    assert_eq!(
        fresh.status, 200,
        "{what}: a new client after it: {fresh:?}"
    );
}

#[tokio::test]
async fn silent_client_is_closed_by_auth_timeout() {
    let mut f = fixture().await;
    let port = f.relay.port;
    check(
        &mut f,
        "silent TCP client",
        Duration::from_millis(700),
        async move {
            let mut s = tcp(port).await;
            time_to_close(&mut s, Instant::now(), CLOSE_BY + Duration::from_secs(1)).await
        },
    )
    .await;
}

#[tokio::test]
async fn partial_client_hello_is_closed_by_auth_timeout() {
    let mut f = fixture().await;
    let port = f.relay.port;
    check(
        &mut f,
        "partial ClientHello",
        Duration::from_millis(700),
        async move {
            let mut s = tcp(port).await;
            let t = Instant::now();
            // A handshake record header announcing 512 bytes, then 1 byte of it.
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
                .await
                .expect("write");
            time_to_close(&mut s, t, CLOSE_BY + Duration::from_secs(1)).await
        },
    )
    .await;
}

/// A real ClientHello sent one byte every 150 ms: the timeout runs from
/// accept, not from the last byte.
#[tokio::test]
async fn trickled_client_hello_is_closed_by_auth_timeout() {
    let mut f = fixture().await;
    let port = f.relay.port;
    let mut conn = rustls::ClientConnection::new(f.client.clone(), "localhost".try_into().unwrap())
        .expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    check(
        &mut f,
        "trickled ClientHello",
        Duration::from_millis(700),
        async move {
            let s = tcp(port).await;
            let t = Instant::now();
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                for b in hello {
                    if w.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            });
            let closed = time_to_close(&mut r, t, CLOSE_BY + Duration::from_secs(1)).await;
            writer.abort();
            closed
        },
    )
    .await;
}

#[tokio::test]
async fn garbage_instead_of_client_hello_is_closed() {
    let mut f = fixture().await;
    let port = f.relay.port;
    // Garbage may be rejected at once (no lower bound), but within the timeout.
    check(&mut f, "garbage bytes", Duration::ZERO, async move {
        let mut s = tcp(port).await;
        let t = Instant::now();
        let garbage: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(7919) % 251) as u8 | 0x80)
            .collect();
        let _ = s.write_all(&garbage).await;
        time_to_close(&mut s, t, CLOSE_BY + Duration::from_secs(1)).await
    })
    .await;
    // The same with a plausible record header followed by nonsense.
    check(
        &mut f,
        "handshake record of nonsense",
        Duration::ZERO,
        async move {
            let mut s = tcp(port).await;
            let t = Instant::now();
            let mut rec = vec![0x16, 0x03, 0x01, 0x00, 0x40];
            rec.extend(std::iter::repeat_n(0xee, 0x40));
            let _ = s.write_all(&rec).await;
            time_to_close(&mut s, t, CLOSE_BY + Duration::from_secs(1)).await
        },
    )
    .await;
}

/// TLS completes, then nothing: the auth timeout still applies.
#[tokio::test]
async fn finished_handshake_without_request_is_closed_by_auth_timeout() {
    let mut f = fixture().await;
    let (port, client) = (f.relay.port, f.client.clone());
    check(
        &mut f,
        "TLS handshake then silence",
        Duration::from_millis(700),
        async move {
            let t = Instant::now();
            let mut s = tls(port, &client, "localhost").await;
            time_to_close(&mut s, t, CLOSE_BY + Duration::from_secs(1)).await
        },
    )
    .await;
}

/// Upgrade done over TLS, no auth message: `auth_timeout` error, Close 1008.
#[tokio::test]
async fn upgraded_without_auth_message_gets_auth_timeout() {
    let mut f = fixture().await;
    let t = Instant::now();
    let (io, seen) = tap(tls(f.relay.port, &f.client, "localhost").await);
    let mut ws = try_upgrade(io, f.relay.port, &[]).await.expect("upgrade");
    let (_, ()) = tokio::join!(
        expect_error_close_raw(&mut ws, &seen, "auth_timeout", 1008),
        keep_echoing(
            &mut f.healthy,
            Duration::from_millis(AUTH_TIMEOUT * 1000 + 200)
        )
    );
    assert!(
        t.elapsed() <= CLOSE_BY + Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
}

/// Clients that go away in the middle of the TLS handshake (a load balancer's
/// TCP check, a port scanner, a dropped connection): the shard must notice
/// EOF and carry on serving. Checked with a fresh relay per case.
async fn early_eof(case: &str, act: impl AsyncFnOnce(tokio::net::TcpStream)) {
    let mut f = fixture().await;
    let pid = f.relay.pid().expect("relay pid");
    let s = tcp(f.relay.port).await;
    act(s).await;
    let (cpu_before, since) = (shard_cpu_ticks(pid), Instant::now());
    let echo = try_echoing(&mut f.healthy, Duration::from_millis(1500)).await;
    let (cpu, window) = (shard_cpu_ticks(pid) - cpu_before, since.elapsed());
    let fresh = tokio::time::timeout(Duration::from_secs(3), async {
        http_get(tls(f.relay.port, &f.client, "localhost").await, "/health").await
    })
    .await;
    assert!(
        echo.is_ok() && fresh.as_ref().is_ok_and(|r| r.status == 200),
        "{case}: the shard stopped serving (healthy session: {:?}; new client /health: {:?}); \
         shard CPU in the {:?} after the client left: {} ticks (100 = one core-second)",
        echo,
        fresh.map(|r| r.status),
        window,
        cpu
    );
    assert!(
        cpu < 80,
        "{case}: shard burned {cpu} ticks of CPU in {window:?} while idle"
    );
    let _ = &f.ca;
}

#[tokio::test]
async fn client_closing_before_client_hello_does_not_stall_the_shard() {
    early_eof("connect then close", async |s| drop(s)).await;
}

#[tokio::test]
async fn client_half_closing_before_client_hello_does_not_stall_the_shard() {
    early_eof("connect then shutdown(write)", async |mut s| {
        s.shutdown().await.expect("shutdown");
        std::mem::forget(s);
    })
    .await;
}

#[tokio::test]
async fn client_closing_mid_client_hello_does_not_stall_the_shard() {
    early_eof("partial ClientHello then close", async |mut s| {
        s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
            .await
            .expect("write");
        s.shutdown().await.expect("shutdown");
        drop(s);
    })
    .await;
}

/// User + system CPU ticks of the relay's `shard-*` threads.
fn shard_cpu_ticks(pid: u32) -> u64 {
    let mut total = 0;
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    for e in tasks.flatten() {
        let p = e.path();
        let name = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !name.starts_with("shard") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |x| x.1)
            .split_whitespace()
            .collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        total += get(11) + get(12);
    }
    total
}
