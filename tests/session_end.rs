//! How a session ends when one peer ends it (issue 25, item 1): whatever the
//! target said reaches the client, and the relay speaks only for a peer
//! that said nothing (docs/relay.md "Session end").
//!
//! A raw target (plain or TLS) answers the upgrade, waits until the client
//! is sending steadily, then ends in one of four ways: Close then FIN, Close
//! then RST (closed with unread data), RST with no Close, FIN with no Close.
//! A raw client sends a frame every millisecond throughout and records, off
//! the wire, every Close frame it gets and how its connection ended. Run for
//! each forward mode, a TLS listener and a `wss://` target (in copy and in
//! ring mode, where one direction's source is plain TCP). The reverse
//! direction: a client that resets gets its target reset too (a client's
//! FIN is `relay_lifecycle::client_vanishes_mid_session`).

mod common;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use common::frame::{client_frame, close_payload, server_frame};
use common::http::urlencode;
use common::tls::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// How the target ends its connection.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    CloseThenFin,
    CloseThenRst,
    RstNoClose,
    FinNoClose,
    /// Read until the relay ends the connection; report what it saw.
    Listen,
}

/// The target's own Close code: an application code a relay must not lose.
const TARGET_CODE: u16 = 4001;
/// Client bytes the target waits for before ending: the client is mid-send.
const MID_SEND: usize = 2_000;

/// How a connection ended, seen from one side.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Eof,
    Reset,
    Other(String),
    /// Still open after the limit.
    Open,
}

/// What one side saw: the Close codes it received and how its end came.
#[derive(Debug)]
struct Seen {
    closes: Vec<Option<u16>>,
    end: End,
}

fn end_of(e: &io::Error) -> End {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => End::Reset,
        io::ErrorKind::UnexpectedEof => End::Eof,
        _ => End::Other(e.to_string()),
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid linger struct and its size, on an open socket.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

fn shutdown_write(fd: RawFd) {
    // SAFETY: plain syscall on an open socket.
    unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// Reads until EOF or error (or `limit`), keeping what arrived.
async fn read_all<R: AsyncRead + Unpin>(r: &mut R, frames: &mut Vec<u8>, limit: Duration) -> End {
    let mut chunk = vec![0u8; 16 * 1024];
    let read = async {
        loop {
            match r.read(&mut chunk).await {
                Ok(0) => return End::Eof,
                Ok(n) => frames.extend_from_slice(&chunk[..n]),
                Err(e) => return end_of(&e),
            }
        }
    };
    tokio::time::timeout(limit, read).await.unwrap_or(End::Open)
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.expect("read head");
        assert!(n > 0, "EOF inside the HTTP head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
    }
}

/// A target that ends every connection as `ending` says and reports what it
/// saw of the relay's side.
struct RawTarget {
    port: u16,
    seen: mpsc::UnboundedReceiver<Seen>,
}

impl RawTarget {
    async fn start(ending: Ending, tls: Option<Arc<rustls::ServerConfig>>) -> RawTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let fd = tcp.as_raw_fd();
                let tx = tx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let seen = match tls {
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            let Ok(s) = acceptor.accept(tcp).await else {
                                return;
                            };
                            // Keeps the TLS session and socket alive until
                            // the end chosen; a drop here would be a reset.
                            serve_target(s, fd, ending).await
                        }
                        None => serve_target(tcp, fd, ending).await,
                    };
                    let _ = tx.send(seen);
                });
            }
        });
        RawTarget { port, seen }
    }

    fn url(&self, tls: bool) -> String {
        let scheme = if tls { "wss" } else { "ws" };
        format!("{scheme}://localhost:{}/", self.port)
    }

    async fn seen(&mut self) -> Seen {
        within(STEP, "the target's report", self.seen.recv())
            .await
            .expect("target task ended")
    }
}

