//! Target servers, run inside the test process on 127.0.0.1.
//!
//! [`Target`] does its own server handshake (so it can write frames in the
//! same TCP write as its 101, pick a subprotocol, and record the exact request
//! head it received), then speaks WebSocket through tokio-tungstenite in the
//! server role — which rejects unmasked frames, so anything the relay injects
//! towards a target (Close 1001) is checked to be masked. It can echo, report
//! every frame it receives as an [`Ev`], and obey commands: send, close, or
//! vanish (drop TCP without a close frame).
//!
//! Failure targets: [`Sink`] (accepts TCP, never answers: handshake failure,
//! and a watched listener that must never see an accept), [`Sink::status`]
//! (answers the upgrade with a non-101 status), [`Blackhole`] (full accept
//! queue: connects time out) and [`closed_port`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::WebSocketStream;

use super::frame::{server_frame, OP_BINARY, OP_TEXT};
use super::http::find_head_end;

/// Something that happened on one target connection (`conn` counts from 0 in
/// accept order).
#[derive(Debug, Clone)]
pub enum Ev {
    /// Handshake done; `head` is the raw upgrade request the relay sent.
    Connected { conn: usize, head: String },
    /// A message or control frame received (Close included).
    Msg { conn: usize, msg: Message },
    /// The connection ended: "eof", "vanished", or "error: ...".
    Ended { conn: usize, how: String },
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Drop TCP without a close frame.
    Vanish,
    Send(Message),
    /// Start a close handshake with this code and reason.
    Close(u16, String),
    /// Write these bytes straight to the TCP stream (raw, pre-encoded frames).
    Raw(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Cmd {
    conn: Option<usize>,
    action: Action,
}

/// Frames written in the same TCP write as the 101 response.
#[derive(Debug, Clone)]
pub enum Greeting {
    Text(String),
    Binary(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct TargetOpts {
    /// Echo text/binary back (pings are answered automatically, a Close is
    /// always answered with the same Close).
    pub echo: bool,
    /// Report every received message as [`Ev::Msg`] (off for load tests).
    pub report_msgs: bool,
    pub greeting: Vec<Greeting>,
    /// Selected when the client offers it in `Sec-WebSocket-Protocol`.
    pub subprotocol: Option<String>,
    /// After the handshake, never read (a slow reader); commands still run.
    pub stall: bool,
}

impl Default for TargetOpts {
    fn default() -> Self {
        TargetOpts {
            echo: true,
            report_msgs: true,
            greeting: Vec::new(),
            subprotocol: None,
            stall: false,
        }
    }
}

pub struct Target {
    pub port: u16,
    accepts: Arc<AtomicUsize>,
    events: mpsc::UnboundedReceiver<Ev>,
    cmds: broadcast::Sender<Cmd>,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ServerWs = WebSocketStream<TcpStream>;

impl Target {
    /// Echo target that reports what it receives.
    pub async fn echo() -> Target {
        Target::start(TargetOpts::default()).await
    }

    /// Records what it receives, sends nothing unless told to.
    pub async fn recorder() -> Target {
        Target::start(TargetOpts {
            echo: false,
            ..TargetOpts::default()
        })
        .await
    }

    pub async fn start(opts: TargetOpts) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let (ev_tx, events) = mpsc::unbounded_channel();
        let (cmds, _) = broadcast::channel(256);
        let task = {
            let accepts = accepts.clone();
            let cmds = cmds.clone();
            let opts = Arc::new(opts);
            tokio::spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        res = listener.accept() => {
                            let Ok((tcp, _)) = res else { continue };
                            let conn = accepts.fetch_add(1, Ordering::SeqCst);
                            let rx = cmds.subscribe();
                            conns.spawn(serve_conn(tcp, conn, opts.clone(), ev_tx.clone(), rx));
                        }
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    }
                }
            })
        };
        Target {
            port,
            accepts,
            events,
            cmds,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    /// TCP connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Next event; panics after `limit`.
    pub async fn next_event(&mut self, limit: Duration) -> Ev {
        match tokio::time::timeout(limit, self.events.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("target event channel closed"),
            Err(_) => panic!("target: no event within {limit:?}"),
        }
    }

    /// Skips events until `pred` matches; panics after `limit` with the
    /// events skipped.
    pub async fn wait_event(
        &mut self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Ev) -> bool,
    ) -> Ev {
        let deadline = tokio::time::Instant::now() + limit;
        let mut skipped = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) if pred(&ev) => return ev,
                Ok(Some(ev)) => skipped.push(ev),
                Ok(None) => panic!("target event channel closed waiting for {what}"),
                Err(_) => panic!(
                    "target: never saw {what} within {limit:?}; events seen: {}",
                    summarize(&skipped)
                ),
            }
        }
    }

    /// Waits for the next connection; returns (conn, request head).
    pub async fn connected(&mut self) -> (usize, String) {
        match self
            .wait_event("a connection", Duration::from_secs(10), |e| {
                matches!(e, Ev::Connected { .. })
            })
            .await
        {
            Ev::Connected { conn, head } => (conn, head),
            _ => unreachable!(),
        }
    }

    /// Events already queued, without waiting.
    pub fn drain(&mut self) -> Vec<Ev> {
        let mut v = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            v.push(ev);
        }
        v
    }

    fn command(&self, conn: Option<usize>, action: Action) {
        let _ = self.cmds.send(Cmd { conn, action });
    }

    /// Drops TCP on `conn` (all connections when `None`), no close frame.
    pub fn vanish(&self, conn: Option<usize>) {
        self.command(conn, Action::Vanish);
    }

    pub fn send(&self, conn: Option<usize>, msg: Message) {
        self.command(conn, Action::Send(msg));
    }

    /// Writes raw bytes on the target's TCP stream.
    pub fn raw(&self, conn: Option<usize>, bytes: Vec<u8>) {
        self.command(conn, Action::Raw(bytes));
    }

    pub fn close(&self, conn: Option<usize>, code: u16, reason: &str) {
        self.command(conn, Action::Close(code, reason.into()));
    }
}

