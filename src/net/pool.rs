//! Per-shard pools of forwarding buffers and splice pipes.
//!
//! A session borrows from its shard's pool only while bytes are moving and
//! returns the item when its socket drains, so idle sessions hold neither
//! memory nor pipe descriptors. Shard-local: `RefCell`, no locks, no atomics.

use std::cell::RefCell;
use std::os::fd::RawFd;

/// Fixed-size byte buffers.
pub struct BufferPool {
    free: RefCell<Vec<Box<[u8]>>>,
    size: usize,
    max_free: usize,
}

impl BufferPool {
    pub fn new(size: usize, max_free: usize) -> BufferPool {
        BufferPool {
            free: RefCell::new(Vec::new()),
            size,
            max_free,
        }
    }

    pub fn borrow(&self) -> PooledBuf<'_> {
        let buf = self
            .free
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice());
        PooledBuf {
            pool: self,
            buf: Some(buf),
        }
    }

    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

/// A borrowed buffer; goes back to its pool on drop.
pub struct PooledBuf<'a> {
    pool: &'a BufferPool,
    buf: Option<Box<[u8]>>,
}

impl std::ops::Deref for PooledBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl std::ops::DerefMut for PooledBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut free = self.pool.free.borrow_mut();
            if free.len() < self.pool.max_free {
                free.push(buf);
            }
        }
    }
}

/// A pipe pair (read end, write end), non-blocking.
#[derive(Debug)]
pub struct Pipe {
    pub read: RawFd,
    pub write: RawFd,
}

impl Pipe {
    fn open() -> std::io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Pipe {
            read: fds[0],
            write: fds[1],
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: the pipe owns both descriptors.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

/// Empty pipes ready for `splice`.
pub struct PipePool {
    free: RefCell<Vec<Pipe>>,
    max_free: usize,
}

impl PipePool {
    pub fn new(max_free: usize) -> PipePool {
        PipePool {
            free: RefCell::new(Vec::new()),
            max_free,
        }
    }

    pub fn borrow(&self) -> std::io::Result<PooledPipe<'_>> {
        let pipe = match self.free.borrow_mut().pop() {
            Some(p) => p,
            None => Pipe::open()?,
        };
        Ok(PooledPipe {
            pool: self,
            pipe: Some(pipe),
            pending: 0,
        })
    }

    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

/// A borrowed pipe. `pending` counts bytes inside it; a pipe that still holds
/// bytes when dropped is closed rather than returned, so no session ever
/// receives another's leftovers.
pub struct PooledPipe<'a> {
    pool: &'a PipePool,
    pipe: Option<Pipe>,
    pub pending: usize,
}

impl PooledPipe<'_> {
    pub fn fds(&self) -> (RawFd, RawFd) {
        let p = self.pipe.as_ref().expect("pipe present until drop");
        (p.read, p.write)
    }
}

impl Drop for PooledPipe<'_> {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            let mut free = self.pool.free.borrow_mut();
            if self.pending == 0 && free.len() < self.pool.max_free {
                free.push(pipe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_and_capped() {
        let pool = BufferPool::new(1024, 1);
        {
            let a = pool.borrow();
            let b = pool.borrow();
            assert_eq!(a.len(), 1024);
            assert_eq!(b.len(), 1024);
        }
        assert_eq!(pool.idle(), 1);
        let ptr = pool.borrow().as_ptr();
        assert_eq!(pool.borrow().as_ptr(), ptr);
    }

    #[test]
    fn dirty_pipes_are_not_returned() {
        let pool = PipePool::new(4);
        {
            let mut p = pool.borrow().unwrap();
            p.pending = 3;
        }
        assert_eq!(pool.idle(), 0);
        drop(pool.borrow().unwrap());
        assert_eq!(pool.idle(), 1);
    }
}
