//! Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19+) and a
//! multishot receive that takes its buffers from one (`IOSQE_BUFFER_SELECT`
//! with `IORING_RECV_MULTISHOT`, Linux 6.0+).
//!
//! A posted [`MultiRecv`] (from
//! [`TcpStream::recv_multi`](crate::net::TcpStream::recv_multi)) names no
//! memory: the kernel picks a buffer from the ring only when data arrives.
//! Many idle sockets can each have a receive in flight while the thread
//! owns a fixed set of buffers. A [`RingBuf`] goes back to the ring when
//! dropped; completions nobody will take (their receive was dropped) give
//! their buffers back in the driver, so no buffer is ever lost.
//!
//! Not part of upstream monoio 0.2.4; see PATCHES.md.

use std::{
    cell::{Cell, UnsafeCell},
    collections::VecDeque,
    future::poll_fn,
    io,
    ptr::NonNull,
    rc::{Rc, Weak},
    sync::atomic::{AtomicU16, Ordering},
    task::{Context, Poll, Waker},
};

use io_uring::{cqueue, opcode, squeue, types};

use crate::driver::{shared_fd::SharedFd, Inner, UringInner, CURRENT};

/// A thread's ring of equal-sized receive buffers, registered with its
/// io_uring under a buffer group id. Cheap to clone (one `Rc`).
#[derive(Clone)]
pub struct BufRing {
    shared: Rc<Shared>,
}

struct Shared {
    bgid: u16,
    entries: u16,
    buf_len: u32,
    /// The ring the kernel reads: `entries` slots, page aligned.
    ring: NonNull<types::BufRingEntry>,
    /// The buffers themselves: `entries * buf_len` bytes.
    bufs: NonNull<u8>,
    /// Our producer index (the kernel keeps the consumer one).
    tail: Cell<u16>,
    /// Buffers the kernel filled that are not back in the ring yet.
    lent: Cell<u16>,
    /// The kernel takes a multishot receive's byte limit (Linux 6.16+;
    /// older ones refuse the field with `EINVAL`, and this turns false).
    mshot_limit: Cell<bool>,
    /// The io_uring the ring is registered with; weak, so an orphaned
    /// receive held by the driver does not keep the driver alive.
    driver: Weak<UnsafeCell<UringInner>>,
}

impl BufRing {
    /// Maps `entries` buffers of `buf_len` bytes and registers them with the
    /// current thread's io_uring as group `bgid`. `entries` must be a power
    /// of two, at most 32768. Fails with `Unsupported` outside an io_uring
    /// runtime, and with the kernel's error where rings are not available.
    pub fn register(bgid: u16, entries: u16, buf_len: u32) -> io::Result<BufRing> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 || buf_len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a buffer ring needs a power-of-two entry count (at most 32768) and non-empty buffers",
            ));
        }
        let driver = current_uring("buffer rings")?;
        let ring_bytes = entries as usize * std::mem::size_of::<types::BufRingEntry>();
        let bufs_bytes = entries as usize * buf_len as usize;
        let ring = map(ring_bytes)?.cast::<types::BufRingEntry>();
        let bufs = match map(bufs_bytes) {
            Ok(b) => b,
            Err(e) => {
                unmap(ring.cast(), ring_bytes);
                return Err(e);
            }
        };
        // SAFETY: `ring` is a fresh page-aligned mapping of `entries` slots;
        // it stays mapped until it is unregistered (`Drop`).
        let registered =
            unsafe { (*driver.get()).register_buf_ring(ring.as_ptr() as u64, entries, bgid) };
        if let Err(e) = registered {
            unmap(ring.cast(), ring_bytes);
            unmap(bufs, bufs_bytes);
            return Err(e);
        }
        let shared = Rc::new(Shared {
            bgid,
            entries,
            buf_len,
            ring,
            bufs,
            tail: Cell::new(0),
            lent: Cell::new(0),
            mshot_limit: Cell::new(true),
            driver: Rc::downgrade(&driver),
        });
        for bid in 0..entries {
            shared.publish(bid);
        }
        Ok(BufRing { shared })
    }

    /// Bytes per buffer.
    pub fn buf_len(&self) -> usize {
        self.shared.buf_len as usize
    }

    /// Buffers in the ring.
    pub fn entries(&self) -> usize {
        self.shared.entries as usize
    }

    /// Buffers out of the ring: filled by the kernel and not yet given back
    /// (held as `RingBuf`s or waiting in a receive's queue).
    pub fn lent(&self) -> usize {
        self.shared.lent.get() as usize
    }

    /// A buffer the kernel filled (counted lent when its completion
    /// landed): `len` bytes of buffer `bid`.
    fn take(&self, bid: u16, len: u32) -> RingBuf {
        let s = &self.shared;
        RingBuf {
            ring: self.clone(),
            bid,
            len: len.min(s.buf_len),
        }
    }
}

