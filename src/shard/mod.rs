//! Shards: one pinned OS thread per core, each with its own monoio runtime,
//! `SO_REUSEPORT` listener, user table copy, pools and counters.
//!
//! A connection lives and dies on the shard that accepted it. Shards hear
//! from the control plane only through their own channel ([`ShardMsg`]).
//! Must not: share mutable state between shards except the few process-wide
//! atomics in [`Shared`] (touched per connection, never per message).

mod conn;
pub mod driver;
mod listener;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::ops::Deref;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use monoio::blocking::DefaultThreadPool;
use monoio::net::TcpListener;
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
use tracing::{debug, info, warn};

use crate::config::{ForwardMode, RouteTable, ServerConfig, UserTable};
use crate::ctx::{CtxParts, ShardCtx, Shared};
use crate::fanout::{Registry, Space};
use crate::metrics::ScrapeRequest;
use crate::msg::{ShardMsg, TlsMaterial};
use crate::net::dns::DnsCache;
use crate::net::event::Event;
use crate::net::pool::{BufferPool, PipePool};
use crate::net::ring::RecvRing;
use crate::proxy::table::ShardRoutes;
use crate::tls::listener::build_server_config;
use crate::tls::TlsError;
pub use driver::Driver;
pub use listener::{listen_addr, ListenError};

/// A shard's TLS configs. The session cache survives reloads; the ticket key
/// is shared by every shard.
struct ShardTls {
    listener: Option<Arc<rustls::ServerConfig>>,
    cache: Arc<rustls::server::ServerSessionMemoryCache>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

impl ShardTls {
    fn new(
        material: &TlsMaterial,
        ticketer: Arc<dyn rustls::server::ProducesTickets>,
    ) -> Result<ShardTls, TlsError> {
        let mut tls = ShardTls {
            listener: None,
            cache: rustls::server::ServerSessionMemoryCache::new(4096),
            ticketer,
        };
        tls.apply(material)?;
        Ok(tls)
    }

    fn apply(&mut self, material: &TlsMaterial) -> Result<(), TlsError> {
        self.listener = match &material.identity {
            Some(id) => Some(build_server_config(
                id,
                self.cache.clone(),
                self.ticketer.clone(),
            )?),
            None => None,
        };
        Ok(())
    }
}

/// A shard's own state: the context its features get (`ctx`, also reached
/// through `Deref`) and what only the shard itself uses. Shard-local:
/// `Cell`/`RefCell`, no locks.
pub struct Shard {
    pub ctx: ShardCtx,
    tls: RefCell<ShardTls>,
    /// Swapped whole on reload; sessions keep the `Rc` they started with.
    pub routes: RefCell<Rc<ShardRoutes>>,
    pub stop_accepting: Event,
    /// Connections open on this shard (any phase).
    pub open: Cell<usize>,
    /// The control plane's scrape thread (`GET /metrics` asks it).
    pub scrapes: flume::Sender<ScrapeRequest>,
    pub demo: crate::demo::ShardDemo,
    /// The push hub's per-shard part, when `[hub] enabled`.
    pub hub: Option<Rc<crate::hub::ShardHub>>,
}

impl Deref for Shard {
    type Target = ShardCtx;

    fn deref(&self) -> &ShardCtx {
        &self.ctx
    }
}

impl Shard {
    /// The listener's TLS config (as of now), `None` for a plain listener.
    pub fn listener_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.borrow().listener.clone()
    }
}

