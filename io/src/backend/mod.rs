//! Read backends: the thing the I/O thread hands raw reads to. A backend does no bookkeeping of
//! requests (tags, slots, short reads): the I/O thread does that once for all of them.

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::arena::SlabArena;
use crate::engine::Priority;
use crate::error::{IoError, Result};

pub(crate) mod chaos;
pub(crate) mod faults;
pub(crate) mod pool;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// Which read path to use (`--io`, `FLOE_IO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// io_uring with O_DIRECT files and registered buffers (Linux).
    Uring,
    /// A small pool of threads doing direct `pread` (O_DIRECT on Linux, F_NOCACHE on macOS).
    Pread,
    /// Ordinary buffered `pread` through the page cache ("trust the OS").
    Buffered,
}

impl BackendKind {
    /// Every backend, in the order `--io all` measures them.
    pub const ALL: [BackendKind; 3] =
        [BackendKind::Uring, BackendKind::Pread, BackendKind::Buffered];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Pread => "pread",
            BackendKind::Buffered => "buffered",
        }
    }

    /// Whether files are opened for direct reads with this backend.
    pub fn wants_direct(self) -> bool {
        !matches!(self, BackendKind::Buffered)
    }

    /// The backend forced by the `FLOE_IO` environment variable, if set.
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var("FLOE_IO") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some),
            _ => Ok(None),
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = IoError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "uring" | "io_uring" | "io-uring" => Ok(BackendKind::Uring),
            "pread" | "direct" => Ok(BackendKind::Pread),
            "buffered" | "os" => Ok(BackendKind::Buffered),
            _ => Err(IoError::UnknownBackend(s.to_string())),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One read as a backend sees it: `len` bytes at `offset` of `fd` into `buf`.
///
/// The type carries the proof that handing it to the kernel is sound: the only constructor is
/// the `unsafe` [`RawRead::new`], whose caller (the I/O thread) promises that `buf` is valid for
/// `len` writable bytes that nobody else touches, and that `fd` stays open, until the matching
/// [`RawDone`] has been returned. Backends may therefore pass a `RawRead` to `pread` or io_uring
/// from safe code. The fields are private so no safe code can forge one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRead {
    id: u64,
    fd: RawFd,
    offset: u64,
    len: usize,
    buf: *mut u8,
    priority: Priority,
}

impl RawRead {
    /// Describes one read.
    ///
    /// # Safety
    /// `buf` must be valid for writes of `len` bytes, and those bytes must be used by nothing
    /// else, and `fd` must stay an open descriptor, from this call until the [`RawDone`] of `id`
    /// has been handed back by the backend (or the backend has been dropped with nothing in
    /// flight). The I/O thread meets this by holding the request (its slot token and its
    /// `Arc<DataFile>`) until that completion: see `IoThread::issue`.
    pub(crate) unsafe fn new(
        id: u64,
        fd: RawFd,
        offset: u64,
        len: usize,
        buf: *mut u8,
        priority: Priority,
    ) -> Self {
        Self { id, fd, offset, len, buf, priority }
    }

    /// The id its completion carries.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
    /// The descriptor read from.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }
    /// File offset of the first byte.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }
    /// Bytes to read.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// Where the bytes go (valid for `len` bytes: see [`RawRead::new`]).
    pub(crate) fn buf(&self) -> *mut u8 {
        self.buf
    }
    /// Whether the request this read belongs to is a demand read or a prefetch.
    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }
}

// SAFETY: a RawRead is a description of a read whose buffer is exclusively owned by the
// in-flight operation (RawRead::new's contract); sending it to a worker thread sends that
// exclusive use along.
unsafe impl Send for RawRead {}

/// The outcome of one [`RawRead`]: bytes read (possibly short) or the OS error.
#[derive(Debug)]
pub(crate) struct RawDone {
    pub id: u64,
    pub result: std::io::Result<usize>,
}

/// Wakes an I/O thread that is blocked in [`Backend::wait`], so it takes in new requests.
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// The kernel-facing part of the I/O thread.
pub(crate) trait Backend: Send {
    /// Whether reads go into buffers registered with the kernel (io_uring `READ_FIXED`).
    fn fixed_buffers(&self) -> bool {
        false
    }
    /// Queues one read; it starts no later than the next `submit`.
    fn push(&mut self, op: RawRead) -> Result<()>;
    /// Starts everything pushed so far (one syscall for io_uring).
    fn submit(&mut self) -> Result<()>;
    /// Collects finished reads into `out`. With `block`, sleeps until at least one read finishes
    /// or the waker is called; never spins.
    fn wait(&mut self, out: &mut Vec<RawDone>, block: bool) -> Result<()>;
    /// A handle that interrupts a blocking `wait`.
    fn waker(&self) -> Waker;
}

/// Builds the backend for `kind`. io_uring refused by the kernel falls back to `pread`, logged
/// once with the reason; the returned kind is the one actually in use.
pub(crate) fn build(
    kind: BackendKind,
    queue_depth: usize,
    arena: &Arc<SlabArena>,
    register_buffers: bool,
) -> Result<(BackendKind, Box<dyn Backend>)> {
    match kind {
        #[cfg(target_os = "linux")]
        BackendKind::Uring => {
            match uring::UringBackend::new(queue_depth, arena, register_buffers) {
                Ok(b) => Ok((BackendKind::Uring, Box::new(b))),
                Err(e) => {
                    log_uring_refused(&e);
                    Ok((BackendKind::Pread, Box::new(pool::PoolBackend::new(queue_depth)?)))
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        BackendKind::Uring => {
            let _ = (arena, register_buffers);
            log_uring_refused(&IoError::BackendUnavailable {
                backend: "uring",
                reason: "io_uring exists only on Linux".into(),
            });
            Ok((BackendKind::Pread, Box::new(pool::PoolBackend::new(queue_depth)?)))
        }
        BackendKind::Pread | BackendKind::Buffered => {
            let _ = (arena, register_buffers);
            Ok((kind, Box::new(pool::PoolBackend::new(queue_depth)?)))
        }
    }
}

fn log_uring_refused(e: &IoError) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!("io_uring unavailable ({e}); falling back to the pread thread pool");
    }
}
