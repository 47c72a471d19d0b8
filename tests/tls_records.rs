//! The relay's own TLS record layer (src/tls/record.rs, src/tls/stream.rs)
//! against rustls peers over the wire: every cipher suite of TLS 1.3 and
//! 1.2, forced on the client and the target side at once, carries small,
//! pipelined and 1 MiB messages; key updates requested by the client or by
//! the target keep the session going in both directions; a record tampered
//! with in flight ends that session with a `bad_record_mac` alert while a
//! neighbour on the same shard carries on; frames that reach the relay in
//! one read leave toward the client in one TLS record.

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::tls::*;
use futures_util::{SinkExt, StreamExt};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{RootCertStore, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const SUITES: [SupportedCipherSuite; 6] = [
    cs::TLS13_AES_128_GCM_SHA256,
    cs::TLS13_AES_256_GCM_SHA384,
    cs::TLS13_CHACHA20_POLY1305_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
];

fn only(suite: SupportedCipherSuite) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    })
}

static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

fn versions(suite: SupportedCipherSuite) -> &'static [&'static rustls::SupportedProtocolVersion] {
    if suite.tls13().is_some() {
        &TLS13_ONLY
    } else {
        &TLS12_ONLY
    }
}

fn client_for(
    suite: SupportedCipherSuite,
    root: &CertificateDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(only(suite))
        .with_protocol_versions(versions(suite))
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn server_for(suite: SupportedCipherSuite, leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_pkcs8.clone()));
    let config = rustls::ServerConfig::builder_with_provider(only(suite))
        .with_protocol_versions(versions(suite))
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    Arc::new(config)
}

async fn exercise(ws: &mut Ws, label: &str) {
    echo(ws, Message::text(format!("hello over {label}"))).await;
    let big: Vec<u8> = (0..1024 * 1024u32).map(|i| (i * 31 + 7) as u8).collect();
    echo(ws, Message::binary(big)).await;
    for i in 0..200 {
        send(ws, Message::text(format!("{label} #{i}"))).await;
    }
    for i in 0..200 {
        expect_text(ws, &format!("{label} #{i}")).await;
    }
}

#[tokio::test]
async fn every_suite_carries_data_on_both_sides() {
    let ca = Ca::new("records CA");
    let relay_leaf = ca.leaf(LOCAL_NAMES);
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&relay_leaf).target_ca(&ca.pem)).await;
    for suite in SUITES {
        let label = format!("{:?}", suite.suite());
        let target = EchoTarget::tls(server_for(suite, &ca.leaf(LOCAL_NAMES))).await;
        let stream = tls(relay.port, &client_for(suite, &ca.der), "localhost").await;
        let negotiated = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite());
        assert_eq!(negotiated, Some(suite.suite()), "client side negotiated");
        let io: BoxIo = Box::new(stream);
        let mut ws = first_message(io, relay.port, TOKEN, &target.url()).await;
        exercise(&mut ws, &label).await;
        close(ws).await;
        assert_eq!(
            target.handshake_kinds().len(),
            1,
            "{label}: one target handshake"
        );
    }
    let ends = relay.wait_session_ends(SUITES.len()).await;
    for line in &ends {
        for side in ["client_tls", "target_tls"] {
            assert!(
                matches!(field(line, side), Some("full" | "resumed")),
                "{side}: {line}"
            );
        }
    }
}

/// A `wss://` echo target that asks for a key update before every echo.
async fn rekeying_target(config: Arc<rustls::ServerConfig>) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if !(m.is_text() || m.is_binary()) {
                        continue;
                    }
                    ws.get_mut()
                        .get_mut()
                        .1
                        .refresh_traffic_keys()
                        .expect("target rekey");
                    if ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, task)
}

#[tokio::test]
async fn key_updates_from_either_peer_keep_the_session() {
    let ca = Ca::new("rekey CA");
    let relay =
        TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).target_ca(&ca.pem)).await;
    let (port, task) = rekeying_target(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let stream = tls(relay.port, &client_config(&[&ca.der]), "localhost").await;
    let mut ws = first_message(
        stream,
        relay.port,
        TOKEN,
        &format!("wss://localhost:{port}/"),
    )
    .await;
    for round in 0..20 {
        // Our side asks too, every other round: KeyUpdate(update_requested)
        // obliges the relay to rotate its own sending key before it answers.
        if round % 2 == 0 {
            let conn = ws.get_mut().get_mut().1;
            conn.refresh_traffic_keys().expect("client rekey");
        }
        echo(
            &mut ws,
            Message::text(format!("round {round} after a key update")),
        )
        .await;
    }
    echo(&mut ws, Message::binary(vec![0x5a; 300_000])).await;
    close(ws).await;
    task.abort();
}