/// Handles to running shards, owned by the control plane.
pub struct Shards {
    pub senders: Vec<flume::Sender<ShardMsg>>,
    pub threads: Vec<JoinHandle<()>>,
    /// Scrape requests from shards, for the control plane's scrape thread.
    pub scrapes: flume::Receiver<ScrapeRequest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("shard {0}: cannot build the {1} runtime: {2}")]
    Runtime(usize, &'static str, std::io::Error),
    #[error("shard {0} exited during start-up")]
    Died(usize),
    #[error("cannot spawn shard thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Starts `workers` shards (0 = one per CPU this process may run on) and
/// waits until every one of them is listening.
pub fn spawn_all(
    server: &ServerConfig,
    users: &UserTable,
    routes: &RouteTable,
    tls: &TlsMaterial,
    driver: Driver,
    hub: Option<Arc<crate::hub::HubShared>>,
) -> Result<(Shards, SocketAddr), ShardError> {
    let addr = listen_addr(server)?;
    listener::ensure_unowned(addr)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let count = match server.workers {
        0 => cores.len().max(1),
        n => n,
    };
    let shared = Arc::new(Shared::default());
    let ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::from)?;
    // Resolver threads for every shard's DNS look-ups (never on a shard).
    let pool = DefaultThreadPool::new(4);
    let (ready_tx, ready_rx) = mpsc::channel();
    // Bounded: a flood of scrapes waits at the door instead of queueing.
    let (scrape_tx, scrape_rx) = flume::bounded(64);
    let mut shards = Shards {
        senders: Vec::with_capacity(count),
        threads: Vec::with_capacity(count),
        scrapes: scrape_rx,
    };
    // Every channel first: each shard gets all of them for fan-out.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| flume::unbounded()).unzip();
    let peers: Arc<[flume::Sender<ShardMsg>]> = senders.clone().into();
    for (id, rx) in receivers.into_iter().enumerate() {
        let init = ShardInit {
            id,
            core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
            server: server.clone(),
            users: users.clone(),
            routes: routes.clone(),
            tls: tls.clone(),
            ticketer: ticketer.clone(),
            shared: shared.clone(),
            addr,
            driver,
            pool: pool.clone(),
            ready: ready_tx.clone(),
            rx,
            scrapes: scrape_tx.clone(),
            peers: peers.clone(),
            hub: hub.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || init.run())
            .map_err(ShardError::Spawn)?;
        shards.threads.push(thread);
    }
    shards.senders = senders;
    drop(ready_tx);
    for _ in 0..count {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ShardError::Died(count)),
        }
    }
    Ok((shards, addr))
}

struct ShardInit {
    id: usize,
    core: Option<core_affinity::CoreId>,
    server: ServerConfig,
    users: UserTable,
    routes: RouteTable,
    tls: TlsMaterial,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    shared: Arc<Shared>,
    addr: SocketAddr,
    driver: Driver,
    pool: DefaultThreadPool,
    ready: mpsc::Sender<Result<(), ShardError>>,
    rx: flume::Receiver<ShardMsg>,
    scrapes: flume::Sender<ScrapeRequest>,
    peers: Arc<[flume::Sender<ShardMsg>]>,
    hub: Option<Arc<crate::hub::HubShared>>,
}