/// One line per event, for failure messages.
pub fn summarize(evs: &[Ev]) -> String {
    if evs.is_empty() {
        return "(none)".into();
    }
    evs.iter()
        .map(|e| match e {
            Ev::Connected { conn, .. } => format!("[{conn}] connected"),
            Ev::Msg { conn, msg } => format!("[{conn}] {}", describe(msg)),
            Ev::Ended { conn, how } => format!("[{conn}] ended: {how}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Short description of a message (payloads truncated).
pub fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) => {
            let s = t.as_str();
            if s.len() > 80 {
                format!(
                    "Text({:?}.. {} bytes)",
                    &s[..s.floor_char_boundary_compat(60)],
                    s.len()
                )
            } else {
                format!("Text({s:?})")
            }
        }
        Message::Binary(b) => format!("Binary({} bytes)", b.len()),
        Message::Ping(b) => format!("Ping({:?})", String::from_utf8_lossy(b)),
        Message::Pong(b) => format!("Pong({:?})", String::from_utf8_lossy(b)),
        Message::Close(Some(cf)) => {
            format!("Close({}, {:?})", u16::from(cf.code), cf.reason.as_str())
        }
        Message::Close(None) => "Close(no code)".into(),
        Message::Frame(f) => format!("Frame({:?})", f.header().opcode),
    }
}

trait FloorBoundary {
    fn floor_char_boundary_compat(&self, i: usize) -> usize;
}
impl FloorBoundary for str {
    fn floor_char_boundary_compat(&self, mut i: usize) -> usize {
        i = i.min(self.len());
        while !self.is_char_boundary(i) {
            i -= 1;
        }
        i
    }
}

/// Reads a request head; returns (head, bytes read past it).
pub async fn read_head(tcp: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find_head_end(&buf) {
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Value of `name` in a raw request head.
pub fn head_header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Request target (path + query) from a raw request head.
pub fn head_path(head: &str) -> String {
    head.split(' ').nth(1).unwrap_or("").to_string()
}

async fn server_handshake(
    tcp: &mut TcpStream,
    opts: &TargetOpts,
) -> Result<(String, Vec<u8>), String> {
    let (head, rest) = tokio::time::timeout(Duration::from_secs(10), read_head(tcp))
        .await
        .map_err(|_| "no request head within 10 s".to_string())?
        .map_err(|e| format!("reading request head: {e}"))?;
    let head = String::from_utf8_lossy(&head).into_owned();
    let Some(key) = head_header(&head, "sec-websocket-key") else {
        let _ = tcp
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return Err(format!("no Sec-WebSocket-Key in {head:?}"));
    };
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let (Some(chosen), Some(offer)) = (
        &opts.subprotocol,
        head_header(&head, "sec-websocket-protocol"),
    ) {
        if offer.split(',').any(|p| p.trim() == chosen) {
            resp.push_str(&format!("Sec-WebSocket-Protocol: {chosen}\r\n"));
        }
    }
    resp.push_str("\r\n");
    let mut out = resp.into_bytes();
    for g in &opts.greeting {
        match g {
            Greeting::Text(t) => out.extend(server_frame(OP_TEXT, t.as_bytes())),
            Greeting::Binary(b) => out.extend(server_frame(OP_BINARY, b)),
        }
    }
    tcp.write_all(&out)
        .await
        .map_err(|e| format!("writing 101: {e}"))?;
    Ok((head, rest))
}

async fn serve_conn(
    mut tcp: TcpStream,
    conn: usize,
    opts: Arc<TargetOpts>,
    ev: mpsc::UnboundedSender<Ev>,
    mut cmds: broadcast::Receiver<Cmd>,
) {
    let _ = tcp.set_nodelay(true);
    let (head, rest) = match server_handshake(&mut tcp, &opts).await {
        Ok(v) => v,
        Err(e) => {
            let _ = ev.send(Ev::Ended {
                conn,
                how: format!("handshake error: {e}"),
            });
            return;
        }
    };
    let mut ws: ServerWs =
        WebSocketStream::from_partially_read(tcp, rest, Role::Server, None).await;
    let _ = ev.send(Ev::Connected { conn, head });
    loop {
        tokio::select! {
            m = ws.next(), if !opts.stall => match m {
                Some(Ok(msg)) => {
                    if opts.report_msgs || msg.is_close() {
                        let _ = ev.send(Ev::Msg { conn, msg: msg.clone() });
                    }
                    if opts.echo {
                        if let Err(e) = echo(&mut ws, msg).await {
                            let _ = ev.send(Ev::Ended { conn, how: format!("error: {e}") });
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = ev.send(Ev::Ended { conn, how: format!("error: {e}") });
                    return;
                }
                None => {
                    let _ = ev.send(Ev::Ended { conn, how: "eof".into() });
                    return;
                }
            },
            cmd = cmds.recv() => {
                let Ok(cmd) = cmd else { continue };
                if cmd.conn.is_some_and(|c| c != conn) {
                    continue;
                }
                let res = match cmd.action {
                    Action::Vanish => {
                        drop(ws);
                        let _ = ev.send(Ev::Ended { conn, how: "vanished".into() });
                        return;
                    }
                    Action::Send(m) => ws.send(m).await,
                    Action::Raw(bytes) => {
                        use tokio::io::AsyncWriteExt as _;
                        ws.get_mut().write_all(&bytes).await.map_err(tokio_tungstenite::tungstenite::Error::Io)
                    }
                    Action::Close(code, reason) => {
                        ws.close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })).await
                    }
                };
                if let Err(e) = res {
                    let _ = ev.send(Ev::Ended { conn, how: format!("error: {e}") });
                    return;
                }
            }
        }
    }
}

/// Echo behaviour. Text starting with `FRAG:` is answered with the rest split
/// into three fragments; `PING:` makes the target send a Ping with the rest.
async fn echo(
    ws: &mut ServerWs,
    msg: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    match msg {
        Message::Text(t) => {
            if let Some(rest) = t.as_str().strip_prefix("FRAG:") {
                let b = rest.as_bytes();
                let (a, rest2) = b.split_at(b.len() / 3);
                let (m, z) = rest2.split_at(rest2.len() / 2);
                ws.feed(Message::Frame(Frame::message(
                    Bytes::copy_from_slice(a),
                    OpCode::Data(Data::Text),
                    false,
                )))
                .await?;
                ws.feed(Message::Frame(Frame::message(
                    Bytes::copy_from_slice(m),
                    OpCode::Data(Data::Continue),
                    false,
                )))
                .await?;
                ws.send(Message::Frame(Frame::message(
                    Bytes::copy_from_slice(z),
                    OpCode::Data(Data::Continue),
                    true,
                )))
                .await
            } else if let Some(rest) = t.as_str().strip_prefix("PING:") {
                ws.send(Message::Ping(Bytes::copy_from_slice(rest.as_bytes())))
                    .await
            } else {
                ws.send(Message::Text(t)).await
            }
        }
        Message::Binary(b) => ws.send(Message::Binary(b)).await,
        _ => Ok(()),
    }
}

/// Accepts TCP and never answers (reads and discards). As a watched listener
/// it proves the relay never connected; as a target it is a handshake that
/// never completes.
pub struct Sink {
    pub port: u16,
    accepts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Sink {
    pub async fn silent() -> Sink {
        Sink::start(None).await
    }

    /// Reads the request head, answers `status` (not 101) and closes.
    pub async fn status(status: u16) -> Sink {
        Sink::start(Some(status)).await
    }

    async fn start(status: Option<u16>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let port = listener.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let a2 = accepts.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    res = listener.accept() => {
                        let Ok((mut tcp, _)) = res else { continue };
                        a2.fetch_add(1, Ordering::SeqCst);
                        conns.spawn(async move {
                            match status {
                                Some(code) => {
                                    if read_head(&mut tcp).await.is_ok() {
                                        let body = "not a websocket endpoint";
                                        let resp = format!(
                                            "HTTP/1.1 {code} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                            body.len()
                                        );
                                        let _ = tcp.write_all(resp.as_bytes()).await;
                                        let _ = tcp.shutdown().await;
                                        let mut sink = [0u8; 1024];
                                        while let Ok(n) = tcp.read(&mut sink).await { if n == 0 { break } }
                                    }
                                }
                                None => {
                                    let mut sink = [0u8; 4096];
                                    while let Ok(n) = tcp.read(&mut sink).await { if n == 0 { break } }
                                    // Keep the socket open a while even after the peer's FIN.
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                }
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Sink {
            port,
            accepts,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }

    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// A port nothing listens on (connect → ECONNREFUSED).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener with backlog 0 whose accept queue the test fills, so further
/// SYNs are dropped and connects hang until the dialer's timeout.
pub struct Blackhole {
    pub port: u16,
    _listener: std::net::TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    pub async fn start() -> Blackhole {
        use std::os::fd::FromRawFd;
        let listener = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket()");
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = 0;
            addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let rc = libc::bind(
                fd,
                &addr as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "bind()");
            assert_eq!(libc::listen(fd, 0), 0, "listen()");
            std::net::TcpListener::from_raw_fd(fd)
        };
        let port = listener.local_addr().unwrap().port();
        let mut fillers = Vec::new();
        let mut full = false;
        for _ in 0..32 {
            match tokio::time::timeout(
                Duration::from_millis(300),
                TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                Ok(Err(e)) => panic!("blackhole filler connect failed: {e}"),
                Err(_) => {
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "could not fill the blackhole's accept queue");
        Blackhole {
            port,
            _listener: listener,
            _fillers: fillers,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path)
    }
}
