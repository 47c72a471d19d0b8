//! Who may reach what: the private-address rule and the per-IP auth-failure
//! throttle.
//!
//! The throttle is process-wide (a client's connections land on any shard),
//! behind a mutex touched once per connection attempt, never per message.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// True for addresses a relay on a public host must not be tricked into
/// reaching: loopback, private, link-local, CGNAT, unspecified, multicast,
/// broadcast, documentation and unique-local ranges (IPv4-mapped too).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_private_v4(v4),
            None => is_private_v6(v6),
        },
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || first == 0x2001 && ip.segments()[1] == 0x0db8
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_TRACKED: usize = 100_000;

/// Counts auth failures per source IP in fixed one-minute windows.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthThrottle {
    /// True when `ip` reached `limit` failures in the current window
    /// (`limit` 0 disables the throttle).
    pub fn is_blocked(&self, ip: IpAddr, limit: u32) -> bool {
        if limit == 0 {
            return false;
        }
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < WINDOW && *n >= limit)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (start, _)| start.elapsed() < WINDOW);
        }
        let entry = map.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_ranges() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "224.0.0.1",
        ] {
            assert!(is_private(ip(s)), "{s} should be private");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            assert!(!is_private(ip(s)), "{s} should be public");
        }
    }

    #[test]
    fn throttle_blocks_after_limit() {
        let t = AuthThrottle::default();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(!t.is_blocked(a, 3));
            t.record_failure(a);
        }
        assert!(t.is_blocked(a, 3));
        assert!(!t.is_blocked(ip("192.0.2.2"), 3));
        assert!(!t.is_blocked(a, 0));
    }
}
