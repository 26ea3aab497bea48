//! `IoEngine`: the dedicated I/O thread and its request / completion channels.
//!
//! Requests arrive on two crossbeam channels, demand and prefetch; the thread takes every
//! demand read before any prefetch, drops prefetches cancelled while queued, keeps the backend
//! at its queue depth, and sends each completion (tag, slot, result) back on one channel in the
//! order reads finish. A slot submitted with a read belongs to the I/O thread (and the kernel)
//! until its completion is sent; if nobody is listening any more the thread frees it itself,
//! after the kernel is done with it.

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender, TryRecvError};

use crate::arena::{SlabArena, Slot};
use crate::backend::{self, Backend, BackendKind, Waker};
use crate::error::{IoError, Result};
use crate::file::{DataFile, FileMode};
use crate::thread::IoThread;

/// How long [`IoEngine::next_completion`] watches for a completion before it sleeps.
pub const COMPLETION_SPIN: Duration = Duration::from_micros(100);

/// How the I/O thread is set up.
#[derive(Debug, Clone)]
pub struct IoConfig {
    /// The backend; `None` picks `FLOE_IO` if set, else `uring` on Linux and `pread` elsewhere.
    pub backend: Option<BackendKind>,
    /// Reads kept in flight at once.
    pub queue_depth: usize,
    /// Register the arena with io_uring (`READ_FIXED`); refused registration falls back to READ.
    pub register_buffers: bool,
}

impl Default for IoConfig {
    fn default() -> Self {
        Self { backend: None, queue_depth: 16, register_buffers: true }
    }
}

/// Demand reads (a computation waits for them) always go before prefetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Needed now.
    Demand,
    /// Predicted; may be cancelled while queued.
    Prefetch,
}

/// Cancels a queued read. Setting it after submission has no effect: the read completes.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A fresh, uncancelled token.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks for the read to be dropped if it has not been submitted yet.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A further byte range of a request, read into the same slot: GGUF experts are three slices
/// (gate, up, down) of three tensors, read as one request that completes when all have landed.
#[derive(Debug, Clone)]
pub struct ReadSegment {
    /// The file, if not the request's (a model split across files).
    pub file: Option<Arc<DataFile>>,
    /// First byte wanted. Need not be aligned.
    pub offset: u64,
    /// Bytes wanted.
    pub len: usize,
    /// Where in the slot this segment's (aligned) read starts: a multiple of the arena's
    /// alignment. Its bytes land at `dst + offset % a`, `a` = [`DataFile::read_align`] of its
    /// file.
    pub dst: usize,
}

/// One read: `len` bytes at `offset` of `file` into `slot` (and any further `segments`).
#[derive(Debug)]
pub struct ReadRequest {
    /// Returned with the completion; the I/O layer gives it no meaning.
    pub tag: u64,
    /// The file (kept open by this Arc until the read completes).
    pub file: Arc<DataFile>,
    /// First byte wanted. Need not be aligned.
    pub offset: u64,
    /// Bytes wanted. Need not be aligned; the covering aligned range must fit in a slot.
    pub len: usize,
    /// Where the bytes go; handed back in the completion.
    pub slot: Slot,
    /// Demand or prefetch.
    pub priority: Priority,
    /// Lets the requester drop the read while it is still queued.
    pub cancel: Option<CancelToken>,
    /// Further ranges into the same slot (usually none). They must not overlap the first
    /// range's read (which starts at slot offset 0) or each other.
    pub segments: Vec<ReadSegment>,
}

/// A read [`IoEngine::submit`] did not take: why, and the request itself, slot token and all.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct SubmitError {
    /// Why it was refused ([`IoError::ForeignSlot`], [`IoError::Disconnected`]).
    pub error: IoError,
    /// The request, handed back.
    pub request: Box<ReadRequest>,
}

impl From<SubmitError> for IoError {
    /// Keeps the reason and drops the request: its slot token is gone, so that slot stays out
    /// of its arena for good (a leak, never a double use). Callers that keep tables of slots
    /// take `request.slot` back instead.
    fn from(e: SubmitError) -> Self {
        e.error
    }
}

/// A finished read.
#[derive(Debug)]
pub struct ReadDone {
    /// The request's tag.
    pub tag: u64,
    /// The slot, back with its new bytes (or untouched bytes on error or cancellation).
    pub slot: Slot,
    /// Where in the slot the requested bytes are (an unaligned request was read as its covering
    /// aligned range), or why there are none.
    pub result: Result<Range<usize>>,
    /// Where each further segment's bytes are (empty on error).
    pub segments: Vec<Range<usize>>,
}

impl ReadDone {
    /// The requested bytes.
    pub fn bytes<'a>(&'a self, arena: &'a SlabArena) -> Result<&'a [u8], &'a IoError> {
        match &self.result {
            Ok(range) => Ok(&arena.bytes(&self.slot)[range.clone()]),
            Err(e) => Err(e),
        }
    }
}

