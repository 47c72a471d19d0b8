//! TLS 1.3 0-RTT toward `wss://` targets (`target_early_data`), observed on
//! the target's side of the wire. The target here is a tokio-rustls server
//! with stateful resumption and `max_early_data_size > 0`; for every accepted
//! connection it records the handshake kind, the plaintext rustls handed it
//! as 0-RTT data (`ServerConnection::early_data`, a separate buffer from the
//! ordinary 1-RTT stream) and every byte read from the 1-RTT stream.
//!
//! - `target_early_data = true`, one shard: the first session is a full
//!   handshake with the upgrade request on the 1-RTT stream; later sessions
//!   resume and the complete upgrade request arrives as 0-RTT data, exactly
//!   once (not repeated on the 1-RTT stream), and the relayed echo works.
//! - Off by default: later sessions resume, but nothing is sent as 0-RTT.
//! - A target that rejects the 0-RTT flight (its tickets allow early data,
//!   the resumed handshake refuses it) still gets exactly one upgrade
//!   request, on the 1-RTT stream, and the session works.
//! - With the key on, a `ws://` target and a `wss://` target whose tickets
//!   allow no early data work (and the latter resumes) as before.
//! - A target whose tickets allow less early data than the upgrade request
//!   must still get exactly one complete, uncorrupted upgrade request (the
//!   relay once sent a 0-RTT fragment, then the whole request again).

mod common;

use std::io::Read;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use common::tls::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// Path of the target URL: the request line the target counts.
const PATH: &str = "/0rtt";
const REQUEST_LINE: &str = "GET /0rtt HTTP/1.1\r\n";

/// What the target does with early data.
#[derive(Clone, Copy, Debug)]
enum Policy {
    /// Tickets allow (and resumed handshakes accept) this much 0-RTT data.
    Accept(u32),
    /// Tickets allow 16 KiB of early data, but every handshake rejects it.
    Reject,
}

/// One connection the target accepted.
struct Accepted {
    kind: Option<rustls::HandshakeKind>,
    /// Whether rustls accepted a 0-RTT flight on this connection.
    zero_rtt: bool,
    /// Plaintext received as 0-RTT data.
    early: Vec<u8>,
    /// Plaintext read from the ordinary (1-RTT) stream, live.
    stream: Seen,
}

/// A snapshot of [`Accepted`] for assertions.
#[derive(Clone, Debug)]
struct Conn {
    kind: Option<rustls::HandshakeKind>,
    zero_rtt: bool,
    early: String,
    stream: Vec<u8>,
}

impl Conn {
    /// Upgrade request lines seen on this connection, 0-RTT and 1-RTT.
    fn requests(&self) -> usize {
        let all = [self.early.as_bytes(), &self.stream].concat();
        count(&all, REQUEST_LINE.as_bytes())
    }

    /// Upgrade request lines on the 1-RTT stream.
    fn late_requests(&self) -> usize {
        count(&self.stream, REQUEST_LINE.as_bytes())
    }

    /// The HTTP head the target parsed: 0-RTT bytes, then 1-RTT bytes, up to
    /// the first blank line.
    fn head(&self) -> String {
        let all = [self.early.as_bytes(), &self.stream].concat();
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(all.len(), |i| i + 4);
        String::from_utf8_lossy(&all[..end]).into_owned()
    }

