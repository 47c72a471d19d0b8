//! Each shard's own `SO_REUSEPORT` listener, so the kernel spreads new
//! connections across shards without any user-space hand-off, and the check
//! before it that no other process already listens on the address: with
//! `SO_REUSEPORT` a second relay would bind without error and silently take
//! half the connections (nginx refuses with "address in use"; so do we).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

use crate::config::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot resolve listen address {0}:{1}")]
    Resolve(String, u16),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(
        "cannot listen on {0}: address in use by {1}; a second listener would \
         silently share its connections (SO_REUSEPORT). Stop it or change server.port"
    )]
    InUse(SocketAddr, String),
    #[error(
        "cannot listen on {0}: a connection holds this local port, though nothing \
         listens on it (the kernel may have handed it out as an outgoing \
         connection's source port). Wait for that connection to close, or pick a \
         server.port below net.ipv4.ip_local_port_range"
    )]
    HeldByConnection(SocketAddr),
}

/// The address to bind. Resolved once in the control plane, before shards
/// start, so no shard ever resolves.
pub fn listen_addr(cfg: &ServerConfig) -> Result<SocketAddr, ListenError> {
    (cfg.host.as_str(), cfg.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| ListenError::Resolve(cfg.host.clone(), cfg.port))
}

/// How long a listener, or a connection, that no process holds may linger
/// before it counts as an owner. io_uring releases a dead process's ring
/// (and the sockets its requests hold) in a kernel worker after the process
/// is reaped, so a relay restarted right after a crash can meet its
/// predecessor's listener for a few milliseconds (measured here: 22–24 ms
/// after SIGKILL and wait, in 1–2 of 12 immediate restarts with a session
/// open), or, once the listener is gone, one of its sessions' sockets.
const ORPHAN_WAIT: Duration = Duration::from_secs(3);

/// Fails when any socket already listens on `addr` (or overlaps it, such as
/// a wildcard address on the same port). Runs once, in the control plane
/// before the shards bind, so its short sleeps block no shard. A listener
/// held by no visible process is given [`ORPHAN_WAIT`] to go away first.
pub fn ensure_unowned(addr: SocketAddr) -> Result<(), ListenError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let start = Instant::now();
    let mut waited = false;
    loop {
        match probe(addr)? {
            None => {
                if waited {
                    tracing::info!(
                        addr = %addr,
                        waited_ms = start.elapsed().as_millis() as u64,
                        "waited for a dead process's sockets to be released"
                    );
                }
                return Ok(());
            }
            Some(owner::Holder::Unnamed | owner::Holder::Orphaned)
                if start.elapsed() < ORPHAN_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
                waited = true;
            }
            Some(owner::Holder::Unnamed) => {
                return Err(ListenError::InUse(addr, "another process".into()))
            }
            Some(owner::Holder::Process(who)) => return Err(ListenError::InUse(addr, who)),
            Some(owner::Holder::Connection | owner::Holder::Orphaned) => {
                return Err(ListenError::HeldByConnection(addr))
            }
        }
    }
}

/// Binds (never listens) a probe without `SO_REUSEPORT`, which conflicts
/// with every listener there; no connection can land on it. `None` when
/// the address is free.
fn probe(addr: SocketAddr) -> Result<Option<owner::Holder>, ListenError> {
    let probe = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .map_err(|e| ListenError::Bind(addr, e))?;
    // TIME_WAIT leftovers of our own previous run must not count as owners.
    probe
        .set_reuse_address(true)
        .map_err(|e| ListenError::Bind(addr, e))?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Ok(Some(owner::describe(addr.port())))
        }
        Err(e) => Err(ListenError::Bind(addr, e)),
    }
}

pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ListenError> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(backlog.min(i32::MAX as u32) as i32)
        .tcp_fast_open(true);
    TcpListener::bind_with_config(addr, &opts).map_err(|e| ListenError::Bind(addr, e))
}

/// Who holds a listening TCP port, from `/proc` (best effort: another
/// user's process shows without its name).
mod owner {
    use std::fs;

    /// What holds a port our probe could not bind.
    pub enum Holder {
        /// A listener and its process: "process 1234 (nginx)".
        Process(String),
        /// A listener no visible process holds: another user's (without
        /// root), or a dead process's whose io_uring ring is still being
        /// torn down.
        Unnamed,
        /// Nothing listens: a live process's connection has its local
        /// end on the port (an outgoing connection's source port).
        Connection,
        /// Nothing listens, and no process holds the connections on the
        /// port: a dead process's sessions, still being torn down.
        Orphaned,
    }

    pub fn describe(port: u16) -> Holder {
        let inodes = inodes_on(port, |state| state == LISTEN);
        if inodes.is_empty() {
            // TIME_WAIT sockets have inode 0 and never block our probe.
            let conns = inodes_on(port, |state| state != LISTEN);
            return match conns.iter().any(|i| *i != 0 && pid_holding(*i).is_some()) {
                true => Holder::Connection,
                false => Holder::Orphaned,
            };
        }
        match inodes.iter().find_map(|i| pid_holding(*i)) {
            Some(pid) => {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                Holder::Process(format!("process {pid} ({})", comm.trim()))
            }
            None => Holder::Unnamed,
        }
    }

    /// `/proc/net/tcp`'s state of a listening socket.
    const LISTEN: &str = "0A";

    /// Inodes of the sockets whose local end is on `port` and whose state
    /// passes `state`, IPv4 and IPv6.
    fn inodes_on(port: u16, state: impl Fn(&str) -> bool) -> Vec<u64> {
        let mut out = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = fs::read_to_string(table).unwrap_or_default();
            let rows = text.lines().skip(1).filter_map(row);
            out.extend(rows.filter(|r| r.0 == port && state(r.1)).map(|r| r.2));
        }
        out
    }

    /// One `/proc/net/tcp` row, `sl local rem st … uid timeout inode`:
    /// local port, state, inode.
    fn row(line: &str) -> Option<(u16, &str, u64)> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        Some((local_port, *f.get(3)?, f.get(9)?.parse().ok()?))
    }

    fn pid_holding(inode: u64) -> Option<u32> {
        let want = format!("socket:[{inode}]");
        fs::read_dir("/proc").ok()?.flatten().find_map(|p| {
            let pid: u32 = p.file_name().to_str()?.parse().ok()?;
            let fds = fs::read_dir(p.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
                .then_some(pid)
        })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn reads_a_row() {
            let row = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
            assert_eq!(super::row(row), Some((8080, super::LISTEN, 4242)));
            let established = row.replace(" 0A ", " 01 ");
            assert_eq!(super::row(&established), Some((8080, "01", 4242)));
            assert_eq!(super::row("  sl  local_address rem_address   st"), None);
        }
    }
}
