//! io_uring backend (Linux): reads go into the ring's submission queue and are submitted in one
//! syscall per batch; the arena is registered as fixed buffers so the kernel skips the per-read
//! page pinning (`READ_FIXED`), with plain `READ` when registration is refused (RLIMIT_MEMLOCK).
//!
//! The thread sleeps in `io_uring_enter` when it waits; requesters wake it through an eventfd
//! that the ring polls (multishot), so there is no busy spin and no timeout polling.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{Backend, RawDone, RawRead, Waker};
use crate::arena::SlabArena;
use crate::error::{IoError, Result};

/// user_data of the eventfd poll; read ids count up from 0 and never reach it.
const WAKE_ID: u64 = u64::MAX;
/// The kernel's limit for one registered buffer.
const MAX_FIXED_BUF: usize = 1 << 30;

struct FixedBuffers {
    base: usize,
    len: usize,
    chunk: usize,
}

pub(crate) struct UringBackend {
    // Field order matters: the ring (which may hold the arena registered) drops before the arena.
    ring: IoUring,
    wake_fd: Arc<OwnedFd>,
    wake_buf: Box<u64>,
    fixed: Option<FixedBuffers>,
    _arena: Arc<SlabArena>,
}

impl UringBackend {
    pub(crate) fn new(queue_depth: usize, arena: &Arc<SlabArena>, register: bool) -> Result<Self> {
        let unavailable = |reason: String| IoError::BackendUnavailable { backend: "uring", reason };
        let queue_depth = queue_depth.clamp(1, 4096);
        let entries = (queue_depth as u32 + 1).next_power_of_two();
        let ring = IoUring::builder()
            .build(entries)
            .map_err(|e| unavailable(format!("io_uring_setup refused: {e}")))?;
        // SAFETY: eventfd has no memory arguments; the returned fd (if >= 0) is ours to own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(unavailable(format!("eventfd: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let wake_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut this =
            Self { ring, wake_fd, wake_buf: Box::new(0), fixed: None, _arena: Arc::clone(arena) };
        if register {
            this.fixed = this.register_arena(arena);
        }
        this.arm_wake_poll()?;
        this.submit()?;
        Ok(this)
    }

    fn register_arena(&mut self, arena: &SlabArena) -> Option<FixedBuffers> {
        let (base, len) = arena.region();
        let slot = arena.slot_bytes();
        if slot > MAX_FIXED_BUF {
            return None;
        }
        // Chunks hold whole slots, so a read into a slot never straddles two buffers.
        let chunk = (MAX_FIXED_BUF / slot) * slot;
        let iovecs: Vec<libc::iovec> = (0..len)
            .step_by(chunk)
            .map(|start| libc::iovec {
                // SAFETY: start < len, so the pointer stays inside the arena's region.
                iov_base: unsafe { base.add(start) }.cast(),
                iov_len: chunk.min(len - start),
            })
            .collect();
        // SAFETY: every iovec lies inside the arena's mapping, which outlives the registration:
        // the backend holds an Arc of the arena and its ring field drops first.
        match unsafe { self.ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => Some(FixedBuffers { base: base as usize, len, chunk }),
            Err(e) => {
                static LOGGED: AtomicBool = AtomicBool::new(false);
                if !LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "io_uring refused to register the {len}-byte slab arena ({e}; raise \
                         RLIMIT_MEMLOCK to allow it); using plain READ instead of READ_FIXED"
                    );
                }
                None
            }
        }
    }

    fn arm_wake_poll(&mut self) -> Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(self.wake_fd.as_raw_fd()), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(WAKE_ID);
        self.push_entry(entry)
    }

    fn push_entry(&mut self, entry: squeue::Entry) -> Result<()> {
        loop {
            // SAFETY: every entry is either a read built from a RawRead, whose buffer and fd
            // stay valid and exclusively the read's until its completion is reaped (the
            // contract of RawRead::new), or the eventfd poll, which has no buffer.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            // Submission queue full: hand what is queued to the kernel and try again.
            self.submit()?;
        }
    }

    fn drain(&mut self, out: &mut Vec<RawDone>) -> Result<()> {
        let mut rearm = false;
        let mut woke = false;
        for cqe in self.ring.completion() {
            if cqe.user_data() == WAKE_ID {
                woke = true;
                if !cqueue::more(cqe.flags()) {
                    rearm = true;
                }
                continue;
            }
            let res = cqe.result();
            let result = if res < 0 {
                Err(std::io::Error::from_raw_os_error(-res))
            } else {
                Ok(res as usize)
            };
            out.push(RawDone { id: cqe.user_data(), result });
        }
        if woke {
            // Reset the eventfd counter so the next wake makes the poll fire again.
            // SAFETY: wake_buf is 8 writable bytes owned by self; the fd is valid and
            // non-blocking, so this returns at once whether or not the counter was set.
            unsafe {
                libc::read(self.wake_fd.as_raw_fd(), (&mut *self.wake_buf as *mut u64).cast(), 8);
            }
        }
        if rearm {
            self.arm_wake_poll()?;
            self.submit()?;
        }
        Ok(())
    }
}

impl Backend for UringBackend {
    fn fixed_buffers(&self) -> bool {
        self.fixed.is_some()
    }

    fn push(&mut self, op: RawRead) -> Result<()> {
        let fd = types::Fd(op.fd());
        let len = u32::try_from(op.len()).map_err(|_| {
            IoError::Config(format!("one read of {} bytes is over 4 GiB", op.len()))
        })?;
        let addr = op.buf() as usize;
        let entry = match &self.fixed {
            Some(f) if addr >= f.base && addr + op.len() <= f.base + f.len => {
                let index = ((addr - f.base) / f.chunk) as u16;
                opcode::ReadFixed::new(fd, op.buf(), len, index).offset(op.offset()).build()
            }
            _ => opcode::Read::new(fd, op.buf(), len).offset(op.offset()).build(),
        };
        self.push_entry(entry.user_data(op.id()))
    }

    fn submit(&mut self) -> Result<()> {
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY: completions must be reaped first; the caller's next wait does that.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => {
                    return Err(IoError::BackendUnavailable {
                        backend: "uring",
                        reason: format!("io_uring_enter failed: {e}"),
                    })
                }
            }
        }
    }

    fn wait(&mut self, out: &mut Vec<RawDone>, block: bool) -> Result<()> {
        if block && self.ring.completion().is_empty() {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => {}
                Err(e) => {
                    return Err(IoError::BackendUnavailable {
                        backend: "uring",
                        reason: format!("io_uring_enter (wait) failed: {e}"),
                    })
                }
            }
        }
        self.drain(out)
    }

    fn waker(&self) -> Waker {
        let fd = Arc::clone(&self.wake_fd);
        Arc::new(move || {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live local to a valid eventfd (kept open by the Arc).
            unsafe {
                libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        })
    }
}
