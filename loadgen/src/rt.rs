//! Thread-per-core plumbing: one monoio runtime per OS thread (io_uring with
//! an epoll fallback), optional CPU pinning, a start line shared by all
//! threads of one run. (The single-task wake-up the sessions use is the
//! engine's `net::event::Notify`.)

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ns;

/// Errors of the threading layer.
#[derive(Debug, thiserror::Error)]
pub enum RtError {
    #[error("cannot build the monoio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot spawn thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("a worker thread panicked")]
    Panicked,
}

/// How many threads to run and where to pin them.
#[derive(Debug, Clone, Default)]
pub struct ThreadPlan {
    pub threads: usize,
    /// CPU ids; thread `i` is pinned to `pin[i % pin.len()]`. Empty: no pinning.
    pub pin: Vec<usize>,
}

impl ThreadPlan {
    /// `threads == 0` means one thread per unit of work, at most one per CPU.
    pub fn resolve(threads: usize, work_units: usize, pin: Vec<usize>) -> Self {
        let threads = if threads == 0 {
            work_units.clamp(1, online_cpus())
        } else {
            threads
        };
        Self { threads, pin }
    }

    pub fn cpu_for(&self, thread: usize) -> Option<usize> {
        (!self.pin.is_empty()).then(|| self.pin[thread % self.pin.len()])
    }
}

/// Number of CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Which I/O driver monoio's fusion driver will pick on this host.
pub fn driver_name() -> &'static str {
    if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    }
}

/// Pins the calling thread; false when the CPU does not exist or the kernel refused.
pub fn pin_current(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Builds a runtime for the current thread (io_uring if available, else epoll).
pub fn build_runtime() -> Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
    RtError,
> {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .with_entries(1024)
        .build()
        .map_err(RtError::Runtime)
}

/// Runs `make(i)` to completion on thread `i` of `plan`, each on its own
/// pinned runtime, and returns the outputs in thread order.
pub fn run_threads<T, F, Fut>(plan: &ThreadPlan, name: &str, make: F) -> Result<Vec<T>, RtError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
{
    let handles = spawn_threads(plan, name, make)?;
    handles.into_iter().map(join).collect()
}

/// A thread started by [`spawn_threads`].
pub type Worker<T> = std::thread::JoinHandle<Result<T, RtError>>;

/// Joins one thread of [`spawn_threads`].
pub fn join<T>(h: Worker<T>) -> Result<T, RtError> {
    h.join().map_err(|_| RtError::Panicked)?
}

/// Like [`run_threads`] but returns the join handles (for servers that run
/// beside the caller). A thread whose runtime cannot be built returns the error.
pub fn spawn_threads<T, F, Fut>(
    plan: &ThreadPlan,
    name: &str,
    make: F,
) -> Result<Vec<Worker<T>>, RtError>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + 'static,
{
    let make = Arc::new(make);
    (0..plan.threads.max(1))
        .map(|i| {
            let make = Arc::clone(&make);
            let cpu = plan.cpu_for(i);
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !pin_current(cpu) {
                            eprintln!("loadgen: warning: could not pin thread {i} to CPU {cpu}");
                        }
                    }
                    let mut rt = build_runtime()?;
                    Ok(rt.block_on(make(i)))
                })
                .map_err(RtError::Spawn)
        })
        .collect()
}

/// The start line of one run: every thread reports its connections ready,
/// the coordinator (the calling thread) fires the start, or aborts
/// everything when a connection failed.
#[derive(Debug, Default)]
pub struct StartLine {
    ready: AtomicUsize,
    failed: AtomicBool,
    go_ns: AtomicU64,
}

/// What a waiting participant learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Start at this `now_ns()` instant.
    At(u64),
    Aborted,
}

impl StartLine {
    /// `n` participants are ready.
    pub fn ready(&self, n: usize) {
        self.ready.fetch_add(n, Ordering::AcqRel);
    }

    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Waits (async, 1 ms polls) for the start signal, at most `limit`.
    pub async fn wait(&self, limit: Duration) -> Start {
        let give_up = now_ns() + crate::clock::dur_ns(limit);
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Start::Aborted;
            }
            let go = self.go_ns.load(Ordering::Acquire);
            if go != 0 {
                return Start::At(go);
            }
            if now_ns() > give_up {
                return Start::Aborted;
            }
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Coordinator side: blocks until `expected` participants are ready (then
    /// fires the start a little in the future) or one failed, at most `limit`.
    pub fn coordinate(&self, expected: usize, limit: Duration) -> bool {
        let give_up = now_ns() + crate::clock::dur_ns(limit);
        loop {
            if self.failed.load(Ordering::Acquire) {
                return false;
            }
            if self.ready.load(Ordering::Acquire) >= expected {
                self.go_ns.store(now_ns() + 2_000_000, Ordering::Release);
                return true;
            }
            if now_ns() > give_up {
                self.fail();
                return false;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
