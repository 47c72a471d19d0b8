//! Reverse tunnels over the wire: the real binary as relay (a user with
//! `publish_ports`) and as tunnel client with `[[proxies]]`, publishing a
//! real TCP echo service on the relay host. Public connections to the
//! published port are checked byte for byte; refusals by HTTP status and
//! error code; recovery by killing the client, the relay, the local service,
//! and by silencing the link (keepalive).

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tcp::{echo_through, free_port, serve_echo, start_tunnel, wait_listening, Proc};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `client.toml` with one `[[proxies]]` entry per (publish port, local port).
fn client_config(dir: &Path, relay_port: u16, extra: &str, proxies: &[(u16, u16)]) -> PathBuf {
    let mut text = format!(
        "[client]\nserver = \"ws://127.0.0.1:{relay_port}/\"\ntoken = {ALICE_TOKEN:?}\n{extra}\n"
    );
    for (i, (publish, local)) in proxies.iter().enumerate() {
        text.push_str(&format!(
            "\n[[proxies]]\nname = \"svc{i}\"\nproxy_type = \"tcp\"\npublish_addr = \"127.0.0.1\"\npublish_port = {publish}\nlocal_port = {local}\n"
        ));
    }
    let path = dir.join(format!("client-{}.toml", free_port()));
    std::fs::write(&path, text).unwrap();
    path
}

/// A TCP echo service that can be stopped and started again on its port.
struct Echo {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Echo {
    async fn start(port: u16) -> Echo {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let task = serve_echo(l);
        Echo { port, task }
    }

    fn stop(&self) {
        self.task.abort();
    }
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a public connection through `port` echoes.
async fn wait_serving(port: u16, p: &Proc, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(2), ping(port)).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{port} not serving within {limit:?}:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ping(port: u16) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"ping").await?;
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await?;
    match &b {
        b"ping" => Ok(()),
        _ => Err(std::io::Error::other("wrong bytes")),
    }
}

#[tokio::test]
async fn one_session_carries_fifty_checksummed_streams_and_a_bulk_transfer() {
    let echo = Echo::start(0).await;
    let publish = free_port();
    let relay = Relay::start(
        RelayConfig::default().with_users(vec![UserSpec::alice().publish(&[publish])]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), relay.port, "", &[(publish, echo.port)]);
    let p = start_tunnel(dir.path(), &cfg, &[]);
    wait_listening(publish, &p).await;

    echo_through(publish, 32 << 20, 3).await;
    let all: Vec<_> = (0..50u8)
        .map(|i| tokio::spawn(echo_through(publish, 300_000 + i as usize * 997, i)))
        .collect();
    for t in all {
        t.await.unwrap();
    }
    // 51 public connections (plus the readiness probe), one control session.
    let ended = || relay.log().matches("reverse stream end").count();
    within(STEP, "52 stream-end lines at the relay", async {
        while ended() < 52 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        p.log().matches("reverse tunnel published").count(),
        1,
        "{}",
        p.log()
    );
    assert!(
        !relay.log().contains("session end"),
        "control session ended:\n{}",
        relay.log()
    );
    for log in [p.log(), relay.log()] {
        assert!(!log.contains(ALICE_TOKEN), "token logged:\n{log}");
    }
}

#[tokio::test]
async fn publish_refusals_are_precise() {
    let (mine, theirs) = (free_port(), free_port());
    // Someone else already listens on `theirs`.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", theirs)).unwrap();
    let relay = Relay::start(RelayConfig::default().with_users(vec![
        UserSpec::alice().publish(&[mine, theirs]),
        UserSpec::bob(),
    ]))
    .await;
    let port = relay.port;
    let try_publish = |token: &str, target: String| {
        let auth = HeaderAuth::new(token, &target);
        async move { try_connect_header(port, &auth).await }
    };
    let other = free_port();
    let r = try_publish(ALICE_TOKEN, format!("publish://127.0.0.1:{other}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a port not in publish_ports is refused"));
    assert_refused(&r, 403, "target_forbidden");
    assert!(r.body.contains("publish_ports"), "{}", r.body);
    let r = try_publish(BOB_TOKEN, format!("publish://127.0.0.1:{mine}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a user without publish_ports is refused"));
    assert_refused(&r, 403, "target_forbidden");
    let r = try_publish(ALICE_TOKEN, format!("publish://127.0.0.1:{theirs}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a port in use is refused"));
    assert_refused(&r, 409, "port_in_use");
    let r = try_publish(ALICE_TOKEN, format!("publish://localhost:{mine}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a host name is refused"));
    assert_refused(&r, 400, "bad_request");

    // The first owner holds the port; a second owner is refused while it does.
    let (_owner, _) = try_publish(ALICE_TOKEN, format!("publish://127.0.0.1:{mine}"))
        .await
        .expect("first owner");
    let r = try_publish(ALICE_TOKEN, format!("publish://127.0.0.1:{mine}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a second owner is refused"));
    assert_refused(&r, 409, "port_in_use");

    // The client says why and keeps trying rather than exiting.
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), relay.port, "", &[(other, 1)]);
    let mut p = start_tunnel(dir.path(), &cfg, &[]);
    wait_for("the client's refusal line", STEP, || {
        p.log().contains("HTTP 403 target_forbidden")
    })
    .await;
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "client exited:\n{}",
        p.log()
    );
}

