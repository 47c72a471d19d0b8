//! What a shard hears: the control plane's reloads, scrapes and shutdown,
//! the health checker's verdicts, and other shards' fan-out deliveries, all
//! through the shard's one channel. Plain data: every sender (control,
//! metrics, proxy health, fan-out) and the shard agree on this type, and
//! none of them imports the others.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{RouteTable, ServerConfig, UserTable};
use crate::fanout::delivery::Delivery;
use crate::metrics::snapshot::ShardSnapshot;
use crate::tls::listener::Identity;
use crate::tls::target::{RouteTrust, TargetTrust};

/// What the control plane tells a shard.
pub enum ShardMsg {
    /// A validated reload: the new user table, session settings, listener
    /// certificate (when TLS is on) and target trust.
    Reload {
        users: UserTable,
        routes: RouteTable,
        server: Box<ServerConfig>,
        tls: TlsMaterial,
        /// Told once the shard uses the new snapshot, so that a `reload`
        /// that answered "ok" means new connections see the new config.
        applied: flume::Sender<()>,
    },
    /// The active health check's verdict on one upstream changed.
    UpstreamHealth {
        route: Arc<str>,
        upstream: Arc<str>,
        up: bool,
    },
    /// Stop accepting, drain for `grace`, then close what is left with 1001.
    Shutdown { grace: Duration },
    /// A `/metrics` scrape: copy this shard's counters into `reply`.
    Scrape { reply: flume::Sender<ShardSnapshot> },
    /// A frame for this shard's fan-out connections (see [`crate::fanout`]).
    Fanout(Delivery),
}

/// TLS inputs the control plane prepares (file I/O) and shards turn into
/// their own configs.
#[derive(Clone)]
pub struct TlsMaterial {
    /// `None` when the listener is plain.
    pub identity: Option<Arc<Identity>>,
    pub trust: TargetTrust,
    /// Trust of routes that set their own `ca_file`/`insecure_skip_verify`.
    pub routes: RouteTrust,
}
