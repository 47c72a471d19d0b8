//! TLS data path over the wire: all four listener/target combinations
//! (ws→ws, ws→wss, wss→ws, wss→wss) in both auth modes, each carrying text,
//! binary and 1 MiB messages and logging the right `client_tls`/`target_tls`;
//! `/health` over TLS 1.2 and 1.3 with ALPN `http/1.1` (SNI and IP);
//! plaintext on the TLS port is not served; a certificate file holding a
//! chain is served whole; header-mode refusals arrive as HTTP over TLS.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Auth {
    FirstMessage,
    Header,
}

struct Setup {
    _ca: Ca,
    relay: TlsRelay,
    target: EchoTarget,
    client: Option<Arc<rustls::ClientConfig>>,
}

/// One CA signs both the relay's and the target's leaf; the relay trusts it
/// for targets through `target_ca_file`, the client trusts it for the relay.
async fn setup(listener_tls: bool, target_tls: bool) -> Setup {
    let ca = Ca::new("tls_relay test CA");
    let target = if target_tls {
        EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await
    } else {
        EchoTarget::plain().await
    };
    let spec = if listener_tls {
        RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))
    } else {
        RelaySpec::plain()
    };
    let relay = TlsRelay::start(spec.target_ca(&ca.pem)).await;
    let client = listener_tls.then(|| client_config(&[&ca.der]));
    Setup {
        _ca: ca,
        relay,
        target,
        client,
    }
}

impl Setup {
    async fn connect(&self) -> BoxIo {
        match &self.client {
            Some(cfg) => Box::new(tls(self.relay.port, cfg, "localhost").await),
            None => Box::new(tcp(self.relay.port).await),
        }
    }

    async fn open(&self, auth: Auth) -> Ws {
        let io = self.connect().await;
        let url = self.target.url();
        match auth {
            Auth::FirstMessage => first_message(io, self.relay.port, TOKEN, &url).await,
            Auth::Header => header_auth(io, self.relay.port, TOKEN, &url)
                .await
                .unwrap_or_else(|e| panic!("header-mode upgrade to {url} failed: {e}")),
        }
    }
}

async fn combination(listener_tls: bool, target_tls: bool, auth: Auth) {
    let s = setup(listener_tls, target_tls).await;
    let mut ws = s.open(auth).await;
    echo_suite(&mut ws).await;
    close(ws).await;

    let ends = s.relay.wait_session_ends(1).await;
    let line = &ends[0];
    let want = |tls: bool| if tls { "full" } else { "none" };
    assert_eq!(
        field(line, "client_tls"),
        Some(want(listener_tls)),
        "session end: {line}"
    );
    assert_eq!(
        field(line, "target_tls"),
        Some(want(target_tls)),
        "session end: {line}"
    );
    assert_eq!(field(line, "user"), Some(USER), "session end: {line}");
    assert!(
        line.contains("127.0.0.1") || line.contains("localhost"),
        "target host in: {line}"
    );
    if target_tls {
        assert_eq!(
            s.target.handshake_kinds(),
            vec![Some(rustls::HandshakeKind::Full)],
            "the target saw one full TLS handshake from the relay"
        );
    }
}

macro_rules! combinations {
    ($($name:ident: $l:expr, $t:expr, $a:expr;)+) => { $(
        #[tokio::test]
        async fn $name() {
            combination($l, $t, $a).await
        }
    )+ };
}

combinations! {
    ws_to_ws_first_message: false, false, Auth::FirstMessage;
    ws_to_ws_header: false, false, Auth::Header;
    ws_to_wss_first_message: false, true, Auth::FirstMessage;
    ws_to_wss_header: false, true, Auth::Header;
    wss_to_ws_first_message: true, false, Auth::FirstMessage;
    wss_to_ws_header: true, false, Auth::Header;
    wss_to_wss_first_message: true, true, Auth::FirstMessage;
    wss_to_wss_header: true, true, Auth::Header;
}

/// Several concurrent wss→wss sessions, interleaved, each seeing only its own
/// messages.
#[tokio::test]
async fn concurrent_wss_to_wss_sessions_stay_separate() {
    let s = setup(true, true).await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        let auth = if i % 2 == 0 {
            Auth::FirstMessage
        } else {
            Auth::Header
        };
        sessions.push(s.open(auth).await);
    }
    for round in 0..20 {
        for (i, ws) in sessions.iter_mut().enumerate() {
            send(ws, Message::text(format!("session {i} round {round}"))).await;
        }
        for (i, ws) in sessions.iter_mut().enumerate() {
            expect_text(ws, &format!("session {i} round {round}")).await;
        }
    }
    for ws in sessions {
        close(ws).await;
    }
    // Opened one after another with one client config and one relay shard
    // set: later ones may resume on either side, none is plain.
    let ends = s.relay.wait_session_ends(6).await;
    for l in &ends {
        assert!(
            matches!(field(l, "target_tls"), Some("full" | "resumed")),
            "{l}"
        );
        assert!(
            matches!(field(l, "client_tls"), Some("full" | "resumed")),
            "{l}"
        );
    }
}

