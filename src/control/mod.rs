//! The control plane on the main thread: start shards, reload on request
//! (control socket or SIGHUP), shut down on SIGTERM/SIGINT.
//!
//! Owns the current validated config. Talks to shards only through their
//! channels. Must not: run on a shard, or replace a good config with a bad one.

mod housekeeping;
mod socket;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{info, warn};

pub use socket::{request_reload, ControlError};

use crate::config::{Config, ConfigError};
use crate::logging;
use crate::metrics::ControlCounters;
use crate::msg::{ShardMsg, TlsMaterial};
use crate::proxy::health::{CheckedRoute, HealthChecker};
use crate::shard::{self, driver, Shards};
use crate::tls::listener::load_identity;
use crate::tls::target::RouteTrust;
use crate::tls::target::TargetTrust;
use crate::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Log(#[from] logging::LogError),
    #[error(transparent)]
    Driver(#[from] driver::DriverError),
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot start the metrics thread: {0}")]
    Spawn(std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Hub(String),
}

/// Why a config (file plus the TLS files it names) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}: {1}")]
    Tls(String, TlsError),
    #[error("{0}")]
    Hub(String),
}

/// Loads the TLS files a config names. `generate` allows writing a
/// self-signed certificate (serve), `check` passes false.
pub fn load_tls(config: &Config, generate: bool) -> Result<TlsMaterial, TlsError> {
    let identity = if config.server.enable_tls {
        load_identity(&config.server, config.dir(), generate)?.map(Arc::new)
    } else {
        None
    };
    let trust = TargetTrust::load(&config.server)?;
    let mut routes = RouteTrust::new();
    for r in config.routes.routes.iter().filter(|r| r.overrides_trust()) {
        routes.insert(r.name.clone(), TargetTrust::for_route(&config.server, r)?);
    }
    Ok(TlsMaterial {
        identity,
        trust,
        routes,
    })
}

/// A config and its TLS material, or the first reason they are unusable.
pub fn load_all(
    path: &std::path::Path,
    generate: bool,
) -> Result<(Config, TlsMaterial), LoadError> {
    let config = Config::load(path)?;
    let tls = load_tls(&config, generate).map_err(|e| {
        let line = crate::config::line_of_key(path, e.key());
        LoadError::Tls(format!("{}:{line}", path.display()), e)
    })?;
    if let Some(jwt) = jwt_config(&config).filter(|_| config.hub.enabled) {
        crate::hub::jwt::Verifier::load(&jwt).map_err(LoadError::Hub)?;
    }
    Ok((config, tls))
}

/// The reload path shared by the control socket and SIGHUP.
pub struct ControlPlane {
    config: Mutex<Config>,
    senders: Vec<flume::Sender<ShardMsg>>,
    health: HealthChecker,
    counters: Arc<ControlCounters>,
    /// The hub, for what of `[hub]` a reload applies (the JWT keys).
    hub: Option<Arc<crate::hub::HubShared>>,
}

/// `[hub.jwt]` with its key files resolved against the config's directory.
fn jwt_config(config: &Config) -> Option<crate::config::JwtConfig> {
    let mut jwt = config.hub.jwt.clone()?;
    let dir = config.dir();
    for p in [&mut jwt.public_key_file, &mut jwt.jwks_file]
        .into_iter()
        .flatten()
    {
        *p = dir.join(&*p);
    }
    Some(jwt)
}

/// How long `reload` waits for every shard to switch to the new snapshot.
const RELOAD_CONFIRM_WAIT: Duration = Duration::from_secs(5);

impl ControlPlane {
    /// Re-reads the config file and the certificate files it names; on
    /// success every shard gets the new user table, session settings and TLS
    /// material. Returns the user count.
    pub fn reload(&self) -> Result<usize, LoadError> {
        let mut current = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let (mut next, tls) = match load_all(&current.path, true) {
            Ok(pair) => pair,
            Err(e) => {
                warn!("reload rejected, keeping the running config: {e}");
                self.counters.reload(false);
                return Err(e);
            }
        };
        if let Some(hub) = &self.hub {
            // Key files are re-read on every reload; bad ones keep the old.
            if let Err(e) = hub.reload_jwt(jwt_config(&next).as_ref()) {
                warn!("reload rejected, keeping the running config: {e}");
                self.counters.reload(false);
                return Err(LoadError::Hub(e));
            }
        }
        next.users.inherit_counters(&current.users);
        next.routes.inherit_counters(&current.routes);
        warn_restart_only_changes(&current, &next);
        let (applied, confirmations) = flume::bounded(self.senders.len());
        let mut sent = 0;
        for tx in &self.senders {
            let msg = ShardMsg::Reload {
                users: next.users.clone(),
                routes: next.routes.clone(),
                server: Box::new(next.server.clone()),
                tls: tls.clone(),
                applied: applied.clone(),
            };
            sent += usize::from(tx.send(msg).is_ok());
        }
        // A shard that drops the message unanswered ends the wait at once.
        drop(applied);
        // Control-plane thread: waiting here blocks no shard.
        for _ in 0..sent {
            if confirmations.recv_timeout(RELOAD_CONFIRM_WAIT).is_err() {
                warn!("a shard did not confirm the reload within {RELOAD_CONFIRM_WAIT:?}");
                break;
            }
        }
        match checked_routes(&next, &tls) {
            Ok(routes) => self.health.update(routes),
            Err(e) => warn!("health checks keep the previous routes: {e}"),
        }
        let n = next.users.len();
        info!(
            users = n,
            routes = next.routes.routes.len(),
            "configuration reloaded"
        );
        self.counters.reload(true);
        *current = next;
        Ok(n)
    }
}

/// What the health checker needs: each route with the trust its
/// `wss://` upstreams are checked with.
fn checked_routes(config: &Config, tls: &TlsMaterial) -> Result<Vec<CheckedRoute>, TlsError> {
    let mut out = Vec::new();
    for spec in &config.routes.routes {
        let trust = tls.routes.get(&spec.name).unwrap_or(&tls.trust);
        out.push(CheckedRoute {
            spec: spec.clone(),
            tls: trust.client_config()?,
        });
    }
    Ok(out)
}

fn warn_restart_only_changes(old: &Config, new: &Config) {
    let (a, b) = (&old.server, &new.server);
    let changed = [
        ("host", a.host != b.host),
        ("port", a.port != b.port),
        ("workers", a.workers != b.workers),
        ("driver", a.driver != b.driver),
        ("backlog", a.backlog != b.backlog),
        ("enable_tls", a.enable_tls != b.enable_tls),
        ("buffer_size", a.buffer_size != b.buffer_size),
        ("control_socket", a.control_socket != b.control_socket),
    ];
    for (key, _) in changed.iter().filter(|(_, c)| *c) {
        warn!("server.{key} changed: takes effect after a restart");
    }
    if format!("{:?}", old.logging) != format!("{:?}", new.logging) {
        warn!("[logging] changed: takes effect after a restart");
    }
    // Debug redacts the key and URL, so compare those directly.
    // `[hub.jwt]` applies on reload; the rest of `[hub]` does not.
    let (mut h, mut n) = (old.hub.clone(), new.hub.clone());
    (h.jwt, n.jwt) = (None, None);
    if format!("{h:?}") != format!("{n:?}") || h.api_key != n.api_key || h.redis_url != n.redis_url
    {
        warn!("[hub] changed: takes effect after a restart");
    }
}

/// Raises the soft open-file limit to the hard limit: every session holds
/// two sockets, and the usual soft default (1024) caps a relay at ~500.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let from = lim.rlim_cur;
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            info!(
                from,
                to = lim.rlim_max,
                "raised the open-file limit (RLIMIT_NOFILE)"
            );
        }
    }
}

