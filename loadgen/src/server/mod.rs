//! The mock targets: the WebSocket echo server and the TCP delay proxy.
//! Both are thread-per-core like the relay: one `SO_REUSEPORT` listener and
//! one monoio runtime per (optionally pinned) thread.

pub mod delay;
pub mod echo;
mod echoer;
pub mod proxy;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::rt::{self, RtError, ThreadPlan};

/// Server start-up errors.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rt(#[from] RtError),
    #[error(transparent)]
    Tls(#[from] tls::ServerTlsError),
}

/// A running server: its address and its threads.
pub struct Running {
    pub addr: SocketAddr,
    pub threads: Vec<rt::Worker<()>>,
}

impl Running {
    /// Blocks until every server thread has returned (`--exit-after`).
    pub fn wait(self) -> Result<(), RtError> {
        for t in self.threads {
            rt::join(t)?;
        }
        Ok(())
    }
}

/// Binds one `SO_REUSEPORT` listener per thread on `addr`. Port 0 picks a
/// free port once; the other threads join it.
pub fn bind_all(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, ServerError> {
    let first = bind_one(addr)?;
    let actual = first
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(bind_one(actual)?);
    }
    Ok(all)
}

fn bind_one(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_reuse_port(true).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    s.listen(4096).map_err(err)?;
    Ok(s.into())
}

/// Runs `handle` for every accepted connection on every thread of `plan`,
/// until `exit_after` (if any) has passed.
pub fn serve<F, Fut>(
    addr: SocketAddr,
    plan: &ThreadPlan,
    name: &str,
    exit_after: Option<Duration>,
    handle: F,
) -> Result<Running, ServerError>
where
    F: Fn(monoio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let threads = plan.threads.max(1);
    let listeners = bind_all(addr, threads)?;
    let actual = listeners[0]
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let slots: Arc<Mutex<Vec<Option<std::net::TcpListener>>>> =
        Arc::new(Mutex::new(listeners.into_iter().map(Some).collect()));
    let handle = Arc::new(handle);
    let deadline = exit_after.map(|d| std::time::Instant::now() + d);
    let threads = rt::spawn_threads(plan, name, move |i| {
        let listener = slots.lock().ok().and_then(|mut s| s[i].take());
        let handle = Arc::clone(&handle);
        async move {
            let Some(listener) = listener else { return };
            let listener = match monoio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("loadgen: listener: {e}");
                    return;
                }
            };
            accept_loop(listener, deadline, handle).await;
        }
    })?;
    Ok(Running {
        addr: actual,
        threads,
    })
}

async fn accept_loop<F, Fut>(
    listener: monoio::net::TcpListener,
    deadline: Option<std::time::Instant>,
    handle: Arc<F>,
) where
    F: Fn(monoio::net::TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    // Bounded by `deadline` when one is set; otherwise runs for the life of
    // the process (a server).
    loop {
        let accepted = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return;
                }
                match monoio::time::timeout(left, listener.accept()).await {
                    Ok(r) => r,
                    Err(_) => return,
                }
            }
            None => listener.accept().await,
        };
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                monoio::spawn(handle(stream));
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                eprintln!("loadgen: accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