impl Shared {
    /// The kernel filled a buffer (seen in a completion).
    fn lend(&self) {
        self.lent.set(self.lent.get() + 1);
    }

    /// Gives a filled buffer back to the ring.
    fn push(&self, bid: u16) {
        self.lent.set(self.lent.get() - 1);
        self.publish(bid);
    }

    /// Appends buffer `bid` to the ring and publishes it to the kernel.
    fn publish(&self, bid: u16) {
        let tail = self.tail.get();
        let slot = (tail & (self.entries - 1)) as usize;
        let addr = self.bufs.as_ptr() as u64 + bid as u64 * self.buf_len as u64;
        // SAFETY: `slot < entries`; the kernel only reads slots between its
        // head and our tail, and this one is past the published tail.
        unsafe {
            let entry = &mut *self.ring.as_ptr().add(slot);
            entry.set_addr(addr);
            entry.set_len(self.buf_len);
            entry.set_bid(bid);
        }
        let tail = tail.wrapping_add(1);
        self.tail.set(tail);
        // SAFETY: the tail field overlays slot 0's reserved bytes, which the
        // kernel reads concurrently: a release store makes the slot visible
        // before the new tail.
        unsafe {
            let at = types::BufRingEntry::tail(self.ring.as_ptr()) as *const AtomicU16;
            (*at).store(tail, Ordering::Release);
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let ring_bytes = self.entries as usize * std::mem::size_of::<types::BufRingEntry>();
        let bufs_bytes = self.entries as usize * self.buf_len as usize;
        match self.driver.upgrade() {
            Some(driver) => {
                // SAFETY: single-threaded driver; no receive of this group is
                // in flight (each holds a `BufRing`).
                let _ = unsafe { &*driver.get() }.unregister_buf_ring(self.bgid);
                unmap(self.ring.cast(), ring_bytes);
                unmap(self.bufs, bufs_bytes);
            }
            // The io_uring is being torn down and may still be finishing a
            // receive into these buffers: leak them rather than let the
            // address be reused under the kernel (thread exit only).
            None => {}
        }
    }
}

/// One filled buffer from a [`BufRing`]; returns to the ring when dropped.
pub struct RingBuf {
    ring: BufRing,
    bid: u16,
    len: u32,
}

impl std::ops::Deref for RingBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        let s = &self.ring.shared;
        // SAFETY: buffer `bid` is ours until dropped; the kernel wrote `len`
        // bytes of it.
        unsafe {
            std::slice::from_raw_parts(
                s.bufs.as_ptr().add(self.bid as usize * s.buf_len as usize),
                self.len as usize,
            )
        }
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        self.ring.shared.push(self.bid);
    }
}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf")
            .field("bid", &self.bid)
            .field("len", &self.len)
            .finish()
    }
}

/// IORING_RECVSEND_POLL_FIRST (5.19+, older kernels ignore it): a receive
/// is posted when the last one drained the socket, so trying it at once
/// would only find it empty; arm the poll straight away. `io-uring` 0.6 has
/// no setter for a receive's `ioprio`: it is the u16 at byte 2 of the
/// 64-byte SQE (`struct io_uring_sqe`).
fn poll_first(entry: &mut squeue::Entry) {
    const POLL_FIRST: u16 = 1;
    // SAFETY: `Entry` is `repr(C)` over `io_uring_sqe`, whose `ioprio`
    // field is a u16 at offset 2.
    unsafe {
        let ioprio = (entry as *mut squeue::Entry)
            .cast::<u8>()
            .add(2)
            .cast::<u16>();
        ioprio.write_unaligned(ioprio.read_unaligned() | POLL_FIRST);
    }
}

/// `IORING_RECV_MSHOT_LIM`: a multishot receive ends by itself after
/// `bytes`. The limit is `sqe->optlen`, the u32 at byte 44 of the 64-byte
/// SQE, which `io-uring` 0.6 has no setter for.
fn mshot_limit(entry: &mut squeue::Entry, bytes: u32) {
    // SAFETY: `Entry` is `repr(C)` over `io_uring_sqe`, whose
    // `optlen`/`file_index` union is a u32 at offset 44.
    unsafe {
        (entry as *mut squeue::Entry)
            .cast::<u8>()
            .add(44)
            .cast::<u32>()
            .write_unaligned(bytes);
    }
}