async fn serve_target<S: Io>(mut s: S, fd: RawFd, ending: Ending) -> Seen {
    let (head, rest) = read_head(&mut s).await;
    let key = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Sec-WebSocket-Key: ")
                .or_else(|| l.strip_prefix("sec-websocket-key: "))
        })
        .expect("Sec-WebSocket-Key")
        .trim()
        .to_string();
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    s.write_all(answer.as_bytes()).await.unwrap();
    let mut frames = rest;
    if ending == Ending::Listen {
        let end = read_all(&mut s, &mut frames, Duration::from_secs(5)).await;
        return Seen {
            closes: close_codes(&frames),
            end,
        };
    }
    // Wait until the client is well into sending: its frames keep coming
    // while the target ends, so a reset finds unread bytes.
    let mut chunk = [0u8; 4096];
    while frames.len() < MID_SEND {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => panic!("client stopped before the target ended"),
            Ok(n) => frames.extend_from_slice(&chunk[..n]),
        }
    }
    if matches!(ending, Ending::CloseThenFin | Ending::CloseThenRst) {
        let close = server_frame(0x8, &close_payload(TARGET_CODE, "target says bye"));
        s.write_all(&close).await.unwrap();
        s.flush().await.unwrap();
    }
    match ending {
        Ending::CloseThenFin | Ending::FinNoClose => {
            // A FIN (no TLS close_notify: a process that just went away),
            // then read on so that unread bytes cannot turn it into a reset.
            shutdown_write(fd);
            let _ = read_all(&mut s, &mut frames, Duration::from_secs(5)).await;
        }
        Ending::CloseThenRst => {
            // Closed with the client's later frames unread: the kernel
            // sends a reset.
            tokio::time::sleep(Duration::from_millis(20)).await;
            set_linger_zero(fd);
        }
        Ending::RstNoClose => set_linger_zero(fd),
        Ending::Listen => unreachable!(),
    }
    drop(s);
    Seen {
        closes: Vec::new(),
        end: End::Eof,
    }
}

/// The client: upgrade with `?token=&target=`, then a 64-byte frame every
/// millisecond until the connection ends (or a Close arrives, which it
/// answers), recording everything it reads.
async fn client_session<S: Io>(s: S, port: u16, target: &str) -> Seen {
    let (mut rd, mut wr) = tokio::io::split(s);
    let req = format!(
        "GET /?token={TOKEN}&target={} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        urlencode(target)
    );
    wr.write_all(req.as_bytes()).await.unwrap();
    let (head, rest) = within(STEP, "101 from the relay", read_head(&mut rd)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let frame = client_frame(0x2, &[0x5a; 64]);
        loop {
            if let Err(e) = wr.write_all(&frame).await {
                return Some(end_of(&e));
            }
            tokio::select! {
                _ = &mut stop_rx => {
                    let _ = wr.write_all(&client_frame(0x8, &close_payload(TARGET_CODE, ""))).await;
                    return None;
                }
                _ = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
        }
    });
    let mut frames = rest;
    let mut stop = Some(stop_tx);
    let mut chunk = vec![0u8; 16 * 1024];
    let end = within(STEP, "the relay to end the client's connection", async {
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => return End::Eof,
                Ok(n) => frames.extend_from_slice(&chunk[..n]),
                Err(e) => return end_of(&e),
            }
            if !close_codes(&frames).is_empty() {
                if let Some(tx) = stop.take() {
                    let _ = tx.send(());
                }
            }
        }
    })
    .await;
    drop(stop);
    let write_end = writer.await.unwrap();
    // A reset may show up on the write side first; the read then sees EOF.
    let end = match (end, write_end) {
        (End::Eof, Some(End::Reset)) => End::Reset,
        (end, _) => end,
    };
    Seen {
        closes: close_codes(&frames),
        end,
    }
}

/// The ways tested: a plain listener in each mode, a TLS listener, a
/// `wss://` target (the last two in copy and in ring mode).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Copy,
    Splice,
    Ring,
    TlsListener,
    WssTarget,
    TlsListenerRing,
    WssTargetRing,
}

async fn run(path: Path, ending: Ending) -> Seen {
    let ca = Ca::new("session_end test CA");
    let leaf = ca.leaf(LOCAL_NAMES);
    let tls_listener = matches!(path, Path::TlsListener | Path::TlsListenerRing);
    let wss_target = matches!(path, Path::WssTarget | Path::WssTargetRing);
    let spec = match path {
        _ if tls_listener => RelaySpec::tls_leaf(&leaf),
        _ if wss_target => RelaySpec::plain().target_ca(&ca.pem),
        _ => RelaySpec::plain(),
    };
    let forward = match path {
        Path::Splice => "splice",
        Path::Ring | Path::TlsListenerRing | Path::WssTargetRing => "ring",
        _ => "copy",
    };
    let relay = TlsRelay::start(spec.line(&format!("forward = \"{forward}\""))).await;
    let target_tls = wss_target.then(|| leaf.server_config(&[]));
    let target = RawTarget::start(ending, target_tls).await;
    let url = target.url(wss_target);
    let seen = if tls_listener {
        let s = tls(relay.port, &client_config(&[&ca.der]), "localhost").await;
        client_session(s, relay.port, &url).await
    } else {
        client_session(tcp(relay.port).await, relay.port, &url).await
    };
    drop(target);
    seen
}