    /// What the relay sent as 1-RTT data, for messages (frames are masked).
    fn stream_start(&self) -> String {
        let n = self.stream.len().min(80);
        format!(
            "{:?}{}",
            String::from_utf8_lossy(&self.stream[..n]),
            if n < self.stream.len() { "…" } else { "" }
        )
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// A `wss://` echo target that records 0-RTT data per connection.
struct ZeroRttTarget {
    port: u16,
    conns: Arc<Mutex<Vec<Accepted>>>,
    failed: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ZeroRttTarget {
    async fn start(leaf: &Leaf, policy: Policy) -> ZeroRttTarget {
        let mut config = (*leaf.server_config(&[])).clone();
        config.max_early_data_size = match policy {
            Policy::Accept(n) => n,
            Policy::Reject => 16384,
        };
        config.send_tls13_tickets = 2;
        // rustls accepts 0-RTT only with stateful resumption (RFC 8446 8.1):
        // no ticketer, the default in-memory session cache.
        assert!(
            !config.ticketer.enabled(),
            "0-RTT needs stateful resumption"
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Accepted>>> = Default::default();
        let failed: Arc<Mutex<Vec<String>>> = Default::default();
        let (c, f) = (conns.clone(), failed.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let (c, f, acceptor) = (c.clone(), f.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let handshake = match policy {
                        Policy::Accept(_) => acceptor.accept(tcp).await,
                        Policy::Reject => {
                            acceptor
                                .accept_with(tcp, |conn| conn.reject_early_data())
                                .await
                        }
                    };
                    let mut tls = match handshake {
                        Ok(s) => s,
                        Err(e) => {
                            f.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    // The accept future ends after the client's Finished,
                    // which follows all of its 0-RTT records: whatever came
                    // as early data is in rustls's early-data buffer now.
                    let conn = &mut tls.get_mut().1;
                    let kind = conn.handshake_kind();
                    let (zero_rtt, early) = match conn.early_data() {
                        Some(mut ed) => {
                            let mut v = Vec::new();
                            ed.read_to_end(&mut v).expect("read early data");
                            (true, v)
                        }
                        None => (false, Vec::new()),
                    };
                    let (io, stream) = tap(tls);
                    c.lock().unwrap().push(Accepted {
                        kind,
                        zero_rtt,
                        early: early.clone(),
                        stream,
                    });
                    // rustls never moves 0-RTT data into the ordinary
                    // stream: hand it to the WebSocket server first.
                    echo_ws(Prefixed {
                        prefix: early,
                        pos: 0,
                        inner: io,
                    })
                    .await;
                });
            }
        });
        ZeroRttTarget {
            port,
            conns,
            failed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("wss://localhost:{}{PATH}", self.port)
    }

    fn conns(&self) -> Vec<Conn> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|a| Conn {
                kind: a.kind,
                zero_rtt: a.zero_rtt,
                early: String::from_utf8_lossy(&a.early).into_owned(),
                stream: a.stream.lock().unwrap().clone(),
            })
            .collect()
    }
}

impl Drop for ZeroRttTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `inner`, with `prefix` read before it.
struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

const SESSIONS: usize = 3;

/// Runs [`SESSIONS`] relayed echo sessions (both auth modes) to `target`
/// through a fresh one-shard relay, one after another. Checks what holds in
/// every mode (relay and target agree the first handshake was full and the
/// later ones resumed; each connection carried exactly one well-formed
/// upgrade request) and returns what the target saw per connection.
async fn sessions(early_data: Option<bool>, target: &ZeroRttTarget, ca: &Ca) -> Vec<Conn> {
    let mut spec = RelaySpec::plain().workers(1).target_ca(&ca.pem);
    if let Some(on) = early_data {
        spec = spec.line(&format!("target_early_data = {on}"));
    }
    let relay = TlsRelay::start(spec).await;
    for i in 0..SESSIONS {
        let io = tcp(relay.port).await;
        let mut ws = if i % 2 == 0 {
            first_message(io, relay.port, TOKEN, &target.url()).await
        } else {
            header_auth(io, relay.port, TOKEN, &target.url())
                .await
                .unwrap_or_else(|e| panic!("session {i}: header-mode upgrade failed: {e}"))
        };
        echo(&mut ws, Message::text(format!("session {i}"))).await;
        echo(&mut ws, Message::binary(vec![i as u8; 5000])).await;
        close(ws).await;
        relay.wait_session_ends(i + 1).await;
    }
    let ends = relay.session_ends();
    let kinds: Vec<_> = ends
        .iter()
        .map(|l| field(l, "target_tls").unwrap_or("?"))
        .collect();
    let want: Vec<_> = (0..SESSIONS)
        .map(|i| if i == 0 { "full" } else { "resumed" })
        .collect();
    assert_eq!(
        kinds,
        want,
        "relay's target_tls per session:\n{}",
        ends.join("\n")
    );
    for l in &ends {
        assert_eq!(
            field(l, "target"),
            Some(format!("localhost:{}", target.port).as_str())
        );
    }
    let conns = target.conns();
    assert!(
        target.failed.lock().unwrap().is_empty(),
        "target TLS handshakes failed: {:?}",
        target.failed.lock().unwrap()
    );
    assert_eq!(conns.len(), SESSIONS, "target connections: {conns:#?}");
    assert_eq!(conns[0].kind, Some(rustls::HandshakeKind::Full));
    for (i, c) in conns.iter().enumerate() {
        if i > 0 {
            assert_eq!(
                c.kind,
                Some(rustls::HandshakeKind::Resumed),
                "connection {i} must resume"
            );
        }
        // Exactly one upgrade request per connection, and a sane one.
        assert_eq!(
            c.requests(),
            1,
            "connection {i}: upgrade request lines seen by the target (0-RTT {:?}, then \
             1-RTT {})",
            c.early,
            c.stream_start()
        );
        let head = c.head();
        assert!(
            head.starts_with(REQUEST_LINE) && head.ends_with("\r\n\r\n"),
            "connection {i}: request head {head:?}"
        );
        let host = format!("\r\nHost: localhost:{}\r\n", target.port);
        assert!(
            head.to_ascii_lowercase()
                .contains(&host.to_ascii_lowercase()),
            "connection {i}: request head lacks {host:?}: {head:?}"
        );
    }
    conns
}

/// With `target_early_data = true`, resumed sessions send the whole upgrade
/// request as 0-RTT data, once.
#[tokio::test]
async fn upgrade_rides_in_0rtt_when_enabled() {
    let ca = Ca::new("0-RTT CA");
    let target = ZeroRttTarget::start(&ca.leaf(LOCAL_NAMES), Policy::Accept(16384)).await;
    let conns = sessions(Some(true), &target, &ca).await;
    let first = &conns[0];
    assert!(
        !first.zero_rtt && first.early.is_empty() && first.late_requests() == 1,
        "first session (no ticket yet): no 0-RTT, request on the 1-RTT stream: {first:?}"
    );
    for (i, c) in conns.iter().enumerate().skip(1) {
        assert!(
            c.zero_rtt,
            "connection {i} resumed but carried no accepted 0-RTT flight; the request came \
             on the 1-RTT stream: {}",
            c.stream_start()
        );
        assert!(
            c.early.starts_with(REQUEST_LINE) && c.early.ends_with("\r\n\r\n"),
            "connection {i}: 0-RTT data must be the whole upgrade request, got {:?}",
            c.early
        );
        assert_eq!(
            c.late_requests(),
            0,
            "connection {i}: the upgrade request was accepted as 0-RTT data and then sent \
             again on the 1-RTT stream: {}",
            c.stream_start()
        );
    }
}

/// Without the key (or with it set to `false`), resumed sessions carry no
/// 0-RTT data although the target's tickets allow it.
#[tokio::test]
async fn no_0rtt_by_default() {
    let ca = Ca::new("no 0-RTT CA");
    for setting in [None, Some(false)] {
        let target = ZeroRttTarget::start(&ca.leaf(LOCAL_NAMES), Policy::Accept(16384)).await;
        let conns = sessions(setting, &target, &ca).await;
        for (i, c) in conns.iter().enumerate() {
            assert!(
                !c.zero_rtt && c.early.is_empty() && c.late_requests() == 1,
                "target_early_data {setting:?}: connection {i} must send the request on the \
                 1-RTT stream only: {c:?}"
            );
        }
    }
}

/// The target rejects the 0-RTT flight: the relay must send the request on
/// the 1-RTT stream, once.
#[tokio::test]
async fn rejected_0rtt_sends_request_once_after_handshake() {
    let ca = Ca::new("0-RTT reject CA");
    let target = ZeroRttTarget::start(&ca.leaf(LOCAL_NAMES), Policy::Reject).await;
    let conns = sessions(Some(true), &target, &ca).await;
    for (i, c) in conns.iter().enumerate() {
        assert!(
            !c.zero_rtt && c.early.is_empty() && c.late_requests() == 1,
            "connection {i}: rejected 0-RTT, so the request must arrive once on the 1-RTT \
             stream: {c:?}"
        );
    }
}

/// With the key on, targets that cannot take 0-RTT work as before: a `ws://`
/// target, and a `wss://` target whose tickets allow no early data (rustls's
/// default `max_early_data_size = 0`), which still resumes.
#[tokio::test]
async fn targets_without_0rtt_unaffected_when_enabled() {
    let ca = Ca::new("no-0-RTT target CA");
    let plain = EchoTarget::plain().await;
    let secure = EchoTarget::tls(ca.leaf(LOCAL_NAMES).server_config(&[])).await;
    let relay = TlsRelay::start(
        RelaySpec::plain()
            .workers(1)
            .target_ca(&ca.pem)
            .line("target_early_data = true"),
    )
    .await;
    for (i, url) in [plain.url(), secure.url(), plain.url(), secure.url()]
        .iter()
        .enumerate()
    {
        let io = tcp(relay.port).await;
        let mut ws = first_message(io, relay.port, TOKEN, url).await;
        echo(&mut ws, Message::text(format!("session {i} to {url}"))).await;
        close(ws).await;
        relay.wait_session_ends(i + 1).await;
    }
    let ends = relay.session_ends();
    let kinds: Vec<_> = ends
        .iter()
        .map(|l| field(l, "target_tls").unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        ["none", "full", "none", "resumed"],
        "{}",
        ends.join("\n")
    );
    assert_eq!(
        secure.handshake_kinds(),
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

/// Tickets allowing less early data than the upgrade request: the target
/// must still see one complete request, not a 0-RTT fragment followed by the
/// whole request again.
#[tokio::test]
async fn small_early_data_limit_does_not_split_or_repeat_request() {
    let ca = Ca::new("0-RTT small limit CA");
    let target = ZeroRttTarget::start(&ca.leaf(LOCAL_NAMES), Policy::Accept(32)).await;
    let conns = sessions(Some(true), &target, &ca).await;
    for (i, c) in conns.iter().enumerate() {
        assert!(
            c.early.is_empty() || c.late_requests() == 0,
            "connection {i}: 0-RTT carried {:?} and the 1-RTT stream then repeated the \
             request: {}",
            c.early,
            c.stream_start()
        );
    }
}
