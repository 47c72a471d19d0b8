//! `ws-relay-core tunnel`: the tunnel client. Each connection accepted on a
//! `[[forwards]] listen` address opens one tunnel session to the relay
//! (`tcp://` target, handshake-time auth) and is bridged over it; `--stdio`
//! carries standard input and output instead, for SSH's `ProxyCommand`.
//! Each `[[proxies]]` entry publishes a local service on the relay host
//! (`reverse.rs`).
//!
//! Runs one monoio runtime on the calling thread (io_uring, or epoll where
//! that is unavailable), with DNS on a small thread pool. Must not: block
//! the runtime, or log the token.

pub mod config;
pub mod dial;
mod reverse;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::blocking::DefaultThreadPool;
use monoio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

pub use config::{ClientConfig, ClientConfigError};
use dial::DialError;

use crate::config::{ForwardMode, ServerConfig, TlsRoots};
use crate::endpoint::Endpoint;
use crate::forward::bridge::{bridge, Role};
use crate::forward::{ForwardCtx, Outcome};
use crate::net::dns::DnsCache;
use crate::net::event::Event;
use crate::net::pool::{BufferPool, PipePool};
use crate::net::ring::RecvRing;
use crate::net::sockopt::tune_stream;
use crate::tls::target::TargetTrust;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Config(#[from] ClientConfigError),
    #[error("TLS setup: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("nothing to do: the config has no [[forwards]] or [[proxies]] (or use --stdio tcp://host:port)")]
    NoForwards,
}

/// Attempts per local connection, and the first wait between them (doubled
/// each time): rides out a relay restart of about a second.
const ATTEMPTS: u32 = 4;
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// What every session of this client shares.
struct Client {
    cfg: ClientConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    dns: DnsCache,
    buffers: BufferPool,
    pipes: PipePool,
    ring: RecvRing,
    never: Event,
    /// Bytes each way over all sessions (the bridge's counters).
    relayed: [std::cell::Cell<u64>; 2],
}

impl Client {
    /// Bridges run in copy mode (the WebSocket side is framed) with no idle
    /// timeout: the tunnel lives as long as its local connection.
    fn forward_ctx(&self) -> ForwardCtx<'_> {
        ForwardCtx {
            relayed: [&self.relayed[0], &self.relayed[1]],
            mode: ForwardMode::Copy,
            buffers: &self.buffers,
            ring: &self.ring,
            pipes: &self.pipes,
            idle_timeout: None,
            close_all: &self.never,
            reserved_bits: false,
        }
    }

    /// Bridges one local connection over its tunnel until either ends.
    async fn bridge_local(&self, tunnel: dial::Tunnel, local: &Endpoint) -> Outcome {
        let ctx = self.forward_ctx();
        bridge(
            &ctx,
            Role::TUNNEL_CLIENT,
            &tunnel.ws,
            local,
            tunnel.early,
            None,
        )
        .await
    }
}

/// Runs the forwards in `cfg`, or one `--stdio` session to `stdio_target`.
pub fn run(cfg: ClientConfig, stdio_target: Option<String>) -> Result<(), TunnelError> {
    if stdio_target.is_none() && cfg.forwards.is_empty() && cfg.proxies.is_empty() {
        return Err(TunnelError::NoForwards);
    }
    let tls = match cfg.server.secure {
        false => None,
        true => Some(trust(&cfg)?.client_config()?),
    };
    let pool = DefaultThreadPool::new(2);
    let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .attach_thread_pool(Box::new(pool))
        .build()
        .map_err(TunnelError::Runtime)?;
    rt.block_on(async move {
        let client = Rc::new(Client {
            cfg,
            tls,
            dns: DnsCache::new(Duration::from_secs(30)),
            buffers: BufferPool::new(
                crate::forward::bridge::BUFFER_BYTES,
                crate::forward::bridge::BUFFERS_KEPT,
            ),
            pipes: PipePool::new(0),
            ring: RecvRing::none(),
            never: Event::default(),
            relayed: Default::default(),
        });
        match stdio_target {
            Some(target) => run_stdio(client, target).await,
            None => run_forwards(client).await,
        }
    })
}

/// Trust toward the relay: the bundled web roots plus `ca_cert_path`, or
/// none with `skip_verify`.
fn trust(cfg: &ClientConfig) -> Result<TargetTrust, crate::tls::TlsError> {
    let server = ServerConfig {
        tls_roots: TlsRoots::Bundled,
        target_ca_file: cfg.ca_cert_path.clone(),
        insecure_skip_verify: cfg.skip_verify,
        target_early_data: false,
        ..ServerConfig::default()
    };
    TargetTrust::load(&server)
}

