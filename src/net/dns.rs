//! Name resolution that never blocks a shard: `getaddrinfo` runs on the
//! runtime's blocking thread pool, and each shard keeps a small TTL cache.
//!
//! Must not: resolve on the shard thread, or cache failures (a target that
//! comes back should be reachable at once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest number of cached names per shard; beyond it expired entries are
/// dropped, then the whole cache if still full.
const MAX_ENTRIES: usize = 4096;

type Entries = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;

pub struct DnsCache {
    ttl: Duration,
    entries: RefCell<Entries>,
}

impl DnsCache {
    pub fn new(ttl: Duration) -> DnsCache {
        DnsCache {
            ttl,
            entries: RefCell::new(HashMap::new()),
        }
    }

    /// Resolves `host:port`. IP literals never leave the shard.
    pub async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let key = (host.to_ascii_lowercase(), port);
        if let Some((at, addrs)) = self.entries.borrow().get(&key) {
            if at.elapsed() < self.ttl {
                return Ok(addrs.clone());
            }
        }
        let query = key.clone();
        let addrs = monoio::spawn_blocking(move || {
            (query.0.as_str(), query.1)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
        })
        .await
        .map_err(|_| io::Error::other("resolver thread failed"))??;
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses"));
        }
        self.insert(key, addrs.clone());
        Ok(addrs)
    }

    fn insert(&self, key: (String, u16), addrs: Vec<SocketAddr>) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), addrs));
    }
}
