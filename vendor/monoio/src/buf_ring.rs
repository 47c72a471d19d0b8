//! Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19+) and a
//! receive that takes its buffer from one (`IOSQE_BUFFER_SELECT`).
//!
//! A posted [`TcpStream::recv_select`](crate::net::TcpStream::recv_select)
//! names no memory: the kernel picks a buffer from the ring only when data
//! arrives. Many idle sockets can each have a receive in flight while the
//! thread owns a fixed set of buffers. A [`RingBuf`] goes back to the ring
//! when dropped; a receive dropped before its completion was seen gives its
//! buffer back through the driver (`reclaim`), so no buffer is ever lost.
//!
//! Not part of upstream monoio 0.2.4; see PATCHES.md.

use std::{
    any::Any,
    cell::{Cell, UnsafeCell},
    io,
    ptr::NonNull,
    rc::{Rc, Weak},
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{cqueue, opcode, squeue, types};

use crate::driver::{op::Op, shared_fd::SharedFd, Inner, UringInner, CURRENT};

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
    /// Buffers handed out as `RingBuf`s and not yet back.
    lent: Cell<u16>,
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
        let driver = CURRENT.with(|inner| match inner {
            Inner::Uring(this) => Ok(this.clone()),
            #[allow(unreachable_patterns)]
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "buffer rings need the io_uring driver",
            )),
        })?;
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
            driver: Rc::downgrade(&driver),
        });
        for bid in 0..entries {
            shared.push(bid);
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

    /// Buffers currently held as `RingBuf`s.
    pub fn lent(&self) -> usize {
        self.shared.lent.get() as usize
    }

    /// A buffer the kernel filled: `len` bytes of buffer `bid`.
    fn take(&self, bid: u16, len: u32) -> RingBuf {
        let s = &self.shared;
        s.lent.set(s.lent.get() + 1);
        RingBuf {
            ring: self.clone(),
            bid,
            len: len.min(s.buf_len),
        }
    }
}

impl Shared {
    /// Appends buffer `bid` to the ring and publishes it to the kernel.
    fn push(&self, bid: u16) {
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
        let s = &self.ring.shared;
        s.lent.set(s.lent.get() - 1);
        s.push(self.bid);
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

/// The in-flight receive: holds the socket and the ring open.
pub(crate) struct RecvSelect {
    #[allow(unused)]
    fd: SharedFd,
    ring: BufRing,
}

impl super::driver::op::OpAble for RecvSelect {
    fn uring_op(&mut self) -> squeue::Entry {
        let s = &self.ring.shared;
        let mut entry =
            opcode::Recv::new(types::Fd(self.fd.raw_fd()), std::ptr::null_mut(), s.buf_len)
                .buf_group(s.bgid)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT);
        // IORING_RECVSEND_POLL_FIRST (5.19+, older kernels ignore it): a
        // receive is posted when the last one drained the socket, so trying
        // it at once would only find it empty; arm the poll straight away.
        // `io-uring` 0.6 has no setter for a receive's `ioprio`: it is the
        // u16 at byte 2 of the 64-byte SQE (`struct io_uring_sqe`).
        const POLL_FIRST: u16 = 1;
        // SAFETY: `Entry` is `repr(C)` over `io_uring_sqe`, whose `ioprio`
        // field is a u16 at offset 2.
        unsafe {
            let ioprio = (&mut entry as *mut squeue::Entry)
                .cast::<u8>()
                .add(2)
                .cast::<u16>();
            ioprio.write_unaligned(ioprio.read_unaligned() | POLL_FIRST);
        }
        entry
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_interest(&self) -> Option<(crate::driver::ready::Direction, usize)> {
        None
    }

    #[cfg(any(feature = "legacy", feature = "poll-io"))]
    fn legacy_call(&mut self) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Receives into a buffer the kernel picks from `ring`. `Ok(None)` is end
/// of stream. An empty ring fails with `ENOBUFS` (the caller decides how
/// to wait; the socket's data stays queued).
pub(crate) async fn recv(fd: &SharedFd, ring: &BufRing) -> io::Result<Option<RingBuf>> {
    let op = Op::submit_with(RecvSelect {
        fd: fd.clone(),
        ring: ring.clone(),
    })?;
    let done = op.await;
    // Taken before the result is checked, so a buffer always goes back.
    let len = *done.meta.result.as_ref().unwrap_or(&0);
    let buf = cqueue::buffer_select(done.meta.flags).map(|bid| ring.take(bid, len));
    let n = done.meta.result?;
    match buf {
        Some(buf) if n > 0 => Ok(Some(buf)),
        _ if n == 0 => Ok(None),
        _ => Err(io::Error::other(
            "a buffer-select receive completed without a buffer",
        )),
    }
}

/// Gives back the buffer of a receive whose completion nobody will read
/// (its future was dropped). Called by the driver for every such
/// completion; anything but a `RecvSelect` is left alone.
pub(crate) fn reclaim(data: &dyn Any, flags: u32) {
    if let (Some(op), Some(bid)) = (
        data.downcast_ref::<RecvSelect>(),
        cqueue::buffer_select(flags),
    ) {
        op.ring.shared.push(bid);
    }
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
