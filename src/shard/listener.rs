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

/// How long a listener that no process holds may linger before it counts
/// as an owner. io_uring releases a dead process's ring (and the sockets its
/// requests hold) in a kernel worker after the process is reaped, so a relay
/// restarted right after a crash can meet its predecessor's listener for a
/// few milliseconds (measured here: 22–24 ms after SIGKILL and wait, in 1–2
/// of 12 immediate restarts with a session open).
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
                        "waited for a dead process's listener to be released"
                    );
                }
                return Ok(());
            }
            Some(owner::Holder::Unnamed) if start.elapsed() < ORPHAN_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
                waited = true;
            }
            Some(owner::Holder::Unnamed) => {
                return Err(ListenError::InUse(addr, "another process".into()))
            }
            Some(owner::Holder::Process(who)) => return Err(ListenError::InUse(addr, who)),
            Some(owner::Holder::Connection) => return Err(ListenError::HeldByConnection(addr)),
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
        /// Nothing listens: a connection's local end holds the port.
        Connection,
    }

    pub fn describe(port: u16) -> Holder {
        let inodes = listening_inodes(port);
        if inodes.is_empty() {
            return Holder::Connection;
        }
        match inodes.iter().find_map(|i| pid_holding(*i)) {
            Some(pid) => {
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                Holder::Process(format!("process {pid} ({})", comm.trim()))
            }
            None => Holder::Unnamed,
        }
    }

    /// Socket inodes in LISTEN state on `port`, IPv4 and IPv6.
    fn listening_inodes(port: u16) -> Vec<u64> {
        let mut out = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = fs::read_to_string(table).unwrap_or_default();
            out.extend(text.lines().skip(1).filter_map(|l| listener_inode(l, port)));
        }
        out
    }

    /// One `/proc/net/tcp` row: `sl local rem st … uid timeout inode`.
    fn listener_inode(line: &str, port: u16) -> Option<u64> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        let listening = *f.get(3)? == "0A";
        (listening && u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| f.get(9)?.parse().ok())
            .flatten()
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
        fn reads_a_listen_row() {
            let row = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
            assert_eq!(super::listener_inode(row, 8080), Some(4242));
            assert_eq!(super::listener_inode(row, 8081), None);
            let established = row.replace(" 0A ", " 01 ");
            assert_eq!(super::listener_inode(&established, 8080), None);
        }
    }
}