fn assert_seen(path: Path, ending: Ending, seen: &Seen) {
    let ctx = format!("{path:?}, target {ending:?}: client saw {seen:?}");
    match ending {
        Ending::CloseThenFin => {
            assert_eq!(seen.closes, [Some(TARGET_CODE)], "{ctx}");
            assert_eq!(seen.end, End::Eof, "{ctx}");
        }
        // The Close arrived: what follows it (a FIN, or the reset passed
        // on) no longer hides anything.
        Ending::CloseThenRst => {
            assert_eq!(seen.closes, [Some(TARGET_CODE)], "{ctx}");
            assert!(matches!(seen.end, End::Eof | End::Reset), "{ctx}");
        }
        // The target aborted: the client's connection is aborted too, and
        // no Close frame speaks for a target that sent none.
        Ending::RstNoClose => {
            assert_eq!(seen.closes, [], "{ctx}");
            assert_eq!(seen.end, End::Reset, "{ctx}");
        }
        // A target gone without a word: copy mode says so with 1014;
        // splice never sees frames and can only close TCP.
        Ending::FinNoClose => {
            let want: &[Option<u16>] = match path {
                Path::Splice => &[],
                _ => &[Some(1014)],
            };
            assert_eq!(seen.closes, want, "{ctx}");
            assert_eq!(seen.end, End::Eof, "{ctx}");
        }
        Ending::Listen => unreachable!(),
    }
}

macro_rules! target_ends {
    ($($name:ident: $path:expr, $ending:expr;)+) => { $(
        #[tokio::test]
        async fn $name() {
            let seen = run($path, $ending).await;
            assert_seen($path, $ending, &seen);
        }
    )+ };
}

target_ends! {
    copy_close_then_fin: Path::Copy, Ending::CloseThenFin;
    copy_close_then_rst: Path::Copy, Ending::CloseThenRst;
    copy_rst_no_close: Path::Copy, Ending::RstNoClose;
    copy_fin_no_close: Path::Copy, Ending::FinNoClose;
    splice_close_then_fin: Path::Splice, Ending::CloseThenFin;
    splice_close_then_rst: Path::Splice, Ending::CloseThenRst;
    splice_rst_no_close: Path::Splice, Ending::RstNoClose;
    splice_fin_no_close: Path::Splice, Ending::FinNoClose;
    tls_listener_close_then_fin: Path::TlsListener, Ending::CloseThenFin;
    tls_listener_close_then_rst: Path::TlsListener, Ending::CloseThenRst;
    tls_listener_rst_no_close: Path::TlsListener, Ending::RstNoClose;
    tls_listener_fin_no_close: Path::TlsListener, Ending::FinNoClose;
    wss_target_close_then_fin: Path::WssTarget, Ending::CloseThenFin;
    wss_target_close_then_rst: Path::WssTarget, Ending::CloseThenRst;
    wss_target_rst_no_close: Path::WssTarget, Ending::RstNoClose;
    wss_target_fin_no_close: Path::WssTarget, Ending::FinNoClose;
    ring_close_then_fin: Path::Ring, Ending::CloseThenFin;
    ring_close_then_rst: Path::Ring, Ending::CloseThenRst;
    ring_rst_no_close: Path::Ring, Ending::RstNoClose;
    ring_fin_no_close: Path::Ring, Ending::FinNoClose;
    tls_listener_ring_close_then_fin: Path::TlsListenerRing, Ending::CloseThenFin;
    tls_listener_ring_fin_no_close: Path::TlsListenerRing, Ending::FinNoClose;
    wss_target_ring_close_then_fin: Path::WssTargetRing, Ending::CloseThenFin;
    wss_target_ring_fin_no_close: Path::WssTargetRing, Ending::FinNoClose;
}

/// A client that resets mid-send: its target's connection is reset too,
/// with no Close frame written in the client's name.
async fn client_reset_reaches_the_target(forward: &str) {
    let relay = TlsRelay::start(RelaySpec::plain().line(&format!("forward = \"{forward}\""))).await;
    let mut target = RawTarget::start(Ending::Listen, None).await;
    let mut s = tcp(relay.port).await;
    let req = format!(
        "GET /?token={TOKEN}&target={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        urlencode(&target.url(false))
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let (head, _) = within(STEP, "101", read_head(&mut s)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for _ in 0..10 {
        s.write_all(&client_frame(0x2, &[1; 64])).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    set_linger_zero(s.as_raw_fd());
    drop(s);
    let seen = target.seen().await;
    assert_eq!(seen.closes, [], "{forward}: target saw {seen:?}");
    assert_eq!(seen.end, End::Reset, "{forward}: target saw {seen:?}");
}

#[tokio::test]
async fn copy_client_reset_reaches_the_target() {
    client_reset_reaches_the_target("copy").await;
}

#[tokio::test]
async fn splice_client_reset_reaches_the_target() {
    client_reset_reaches_the_target("splice").await;
}

#[tokio::test]
async fn ring_client_reset_reaches_the_target() {
    client_reset_reaches_the_target("ring").await;
}