impl ShardInit {
    fn run(self) {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                warn!(shard = self.id, "could not pin to core {}", core.id);
            }
        }
        let (id, driver) = (self.id, self.driver);
        let ready = self.ready.clone();
        let built = match driver {
            Driver::IoUring => RuntimeBuilder::<IoUringDriver>::new()
                .with_entries(4096)
                .enable_timer()
                .attach_thread_pool(Box::new(self.pool.clone()))
                .build()
                .map(|mut rt| rt.block_on(self.main())),
            Driver::Legacy => RuntimeBuilder::<LegacyDriver>::new()
                .enable_timer()
                .attach_thread_pool(Box::new(self.pool.clone()))
                .build()
                .map(|mut rt| rt.block_on(self.main())),
        };
        if let Err(e) = built {
            let _ = ready.send(Err(ShardError::Runtime(id, driver.name(), e)));
        }
    }

    /// The shard's provided-buffer ring (`forward = "ring"`), sized for its
    /// share of `max_connections`; none without io_uring.
    fn recv_ring(&self) -> RecvRing {
        let sessions = self.server.max_connections / self.peers.len().max(1);
        RecvRing::register(self.server.buffer_size, sessions).unwrap_or_else(|e| {
            if self.server.forward == ForwardMode::Ring {
                info!(
                    shard = self.id,
                    "no provided-buffer ring ({e}): forward = \"ring\" reads as copy"
                );
            }
            RecvRing::none()
        })
    }

    async fn main(self) {
        let listener = match listener::bind(self.addr, self.server.backlog) {
            Ok(l) => l,
            Err(e) => {
                let _ = self.ready.send(Err(e.into()));
                return;
            }
        };
        let built = ShardTls::new(&self.tls, self.ticketer.clone())
            .and_then(|t| Ok((t, self.tls.trust.client_config()?)));
        let (tls, target_tls) = match built {
            Ok(t) => t,
            Err(e) => {
                let _ = self.ready.send(Err(e.into()));
                return;
            }
        };
        let routes =
            match ShardRoutes::build(&self.routes, &self.tls.routes, &ShardRoutes::default()) {
                Ok(r) => r,
                Err(e) => {
                    let _ = self.ready.send(Err(e.into()));
                    return;
                }
            };
        let census = self.shared.census.clone();
        let shard = Rc::new(Shard {
            ctx: ShardCtx::new(CtxParts {
                id: self.id,
                buffers: BufferPool::new(self.server.buffer_size, 1024),
                tunnel_buffers: BufferPool::new(
                    crate::forward::bridge::BUFFER_BYTES,
                    crate::forward::bridge::BUFFERS_KEPT,
                ),
                ring: self.recv_ring(),
                pipes: PipePool::new(256),
                dns: DnsCache::new(Duration::from_secs(self.server.dns_cache_secs)),
                target_tls,
                settings: self.server,
                users: self.users,
                shared: self.shared,
                peers: self.peers.clone(),
            }),
            tls: RefCell::new(tls),
            routes: RefCell::new(Rc::new(routes)),
            stop_accepting: Event::default(),
            open: Cell::new(0),
            scrapes: self.scrapes,
            demo: crate::demo::ShardDemo::new(&self.peers, census.clone()),
            hub: self.hub.map(|shared| {
                crate::hub::ShardHub::start(
                    self.id,
                    shared,
                    Registry::new(Space::Hub, census),
                    crate::fanout::Bus::new(self.peers.clone()),
                )
            }),
        });
        let _ = self.ready.send(Ok(()));
        monoio::spawn(accept_loop(shard.clone(), listener));
        while let Ok(msg) = self.rx.recv_async().await {
            match msg {
                ShardMsg::Reload {
                    users,
                    routes,
                    server,
                    tls,
                    applied,
                } => {
                    // The control plane built the same configs once already,
                    // so this only fails on resource exhaustion.
                    if let Err(e) = shard.tls.borrow_mut().apply(&tls) {
                        warn!(shard = shard.id, "keeping the previous TLS config: {e}");
                    }
                    match tls.trust.client_config() {
                        Ok(target) => shard.set_target_tls(target),
                        Err(e) => warn!(shard = shard.id, "keeping the previous target TLS: {e}"),
                    }
                    let old = shard.routes.borrow().clone();
                    match ShardRoutes::build(&routes, &tls.routes, &old) {
                        Ok(r) => *shard.routes.borrow_mut() = Rc::new(r),
                        Err(e) => warn!(shard = shard.id, "keeping the previous routes: {e}"),
                    }
                    *shard.users.borrow_mut() = users;
                    shard.set_settings(*server);
                    debug!(shard = shard.id, "reload applied");
                    let _ = applied.send(());
                }
                ShardMsg::UpstreamHealth {
                    route,
                    upstream,
                    up,
                } => {
                    shard.routes.borrow().set_checked(&route, &upstream, up);
                }
                ShardMsg::Shutdown { grace } => {
                    drain(&shard, grace).await;
                    break;
                }
                ShardMsg::Scrape { reply } => {
                    let mut snapshot = shard.metrics.snapshot(shard.id, shard.open.get());
                    snapshot.routes = shard.routes.borrow().snapshot();
                    snapshot.ring_empty = shard.ring.empty.get();
                    snapshot.ring_lent = shard.ring.lent() as u64;
                    let _ = reply.send(snapshot);
                }
                ShardMsg::Fanout(d) => deliver(&shard, d),
            }
        }
    }
}

/// Queues a fan-out frame on this shard's connections and says how many.
fn deliver(shard: &Shard, d: crate::fanout::Delivery) {
    let reached = match d.space {
        Space::Hub => shard.hub.as_ref().map_or(0, |h| {
            h.registry.deliver_at(&d.audience, &d.frame, d.offset).took
        }),
        Space::Demo => crate::demo::deliver(&shard.ctx, &shard.demo, &d.frame),
    };
    if let Some(reply) = d.reply {
        let _ = reply.send(reached);
    }
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = shard.stop_accepting.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(conn::handle(shard.clone(), stream, peer));
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // Out of descriptors or memory: back off instead of spinning
                // on an accept that keeps failing.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    warn!(shard = shard.id, "accept failed: {e}; backing off");
                    last_warning = Some(Instant::now());
                }
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => debug!(shard = shard.id, "accept failed: {e}"),
        }
    }
}

fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Graceful shutdown of one shard: no new connections, sessions get `grace`
/// to end on their own, then the rest are closed with 1001.
async fn drain(shard: &Shard, grace: Duration) {
    shard.stop_accepting.fire();
    let until = Instant::now() + grace;
    while shard.open.get() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if shard.open.get() > 0 {
        info!(
            shard = shard.id,
            open = shard.open.get(),
            "grace period over; closing sessions with 1001"
        );
    }
    shard.close_all.fire();
    // Sessions need a moment to send their Close frames and linger.
    let until = Instant::now() + Duration::from_secs(3);
    while shard.open.get() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}