/// Counters of the I/O thread since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Reads handed to the backend (each request once, however many resubmissions it took).
    pub submitted: u64,
    /// Reads completed successfully.
    pub reads: u64,
    /// Bytes asked for by those reads.
    pub bytes_requested: u64,
    /// Bytes actually transferred (with the alignment padding of unaligned requests).
    pub bytes_transferred: u64,
    /// Queued reads dropped by their cancel token.
    pub cancelled: u64,
    /// Reads that ended in an error.
    pub errors: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) reads: AtomicU64,
    pub(crate) bytes_requested: AtomicU64,
    pub(crate) bytes_transferred: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// The I/O thread and the channels to it. Dropping it stops the thread after every read in
/// flight has completed.
pub struct IoEngine {
    demand_tx: Option<Sender<ReadRequest>>,
    prefetch_tx: Option<Sender<ReadRequest>>,
    completions: Receiver<ReadDone>,
    arena: Arc<SlabArena>,
    kind: BackendKind,
    queue_depth: usize,
    fixed_buffers: bool,
    waker: Waker,
    parked: Arc<AtomicBool>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
    /// Set by [`IoEngine::refuse_requests`]: `submit` answers as if the thread were gone.
    refusing: AtomicBool,
}

impl std::fmt::Debug for IoEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoEngine")
            .field("backend", &self.kind)
            .field("queue_depth", &self.queue_depth)
            .field("arena", &self.arena)
            .finish()
    }
}

impl IoEngine {
    /// Starts the I/O thread over `arena` with the configured backend (or its fallback).
    pub fn start(arena: Arc<SlabArena>, config: IoConfig) -> Result<Self> {
        let (kind, queue_depth, backend) = build_backend(&arena, &config)?;
        Self::start_with(arena, kind, queue_depth, backend)
    }

    /// Starts the I/O thread over the fault-injecting test backend (late, reordered, short and
    /// interrupted reads; optionally held at a [`Gate`](crate::testing::Gate)). Files are
    /// opened direct. For tests of everything built on the I/O thread.
    #[doc(hidden)]
    pub fn start_chaos(
        arena: Arc<SlabArena>,
        queue_depth: usize,
        config: crate::testing::ChaosConfig,
        gate: Option<crate::testing::Gate>,
    ) -> Result<Self> {
        let backend = Box::new(backend::chaos::build(config, gate)?);
        Self::start_with(arena, BackendKind::Pread, queue_depth.max(1), backend)
    }

    /// Starts the I/O thread over the configured backend (io_uring where the kernel allows it)
    /// wrapped so that the reads `plan` chooses fail with an OS error. For tests of what is
    /// built on the I/O thread: failures land on the real read path, not a stand-in.
    #[doc(hidden)]
    pub fn start_faulty(
        arena: Arc<SlabArena>,
        config: IoConfig,
        plan: crate::testing::FaultPlan,
    ) -> Result<Self> {
        let (kind, queue_depth, backend) = build_backend(&arena, &config)?;
        let backend = Box::new(backend::faults::FaultyBackend::new(backend, plan));
        Self::start_with(arena, kind, queue_depth, backend)
    }

    fn start_with(
        arena: Arc<SlabArena>,
        kind: BackendKind,
        queue_depth: usize,
        backend: Box<dyn Backend>,
    ) -> Result<Self> {
        let waker = backend.waker();
        let fixed_buffers = backend.fixed_buffers();
        let (demand_tx, demand_rx) = unbounded();
        let (prefetch_tx, prefetch_rx) = unbounded();
        let (done_tx, completions) = unbounded();
        let parked = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let worker = IoThread::new(
            backend,
            Arc::clone(&arena),
            (demand_rx, prefetch_rx),
            done_tx,
            Arc::clone(&parked),
            Arc::clone(&counters),
            queue_depth,
        );
        let thread = std::thread::Builder::new()
            .name("floe-io".into())
            .spawn(move || worker.run())
            .map_err(|e| IoError::BackendUnavailable {
                backend: kind.name(),
                reason: format!("cannot start the I/O thread: {e}"),
            })?;
        Ok(Self {
            demand_tx: Some(demand_tx),
            prefetch_tx: Some(prefetch_tx),
            completions,
            arena,
            kind,
            queue_depth,
            fixed_buffers,
            waker,
            parked,
            counters,
            thread: Some(thread),
            refusing: AtomicBool::new(false),
        })
    }

    /// The backend in use (after any fallback).
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// Whether reads land in buffers registered with the kernel (io_uring `READ_FIXED`).
    pub fn uses_fixed_buffers(&self) -> bool {
        self.fixed_buffers
    }

    /// Reads kept in flight at once.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }

    /// The arena reads land in.
    pub fn arena(&self) -> &Arc<SlabArena> {
        &self.arena
    }

    /// Opens a file the way this engine's backend reads: direct, unless the backend is
    /// `buffered` or the filesystem refuses direct I/O (then buffered, logged once).
    pub fn open_file(&self, path: &Path) -> Result<Arc<DataFile>> {
        let file = DataFile::open(path, self.kind.wants_direct())?;
        if file.mode() == FileMode::Direct && !self.arena.align().is_multiple_of(file.align()) {
            return Err(IoError::Config(format!(
                "{} needs {}-byte aligned buffers but the arena's slots are aligned to {}",
                path.display(),
                file.align(),
                self.arena.align()
            )));
        }
        Ok(Arc::new(file))
    }