/// Completions a multishot receive queues for an owner that is not taking
/// them (busy writing the last one) before the driver cancels it: the
/// bound on the buffers one slow reader holds, beside the few the kernel
/// fills before the cancel lands. The owner posts it again when it has
/// caught up.
const HOLD: usize = 4;

/// A multishot receive (`IORING_RECV_MULTISHOT`, Linux 6.0+): posted once,
/// it completes each time data arrives, each completion with a buffer from
/// the ring, until end of stream, an error, an empty ring (`ENOBUFS`) or a
/// cancel. Against a receive posted per chunk, it saves posting it and
/// arming its poll each time: 16 % less CPU per relayed message
/// (PATCHES.md).
///
/// The kernel keeps receiving while the owner is busy, so the driver
/// cancels the receive once [`HOLD`] completions wait, and [`next`]
/// posts it again when they are taken: backpressure stays with the socket.
///
/// [`next`]: MultiRecv::next
pub struct MultiRecv {
    driver: Rc<UnsafeCell<UringInner>>,
    /// The slab index of the posted receive and its state there, if one is
    /// posted.
    posted: Option<(usize, NonNull<MultiState>)>,
    /// The state while no receive is posted (it lives in the driver's slab
    /// while one is), kept so re-posting does not allocate.
    idle: Option<Box<MultiState>>,
}

/// What a multishot receive's completions leave for its owner; lives in the
/// driver's slab while the receive is posted.
pub(crate) struct MultiState {
    fd: SharedFd,
    ring: BufRing,
    /// Completions not yet taken: (result as the kernel gave it, flags).
    queue: VecDeque<(i32, u32)>,
    waker: Option<Waker>,
    /// The kernel posted the receive's last completion (no `F_MORE`).
    finished: bool,
    /// The owner is gone: buffers go straight back, and the entry goes with
    /// the last completion.
    orphaned: bool,
    /// A cancel was asked for (the owner fell `HOLD` completions behind).
    cancelling: bool,
    /// This posting carries the byte limit (`mshot_limit`).
    limited: bool,
}

/// A multishot receive's state as the driver's slab holds it: a pointer from
/// a `Box`, so that its [`MultiRecv`] reaches it directly on every poll
/// instead of looking the slab up. Frees the state when dropped, unless it
/// was taken back with `into_box`.
pub(crate) struct MultiSlot(NonNull<MultiState>);

impl MultiSlot {
    pub(crate) fn new(state: Box<MultiState>) -> MultiSlot {
        MultiSlot(NonNull::from(Box::leak(state)))
    }

    pub(crate) fn state(&mut self) -> &mut MultiState {
        // SAFETY: the slot owns the state; the driver (completions) and the
        // `MultiRecv` (polls) reach it one at a time, on one thread.
        unsafe { self.0.as_mut() }
    }

    pub(crate) fn into_box(self) -> Box<MultiState> {
        let ptr = self.0;
        std::mem::forget(self);
        // SAFETY: made from a `Box` in `new`, and not freed (forgotten above).
        unsafe { Box::from_raw(ptr.as_ptr()) }
    }
}

impl Drop for MultiSlot {
    fn drop(&mut self) {
        // SAFETY: made from a `Box` in `new`; dropped once.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// What the driver does with a multishot receive's slab entry after a
/// completion landed in it.
pub(crate) enum Landed {
    Keep,
    /// Ask the kernel to cancel the receive.
    Cancel,
    /// The last completion of an orphaned receive: drop the entry.
    Remove,
}

impl MultiState {
    /// Records one completion (called by the driver).
    pub(crate) fn land(&mut self, result: io::Result<u32>, flags: u32) -> Landed {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.ring.shared.lend();
        }
        if self.orphaned {
            if let Some(bid) = bid {
                self.ring.shared.push(bid);
            }
            return if more { Landed::Keep } else { Landed::Remove };
        }
        let raw = match result {
            Ok(n) => n as i32,
            Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
        };
        self.queue.push_back((raw, flags));
        if !more {
            self.finished = true;
        }
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        if more && !self.cancelling && self.queue.len() >= HOLD {
            self.cancelling = true;
            return Landed::Cancel;
        }
        Landed::Keep
    }

    /// The kernel may still complete this receive.
    pub(crate) fn posted(&self) -> bool {
        !self.finished
    }

    /// Gives back the buffers of completions nobody will take.
    fn give_back(&mut self) {
        for (_, flags) in self.queue.drain(..) {
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.ring.shared.push(bid);
            }
        }
    }
}