/// One line saying how the hub runs (never the key or the Redis URL).
fn log_hub(config: &Config) {
    let hub = &config.hub;
    if !config.env_overrides.is_empty() {
        info!(keys = ?config.env_overrides, "environment overrides applied");
    }
    if hub.enabled {
        info!(
            ws_path = %hub.ws_path,
            push_path = %hub.push_path,
            redis = hub.redis_url.is_some(),
            max_queue_messages = hub.max_queue_messages,
            "push hub enabled"
        );
    }
}

/// Runs the relay until SIGTERM/SIGINT.
pub fn serve(config: Config) -> Result<(), ServeError> {
    let _log = logging::init(&config.logging)?;
    let tls = load_tls(&config, true)?;
    raise_nofile_limit();
    let (drv, fallback) = driver::resolve(driver::requested(config.server.driver)?)?;
    if let Some(why) = fallback {
        warn!("io_uring unavailable, using the epoll driver: {why}");
    }
    let control = socket::ControlSocket::bind(&config.control_socket())?;
    let hub = if config.hub.enabled {
        let mut cfg = config.hub.clone();
        cfg.jwt = jwt_config(&config);
        Some(crate::hub::Hub::new(&cfg).map_err(ServeError::Hub)?)
    } else {
        None
    };
    let hub_shared = hub.as_ref().map(|h| h.shared.clone());
    let hub_counters = hub.as_ref().map(|h| h.shared.counters.clone());
    let hub_shared_for_reload = hub_shared.clone();
    let (shards, addr) = shard::spawn_all(
        &config.server,
        &config.users,
        &config.routes,
        &tls,
        drv,
        hub_shared,
    )?;
    let engine = hub.map(|h| h.start(crate::fanout::Bus::new(shards.senders.clone().into())));
    log_hub(&config);
    info!(
        %addr,
        shards = shards.senders.len(),
        driver = drv.name(),
        forward = ?config.server.forward,
        tls = config.server.enable_tls,
        users = config.users.len(),
        routes = config.routes.routes.len(),
        "ws-relay-core listening"
    );
    let health = HealthChecker::new(checked_routes(&config, &tls)?, shards.senders.clone());
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let Shards {
        senders,
        threads,
        scrapes,
    } = shards;
    let counters = Arc::new(ControlCounters::default());
    housekeeping::spawn(scrapes, senders.clone(), counters.clone(), hub_counters)
        .map_err(ServeError::Spawn)?;
    let plane = Arc::new(ControlPlane {
        config: Mutex::new(config),
        senders,
        health,
        counters,
        hub: hub_shared_for_reload,
    });
    control.serve_in_background(plane.clone());
    let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(ServeError::Signals)?;
    for sig in signals.forever() {
        if sig == SIGHUP {
            let _ = plane.reload();
            continue;
        }
        info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections, draining sessions"
        );
        break;
    }
    for tx in &plane.senders {
        let _ = tx.send(ShardMsg::Shutdown { grace });
    }
    for t in threads {
        let _ = t.join();
    }
    if let Some(engine) = engine {
        engine.shutdown();
    }
    info!("shutdown complete");
    Ok(())
}