/// Flips one bit of the next byte written once armed (after the handshake).
struct Tamper<S> {
    inner: S,
    armed: Arc<AtomicBool>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tamper<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tamper<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.len() > 8 && self.armed.swap(false, Ordering::SeqCst) {
            let mut bad = buf.to_vec();
            bad[8] ^= 0x01; // inside the ciphertext, past the 5-byte header
            return Pin::new(&mut self.inner).poll_write(cx, &bad);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn tampered_record_ends_only_that_session() {
    let ca = Ca::new("tamper CA");
    let target = EchoTarget::plain().await;
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).workers(1)).await;
    let config = client_config(&[&ca.der]);
    let healthy: BoxIo = Box::new(tls(relay.port, &config, "localhost").await);
    let mut healthy = first_message(healthy, relay.port, TOKEN, &target.url()).await;

    let armed = Arc::new(AtomicBool::new(false));
    let tcp = Tamper {
        inner: tcp(relay.port).await,
        armed: armed.clone(),
    };
    let name = ServerName::try_from("localhost").unwrap();
    let victim = tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");
    let victim: BoxIo = Box::new(victim);
    let mut victim = first_message(victim, relay.port, TOKEN, &target.url()).await;
    echo(&mut victim, Message::text("before tampering")).await;

    armed.store(true, Ordering::SeqCst);
    let _ = victim
        .send(Message::text("this record is corrupted in flight"))
        .await;
    let end = tokio::time::timeout(Duration::from_secs(5), victim.next())
        .await
        .expect("the relay must end a session whose record fails authentication");
    match end {
        Some(Err(e)) => assert!(
            e.to_string().contains("BadRecordMac"),
            "expected the relay's bad_record_mac alert, got: {e}"
        ),
        other => panic!("expected a TLS alert, got {other:?}"),
    }
    echo(&mut healthy, Message::text("the neighbour is unaffected")).await;
    close(healthy).await;
    relay
        .wait_for_log(
            "the session's bad_record_mac",
            Duration::from_secs(5),
            |log| log.contains("bad_record_mac"),
        )
        .await;
}

/// A plain target that answers `burst N` with N text frames in one write.
async fn bursting_target() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let n: usize = t
                        .strip_prefix("burst ")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    for i in 0..n {
                        // `feed` queues without writing; `flush` writes once.
                        let _ = ws.feed(Message::text(format!("frame {i}"))).await;
                    }
                    let _ = ws.flush().await;
                }
            });
        }
    });
    (port, task)
}

/// TLS records (of any type) in a raw TLS byte stream.
fn count_records(raw: &[u8]) -> usize {
    let (mut at, mut n) = (0, 0);
    while raw.len() >= at + 5 {
        at += 5 + u16::from_be_bytes([raw[at + 3], raw[at + 4]]) as usize;
        n += 1;
    }
    n
}

#[tokio::test]
async fn frames_read_together_leave_in_one_record() {
    let ca = Ca::new("coalescing CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).workers(1)).await;
    let (port, task) = bursting_target().await;
    let (tapped, seen) = tap(tcp(relay.port).await);
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(client_config(&[&ca.der]))
        .connect(name, tapped)
        .await
        .expect("handshake");
    let target = format!("ws://127.0.0.1:{port}/");
    let mut ws = first_message(stream, relay.port, TOKEN, &target).await;
    let mut records = Vec::new();
    for _ in 0..5 {
        let before = count_records(&seen.lock().unwrap());
        send(&mut ws, Message::text("burst 20")).await;
        for i in 0..20 {
            expect_text(&mut ws, &format!("frame {i}")).await;
        }
        records.push(count_records(&seen.lock().unwrap()) - before);
    }
    // One write from the target is one read for the relay on loopback, and
    // one read must become one record; a rare split read may add one.
    assert!(
        records.iter().filter(|&&r| r == 1).count() >= 3 && records.iter().all(|&r| r <= 2),
        "TLS records per burst of 20 frames: {records:?}"
    );
    close(ws).await;
    task.abort();
}