impl MultiRecv {
    pub(crate) fn new(fd: &SharedFd, ring: &BufRing) -> io::Result<MultiRecv> {
        let driver = current_uring("multishot receives")?;
        Ok(MultiRecv {
            driver,
            posted: None,
            idle: Some(Box::new(MultiState {
                fd: fd.clone(),
                ring: ring.clone(),
                queue: VecDeque::new(),
                waker: None,
                finished: false,
                orphaned: false,
                cancelling: false,
                limited: false,
            })),
        })
    }

    /// The next chunk: `Ok(None)` is end of stream; an empty ring fails with
    /// `ENOBUFS` (the data stays in the socket; the next call posts the
    /// receive again).
    pub async fn next(&mut self) -> io::Result<Option<RingBuf>> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<RingBuf>>> {
        // SAFETY: single-threaded driver; no other borrow of it lives across
        // this call.
        let inner = unsafe { &mut *self.driver.get() };
        loop {
            let (index, mut ptr) = match self.posted {
                Some(posted) => posted,
                None => {
                    let mut state = self.idle.take().expect("a multishot receive lost its state");
                    state.finished = false;
                    state.cancelling = false;
                    let s = &state.ring.shared;
                    let mut sqe = opcode::RecvMulti::new(types::Fd(state.fd.raw_fd()), s.bgid).build();
                    poll_first(&mut sqe);
                    state.limited = s.mshot_limit.get();
                    if state.limited {
                        mshot_limit(&mut sqe, HOLD as u32 * s.buf_len);
                    }
                    match inner.post_multi(state, sqe) {
                        Ok(posted) => {
                            self.posted = Some(posted);
                            posted
                        }
                        Err((e, state)) => {
                            self.idle = Some(state);
                            return Poll::Ready(Err(e));
                        }
                    }
                }
            };
            // SAFETY: the slab entry (a `MultiSlot`) keeps the state alive
            // until `retire_multi`; the driver touches it only in `tick`,
            // never during this poll.
            let state = unsafe { ptr.as_mut() };
            let Some((res, flags)) = state.queue.pop_front() else {
                match &state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            };
            let buf = cqueue::buffer_select(flags).map(|bid| state.ring.take(bid, res.max(0) as u32));
            if res == -libc::EINVAL && state.limited {
                // A kernel before 6.16 refuses the byte limit: post it again
                // without (the cancel still bounds what it holds).
                state.ring.shared.mshot_limit.set(false);
            }
            let again = res == -libc::ECANCELED || (res == -libc::EINVAL && state.limited);
            if state.finished && state.queue.is_empty() {
                self.idle = Some(inner.retire_multi(index));
                self.posted = None;
            }
            return Poll::Ready(match res {
                n if n > 0 => match buf {
                    Some(buf) => Ok(Some(buf)),
                    None => Err(io::Error::other(
                        "a buffer-select receive completed without a buffer",
                    )),
                },
                0 => Ok(None),
                // Our own cancel (the owner fell behind), or the limit
                // refused: post it again.
                _ if again => continue,
                e => Err(io::Error::from_raw_os_error(-e)),
            });
        }
    }
}

impl Drop for MultiRecv {
    fn drop(&mut self) {
        let Some((index, mut ptr)) = self.posted else {
            return;
        };
        // SAFETY: single-threaded driver; the state is alive while posted.
        let inner = unsafe { &mut *self.driver.get() };
        let state = unsafe { ptr.as_mut() };
        state.give_back();
        state.waker = None;
        if state.finished {
            drop(inner.retire_multi(index));
        } else {
            state.orphaned = true;
            inner.orphan_multi(index);
        }
    }
}

/// The current thread's io_uring driver, or `Unsupported` naming `what`
/// needs it.
fn current_uring(what: &str) -> io::Result<Rc<UnsafeCell<UringInner>>> {
    CURRENT.with(|inner| match inner {
        Inner::Uring(this) => Ok(this.clone()),
        #[allow(unreachable_patterns)]
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{what} need the io_uring driver"),
        )),
    })
}

fn map(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh private anonymous mapping; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap returned null"))
}

fn unmap(p: NonNull<u8>, len: usize) {
    // SAFETY: `p` is a mapping of `len` bytes made by `map`.
    unsafe { libc::munmap(p.as_ptr().cast(), len) };
}