    /// Queues a read. A request the engine cannot take (its slot belongs to another arena, or
    /// the I/O thread is gone) comes back whole in the error, slot token included, so the
    /// caller can put the slot back where it keeps it.
    pub fn submit(&self, request: ReadRequest) -> std::result::Result<(), SubmitError> {
        let reject = |error, request| Err(SubmitError { error, request: Box::new(request) });
        // The I/O thread turns the slot into a kernel address in this arena: a slot of
        // another arena would make that address point anywhere.
        if let Err(e) = self.arena.check(&request.slot) {
            return reject(e, request);
        }
        let tx = match request.priority {
            Priority::Demand => self.demand_tx.as_ref(),
            Priority::Prefetch => self.prefetch_tx.as_ref(),
        };
        let Some(tx) = tx.filter(|_| !self.refusing.load(Ordering::Relaxed)) else {
            return reject(IoError::Disconnected, request);
        };
        if let Err(e) = tx.send(request) {
            return reject(IoError::Disconnected, e.into_inner());
        }
        // Pairs with the fence in IoThread::run: either the thread sees this request before it
        // sleeps, or we see it parked and wake it.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            (self.waker)();
        }
        Ok(())
    }

    /// From now on `submit` refuses every request with [`IoError::Disconnected`], as when the
    /// I/O thread has stopped (reads in flight still complete). For tests of what callers do
    /// with a refused request.
    #[doc(hidden)]
    pub fn refuse_requests(&self) {
        self.refusing.store(true, Ordering::Relaxed);
    }

    /// The next completion, waiting for it: watches the channel for up to [`COMPLETION_SPIN`]
    /// before sleeping. Waking a sleeping thread costs tens to hundreds of microseconds on
    /// virtual machines, a large share of one slab read; a thread that waits for a demand read
    /// has nothing else to do, so the bounded watch is cheap.
    pub fn next_completion(&self) -> Result<ReadDone> {
        self.next_completion_spinning(COMPLETION_SPIN)
    }

    /// [`next_completion`](Self::next_completion) with a spin of `spin` before sleeping. A
    /// reader with nothing else to do (`floe bench-io`) spins longer: waking a sleeping thread
    /// costs 100-200 us on this VM, a second wake-up on top of the I/O thread's, which at queue
    /// depth 1 is a third of a 1 MiB read (measured: 1 MiB reads at qd 1 reach 69 % of fio
    /// with a 100 us spin, 99 % with 2 ms). The decode loop keeps the short spin: its compute
    /// threads share the cores with the I/O thread (a 2 ms spin there measured up to 20 %
    /// slower decode with `--cache none`).
    pub fn next_completion_spinning(&self, spin: Duration) -> Result<ReadDone> {
        let until = Instant::now() + spin;
        loop {
            match self.completions.try_recv() {
                Ok(done) => return Ok(done),
                Err(TryRecvError::Disconnected) => return Err(IoError::Disconnected),
                Err(TryRecvError::Empty) if Instant::now() < until => std::hint::spin_loop(),
                Err(TryRecvError::Empty) => break,
            }
        }
        self.completions.recv().map_err(|_| IoError::Disconnected)
    }

    /// Completions, in the order reads finish.
    pub fn completions(&self) -> &Receiver<ReadDone> {
        &self.completions
    }

    /// Counters so far.
    pub fn stats(&self) -> IoStats {
        let c = &self.counters;
        IoStats {
            submitted: c.submitted.load(Ordering::Relaxed),
            reads: c.reads.load(Ordering::Relaxed),
            bytes_requested: c.bytes_requested.load(Ordering::Relaxed),
            bytes_transferred: c.bytes_transferred.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
        }
    }
}

/// The backend `config` asks for (`FLOE_IO` if it names none, else io_uring on Linux), after any
/// fallback, with the queue depth it runs at.
fn build_backend(
    arena: &Arc<SlabArena>,
    config: &IoConfig,
) -> Result<(BackendKind, usize, Box<dyn Backend>)> {
    let requested = match config.backend {
        Some(kind) => kind,
        None => BackendKind::from_env()?.unwrap_or(if cfg!(target_os = "linux") {
            BackendKind::Uring
        } else {
            BackendKind::Pread
        }),
    };
    let queue_depth = config.queue_depth.max(1);
    let (kind, backend) = backend::build(requested, queue_depth, arena, config.register_buffers)?;
    Ok((kind, queue_depth, backend))
}

impl Drop for IoEngine {
    fn drop(&mut self) {
        self.demand_tx = None;
        self.prefetch_tx = None;
        (self.waker)();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Completions nobody received still carry slots: give them back to the arena.
        while let Ok(done) = self.completions.try_recv() {
            let _ = self.arena.free(done.slot);
        }
    }
}