#[tokio::test]
async fn the_port_goes_with_its_owner_and_the_client_survives_restarts() {
    let echo = Echo::start(0).await;
    let publish = free_port();
    let mut relay = Relay::start(
        RelayConfig::default().with_users(vec![UserSpec::alice().publish(&[publish])]),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(dir.path(), relay.port, "", &[(publish, echo.port)]);
    let p = start_tunnel(dir.path(), &cfg, &[]);
    wait_serving(publish, &p, STEP).await;

    // The local service goes away: a public connection is closed at once
    // (not left hanging), and the service's return heals it with no new
    // control session.
    echo.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = TcpStream::connect(("127.0.0.1", publish)).await.unwrap();
    let mut b = [0u8; 1];
    let got = within(
        Duration::from_secs(5),
        "public connection closed",
        s.read(&mut b),
    )
    .await;
    assert!(matches!(got, Ok(0) | Err(_)), "{got:?}");
    let echo = Echo::start(echo.port).await;
    wait_serving(publish, &p, STEP).await;
    assert_eq!(p.log().matches("reverse tunnel published").count(), 1);

    // The owner goes away: the relay releases the port.
    drop(p);
    within(Duration::from_secs(5), "port released", async {
        while TcpStream::connect(("127.0.0.1", publish)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    // A new owner publishes it again; then the relay crashes and comes
    // back, and the client publishes again by itself.
    let p = start_tunnel(dir.path(), &cfg, &[]);
    wait_serving(publish, &p, STEP).await;
    relay.crash_and_restart().await;
    wait_serving(publish, &p, STEP).await;
    assert_eq!(
        p.log().matches("reverse tunnel published").count(),
        2,
        "{}",
        p.log()
    );
    echo_through(publish, 4 << 20, 9).await;
    drop(echo);
}

/// A TCP forwarder whose existing connections can be frozen: bytes stop
/// moving but nothing is closed, as when a NAT entry silently dies.
struct Freezer {
    port: u16,
    frozen_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Freezer {
    async fn start(to: u16) -> Freezer {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let frozen_below = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (fb, acc) = (frozen_below.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((a, _)) = l.accept().await {
                let gen = acc.fetch_add(1, Ordering::SeqCst) + 1;
                let Ok(b) = TcpStream::connect(("127.0.0.1", to)).await else {
                    continue;
                };
                let (ar, aw) = a.into_split();
                let (br, bw) = b.into_split();
                tokio::spawn(Self::pump(ar, bw, gen, fb.clone()));
                tokio::spawn(Self::pump(br, aw, gen, fb.clone()));
            }
        });
        Freezer {
            port,
            frozen_below,
            accepted,
        }
    }

    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        gen: usize,
        frozen_below: Arc<AtomicUsize>,
    ) {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok(n) = r.read(&mut buf).await else {
                return;
            };
            if gen <= frozen_below.load(Ordering::SeqCst) {
                // Hold both sockets open and move nothing, forever.
                std::future::pending::<()>().await;
            }
            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    /// Freezes every connection accepted so far.
    fn freeze(&self) {
        self.frozen_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_silent_link_is_noticed_by_keepalive_and_the_port_published_again() {
    let echo = Echo::start(0).await;
    let publish = free_port();
    let relay = Relay::start(
        RelayConfig::default().with_users(vec![UserSpec::alice().publish(&[publish])]),
    )
    .await;
    let link = Freezer::start(relay.port).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = client_config(
        dir.path(),
        link.port,
        "keepalive_secs = 1",
        &[(publish, echo.port)],
    );
    let p = start_tunnel(dir.path(), &cfg, &[]);
    wait_serving(publish, &p, STEP).await;

    // Several keepalive rounds both ways (masked pings and pongs from the
    // client, checked by the relay) leave the session alone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        p.log().matches("reverse tunnel published").count(),
        1,
        "{}",
        p.log()
    );
    assert!(!relay.log().contains("session end"), "{}", relay.log());

    link.freeze();
    let frozen = Instant::now();
    wait_for("the client notices", Duration::from_secs(8), || {
        p.log().contains("server silent for 3s (keepalive)")
    })
    .await;
    wait_for("the relay notices", Duration::from_secs(8), || {
        relay.log().contains("client silent for 3s (keepalive)")
    })
    .await;
    wait_serving(publish, &p, Duration::from_secs(15)).await;
    assert!(p.log().matches("reverse tunnel published").count() >= 2);
    eprintln!("frozen link to serving again: {:?}", frozen.elapsed());
}