async fn run_forwards(client: Rc<Client>) -> Result<(), TunnelError> {
    let mut listeners = Vec::new();
    for f in &client.cfg.forwards {
        let l = TcpListener::bind(f.listen).map_err(|source| TunnelError::Listen {
            addr: f.listen,
            source,
        })?;
        info!(listen = %f.listen, target = %f.target, server = %client.cfg.server.host_header, "forwarding");
        listeners.push((l, f.target.clone()));
    }
    let mut tasks = Vec::new();
    for (l, target) in listeners {
        tasks.push(monoio::spawn(accept_loop(client.clone(), l, target)));
    }
    for p in &client.cfg.proxies {
        tasks.push(monoio::spawn(reverse::publish_forever(
            client.clone(),
            p.clone(),
        )));
    }
    for t in tasks {
        t.await;
    }
    Ok(())
}

async fn accept_loop(client: Rc<Client>, listener: TcpListener, target: String) {
    loop {
        match listener.accept().await {
            Ok((local, peer)) => {
                monoio::spawn(carry(client.clone(), local, peer, target.clone()));
            }
            Err(e) => {
                warn!("accept failed: {e}; retrying in 100 ms");
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Opens a tunnel for one local connection (with backoff) and bridges it.
async fn carry(client: Rc<Client>, local: TcpStream, peer: SocketAddr, target: String) {
    tune_stream(std::os::fd::AsRawFd::as_raw_fd(&local));
    let started = std::time::Instant::now();
    let tunnel = match open_with_backoff(&client, &target).await {
        Ok(t) => t,
        Err(e) => {
            warn!(peer = %peer, target = %target, "tunnel not opened: {e}");
            return;
        }
    };
    let out = client.bridge_local(tunnel, &Endpoint::plain(local)).await;
    info!(
        peer = %peer,
        target = %target,
        duration_ms = started.elapsed().as_millis() as u64,
        // The bridge counts WebSocket→stream as "up"; here that is download.
        bytes_up = out.bytes_down,
        bytes_down = out.bytes_up,
        closed_by = out.closed_by,
        reason = %out.reason,
        "tunnel end"
    );
}

async fn open_with_backoff(client: &Client, target: &str) -> Result<dial::Tunnel, DialError> {
    let mut wait = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match dial::open(&client.cfg, client.tls.as_ref(), &client.dns, target).await {
            Ok(t) => return Ok(t),
            Err(e) if e.is_final() || attempt == ATTEMPTS => return Err(e),
            Err(e) => {
                warn!(target = %target, attempt, "tunnel attempt failed: {e}; retrying in {wait:?}");
                monoio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
        }
    }
}

/// `--stdio`: standard input and output become the local connection. Two
/// plain threads copy them to a loopback socket the runtime bridges, since
/// stdin and stdout may be anything (a pipe, a TTY, a file).
async fn run_stdio(client: Rc<Client>, target: String) -> Result<(), TunnelError> {
    let target = config_target(&target)?;
    let here: SocketAddr = "127.0.0.1:0".parse().expect("loopback");
    let listener =
        TcpListener::bind(here).map_err(|source| TunnelError::Listen { addr: here, source })?;
    let addr = listener.local_addr().map_err(TunnelError::Runtime)?;
    // Fail before touching stdin when the relay refuses.
    let tunnel = open_with_backoff(&client, &target).await?;
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || copy_stdio(addr, done_tx));
    let (local, _) = listener.accept().await.map_err(TunnelError::Runtime)?;
    let local = Endpoint::plain(local);
    let out = client.bridge_local(tunnel, &local).await;
    info!(target = %target, closed_by = out.closed_by, reason = %out.reason, "tunnel end");
    drop(local);
    // Let the stdout copier write out what the tunnel delivered (this is
    // the runtime's last act, so waiting blocks nothing else).
    let _ = done.recv_timeout(Duration::from_secs(5));
    Ok(())
}

fn config_target(t: &str) -> Result<String, TunnelError> {
    match crate::ws::target::parse_target(t) {
        Ok(url) if url.tcp => Ok(format!("tcp://{}", url.host_header)),
        _ => Err(TunnelError::Config(ClientConfigError::Invalid {
            path: "--stdio".into(),
            line: 0,
            message: format!("{t:?} is not tcp://host:port"),
        })),
    }
}

fn copy_stdio(addr: SocketAddr, done: std::sync::mpsc::Sender<()>) {
    let Ok(sock) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = sock.set_nodelay(true);
    let Ok(mut to_stdout) = sock.try_clone() else {
        return;
    };
    std::thread::spawn(move || {
        let mut stdout = std::io::stdout().lock();
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = to_stdout.read(&mut buf) {
            if n == 0
                || stdout
                    .write_all(&buf[..n])
                    .and_then(|_| stdout.flush())
                    .is_err()
            {
                break;
            }
        }
        let _ = done.send(());
    });
    let mut stdin = std::io::stdin().lock();
    let mut sock = sock;
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = stdin.read(&mut buf) {
        if n == 0 || sock.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
}