#[tokio::test]
async fn health_over_tls12_and_tls13_with_alpn_http11() {
    let ca = Ca::new("health CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let cases = [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ];
    for (version, want) in cases {
        for name in ["localhost", "127.0.0.1"] {
            let cfg = client_config_versions(&[&ca.der], &[version]);
            let s = tls(relay.port, &cfg, name).await;
            let conn = s.get_ref().1;
            assert_eq!(
                conn.protocol_version(),
                Some(want),
                "negotiated version ({name})"
            );
            assert_eq!(
                conn.alpn_protocol(),
                Some(&b"http/1.1"[..]),
                "ALPN ({name}, {want:?})"
            );
            let resp = http_get(s, "/health").await;
            assert_eq!(resp.status, 200, "{want:?} {name}: {resp:?}");
            assert_eq!(resp.body.trim(), r#"{"status":"ok"}"#, "{want:?} {name}");
        }
    }
}

/// A client that offers no ALPN at all still gets served.
#[tokio::test]
async fn health_over_tls_without_alpn() {
    let ca = Ca::new("no-alpn CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let mut cfg = (*client_config(&[&ca.der])).clone();
    cfg.alpn_protocols.clear();
    let s = tls(relay.port, &Arc::new(cfg), "localhost").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let resp = http_get(s, "/health").await;
    assert_eq!(resp.status, 200, "{resp:?}");
}

/// The TLS listener never answers a plaintext request in plaintext, and
/// closes the connection.
#[tokio::test]
async fn plaintext_request_on_tls_port_is_not_served() {
    let ca = Ca::new("plaintext CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES)).auth_timeout(2)).await;
    let mut tcp = tcp(relay.port).await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the relay kept a plaintext client open for 5 s (auth_timeout 2 s)"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("HTTP/1.1 200") && !text.contains("status"),
        "served plaintext: {text:?}"
    );
    // And the listener still serves TLS afterwards.
    let s = tls(relay.port, &client_config(&[&ca.der]), "localhost").await;
    assert_eq!(http_get(s, "/health").await.status, 200);
}

/// `tls_cert` holding leaf + intermediate: a client trusting only the root
/// verifies, so the relay sent the whole chain.
#[tokio::test]
async fn certificate_chain_file_is_served_whole() {
    let root = Ca::new("chain root");
    let inter = root.intermediate("chain intermediate");
    let leaf = inter.leaf(LOCAL_NAMES);
    let chain_pem = format!("{}{}", leaf.cert_pem, inter.pem);
    let relay = TlsRelay::start(RelaySpec::tls(&chain_pem, &leaf.key_pem)).await;
    let target = EchoTarget::plain().await;
    let s = tls(relay.port, &client_config(&[&root.der]), "localhost").await;
    let certs = s.get_ref().1.peer_certificates().expect("certs").to_vec();
    assert_eq!(certs.len(), 2, "leaf + intermediate expected");
    assert_eq!(certs[0], leaf.der, "leaf first");
    assert_eq!(certs[1], inter.der, "then the intermediate");
    let mut ws = first_message(s, relay.port, TOKEN, &target.url()).await;
    echo(&mut ws, Message::text("through a chained certificate")).await;
    close(ws).await;
}

/// Header mode over TLS: refusals are HTTP responses with the JSON error
/// object, inside the TLS stream.
#[tokio::test]
async fn header_mode_refusals_over_tls() {
    let ca = Ca::new("refusal CA");
    let relay = TlsRelay::start(RelaySpec::tls_leaf(&ca.leaf(LOCAL_NAMES))).await;
    let target = EchoTarget::plain().await;
    let cfg = client_config(&[&ca.der]);

    let s = tls(relay.port, &cfg, "localhost").await;
    let Err(err) = header_auth(s, relay.port, "wrong-token", &target.url()).await else {
        panic!("a wrong token must be refused");
    };
    let (status, body) = refused(err);
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["status"], "error");
    assert_eq!(v["code"], "auth_failed");

    // First-message mode over TLS with a wrong token: error message + 1008.
    let s = tls(relay.port, &cfg, "localhost").await;
    let mut ws = try_upgrade(s, relay.port, &[]).await.expect("upgrade");
    let auth = serde_json::json!({ "token": "wrong-token", "target": target.url() }).to_string();
    send(&mut ws, Message::text(auth)).await;
    expect_error_close(&mut ws, "auth_failed", 1008).await;

    // A good session on the same listener afterwards.
    let started = Instant::now();
    let s = tls(relay.port, &cfg, "localhost").await;
    let mut ws = header_auth(s, relay.port, TOKEN, &target.url())
        .await
        .expect("good upgrade");
    echo(&mut ws, Message::text("still fine")).await;
    close(ws).await;
    assert!(started.elapsed() < STEP);
}
