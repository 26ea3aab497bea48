//! `IoEngine`: the dedicated I/O thread and its request / completion channels.
//!
//! Requests arrive on two crossbeam channels, demand and prefetch; the thread takes every
//! demand read before any prefetch, drops prefetches cancelled while queued, keeps the backend
//! at its queue depth, and sends each completion (tag, slot, result) back on one channel in the
//! order reads finish. A slot submitted with a read belongs to the I/O thread (and the kernel)
//! until its completion is sent; if nobody is listening any more the thread frees it itself,
//! after the kernel is done with it.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender, TryRecvError};

use crate::arena::{SlabArena, Slot};
use crate::backend::{self, Backend, BackendKind, RawDone, RawRead, Waker};
use crate::error::{IoError, Result};
use crate::file::{DataFile, FileMode};

/// How long the idle I/O thread watches its request channels before it sleeps.
const IDLE_SPIN: Duration = Duration::from_micros(100);

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

/// One read: `len` bytes at `offset` of `file` into `slot`.
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
struct Counters {
    submitted: AtomicU64,
    reads: AtomicU64,
    bytes_requested: AtomicU64,
    bytes_transferred: AtomicU64,
    cancelled: AtomicU64,
    errors: AtomicU64,
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
        let requested = match config.backend {
            Some(kind) => kind,
            None => BackendKind::from_env()?.unwrap_or(if cfg!(target_os = "linux") {
                BackendKind::Uring
            } else {
                BackendKind::Pread
            }),
        };
        let queue_depth = config.queue_depth.max(1);
        let (kind, backend) =
            backend::build(requested, queue_depth, &arena, config.register_buffers)?;
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
        let worker = IoThread {
            backend,
            arena: Arc::clone(&arena),
            demand_rx,
            prefetch_rx,
            done_tx,
            parked: Arc::clone(&parked),
            counters: Arc::clone(&counters),
            demand: VecDeque::new(),
            prefetch: VecDeque::new(),
            ops: (0..queue_depth).map(|_| None).collect(),
            free_ids: (0..queue_depth as u64).rev().collect(),
            closed: false,
        };
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

    /// Queues a read. If the I/O thread is gone the slot goes back to the arena and the error
    /// says so.
    pub fn submit(&self, request: ReadRequest) -> Result<()> {
        let tx = match request.priority {
            Priority::Demand => self.demand_tx.as_ref(),
            Priority::Prefetch => self.prefetch_tx.as_ref(),
        };
        let Some(tx) = tx else { return Err(IoError::Disconnected) };
        if let Err(e) = tx.send(request) {
            let _ = self.arena.free(e.into_inner().slot);
            return Err(IoError::Disconnected);
        }
        // Pairs with the fence in IoThread::run: either the thread sees this request before it
        // sleeps, or we see it parked and wake it.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            (self.waker)();
        }
        Ok(())
    }

    /// The next completion, waiting for it: watches the channel for up to [`COMPLETION_SPIN`]
    /// before sleeping. Waking a sleeping thread costs tens to hundreds of microseconds on
    /// virtual machines, a large share of one slab read; a thread that waits for a demand read
    /// has nothing else to do, so the bounded watch is cheap.
    pub fn next_completion(&self) -> Result<ReadDone> {
        let until = Instant::now() + COMPLETION_SPIN;
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

/// A read in flight: the request (which owns the slot) and how far it has got.
struct InFlight {
    req: ReadRequest,
    /// File offset the slot's first byte corresponds to.
    start: u64,
    /// Bytes to read from `start` (the aligned cover for direct files).
    read_len: usize,
    /// Bytes of the slot already valid.
    done: usize,
    /// Where the requested bytes sit in the slot.
    view: Range<usize>,
    align: usize,
}

struct IoThread {
    backend: Box<dyn Backend>,
    arena: Arc<SlabArena>,
    demand_rx: Receiver<ReadRequest>,
    prefetch_rx: Receiver<ReadRequest>,
    done_tx: Sender<ReadDone>,
    parked: Arc<AtomicBool>,
    counters: Arc<Counters>,
    demand: VecDeque<ReadRequest>,
    prefetch: VecDeque<ReadRequest>,
    ops: Vec<Option<InFlight>>,
    free_ids: Vec<u64>,
    closed: bool,
}

impl IoThread {
    fn in_flight(&self) -> usize {
        self.ops.len() - self.free_ids.len()
    }

    fn run(mut self) {
        let mut raw = Vec::new();
        loop {
            self.intake();
            if self.closed {
                // Nobody will receive completions: drop what is queued, drain what is in flight.
                for req in self.demand.drain(..).chain(self.prefetch.drain(..)) {
                    let _ = self.arena.free(req.slot);
                }
            }
            self.start_queued();
            if let Err(e) = self.backend.submit() {
                tracing::error!("I/O backend failed: {e}");
                self.fail_all(e);
            }
            if self.in_flight() == 0 {
                if self.closed {
                    break;
                }
                self.block_for_request();
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let block = self.closed || (self.demand_rx.is_empty() && self.prefetch_rx.is_empty());
            let waited = self.backend.wait(&mut raw, block);
            self.parked.store(false, Ordering::SeqCst);
            if let Err(e) = waited {
                tracing::error!("I/O backend failed while waiting: {e}");
                self.fail_all(e);
                continue;
            }
            for done in raw.drain(..) {
                self.on_raw_done(done);
            }
        }
    }

    /// A backend that can no longer reap completions cannot give buffers back safely: keep the
    /// arena alive forever (a leak, never a use-after-free) and stop.
    fn fail_all(&mut self, e: IoError) {
        let msg = e.to_string();
        for req in self.demand.drain(..).chain(self.prefetch.drain(..)) {
            let done = ReadDone {
                tag: req.tag,
                slot: req.slot,
                result: Err(IoError::BackendUnavailable { backend: "io", reason: msg.clone() }),
            };
            let _ = self.done_tx.send(done);
        }
        if self.in_flight() > 0 {
            std::mem::forget(Arc::clone(&self.arena));
            for op in self.ops.iter_mut().filter_map(Option::take) {
                std::mem::forget(op);
            }
            self.free_ids = (0..self.ops.len() as u64).collect();
        }
        self.closed = true;
    }

    fn intake(&mut self) {
        loop {
            match self.demand_rx.try_recv() {
                Ok(req) => self.demand.push_back(req),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
        loop {
            match self.prefetch_rx.try_recv() {
                Ok(req) => self.prefetch.push_back(req),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    self.closed = true;
                    break;
                }
            }
        }
    }

    fn block_for_request(&mut self) {
        // A requester that just received a completion usually submits its next read within
        // microseconds; a bounded spin (never longer than IDLE_SPIN) catches it without the
        // futex wake-up that sleeping would cost on the critical path.
        let spin_until = Instant::now() + IDLE_SPIN;
        while Instant::now() < spin_until {
            if !self.demand_rx.is_empty() || !self.prefetch_rx.is_empty() {
                return;
            }
            std::hint::spin_loop();
        }
        select! {
            recv(self.demand_rx) -> r => match r {
                Ok(req) => self.demand.push_back(req),
                Err(_) => self.closed = true,
            },
            recv(self.prefetch_rx) -> r => match r {
                Ok(req) => self.prefetch.push_back(req),
                Err(_) => self.closed = true,
            },
        }
    }

    fn start_queued(&mut self) {
        while !self.free_ids.is_empty() {
            let Some(req) = self.demand.pop_front().or_else(|| self.prefetch.pop_front()) else {
                return;
            };
            if req.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                self.complete(req, Err(IoError::Cancelled));
                continue;
            }
            self.start(req);
        }
    }

    fn start(&mut self, req: ReadRequest) {
        let direct = req.file.mode() == FileMode::Direct;
        let align = if direct { req.file.align() } else { 1 };
        let start = req.offset - req.offset % align as u64;
        let head = (req.offset - start) as usize;
        let end = (head + req.len).next_multiple_of(align);
        let slot_bytes = self.arena.slot_bytes();
        if end > slot_bytes {
            let err = IoError::TooLargeForSlot {
                offset: req.offset,
                len: req.len,
                needed: end,
                align,
                slot_bytes,
            };
            return self.complete(req, Err(err));
        }
        if req.len == 0 {
            return self.complete(req, Ok(0..0));
        }
        let id = self.free_ids.pop().expect("caller checked a free id");
        let view = head..head + req.len;
        let op = InFlight { req, start, read_len: end, done: 0, view, align };
        self.ops[id as usize] = Some(op);
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        self.issue(id);
    }

    /// Hands the unread rest of op `id` to the backend (from its last aligned point).
    fn issue(&mut self, id: u64) {
        let op = self.ops[id as usize].as_mut().expect("issue of a live op");
        // Direct reads must restart at an aligned offset; re-reading a few bytes is harmless.
        let resume = op.done - op.done % op.align;
        op.done = resume;
        let raw = RawRead {
            id,
            fd: op.req.file.raw_fd(),
            offset: op.start + resume as u64,
            len: op.read_len - resume,
            // SAFETY (of the pointer arithmetic): resume < read_len <= slot_bytes, so the
            // address stays inside the slot that this op owns.
            buf: self.arena.slot_ptr(&op.req.slot).wrapping_add(resume),
        };
        if let Err(e) = self.backend.push(raw) {
            let op = self.take_op(id);
            self.complete(op.req, Err(e));
        }
    }

    fn take_op(&mut self, id: u64) -> InFlight {
        let op = self.ops[id as usize].take().expect("completion of a live op");
        self.free_ids.push(id);
        op
    }

    fn on_raw_done(&mut self, done: RawDone) {
        let id = done.id;
        let Some(op) = self.ops.get_mut(id as usize).and_then(Option::as_mut) else {
            tracing::error!("completion for unknown read id {id}; ignored");
            return;
        };
        match done.result {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                self.issue(id);
            }
            Err(source) => {
                let op = self.take_op(id);
                let err = IoError::Read {
                    path: op.req.file.path().to_path_buf(),
                    offset: op.req.offset,
                    len: op.req.len,
                    source,
                };
                self.complete(op.req, Err(err));
            }
            Ok(n) => {
                let asked = op.read_len - op.done;
                op.done += n;
                self.counters.bytes_transferred.fetch_add(n as u64, Ordering::Relaxed);
                if op.done >= op.view.end {
                    let op = self.take_op(id);
                    let view = op.view.clone();
                    return self.complete(op.req, Ok(view));
                }
                if n < asked {
                    // Short: either end of file (a truncated file or a bad range) or a
                    // genuinely partial read, which is resumed.
                    match op.req.file.len() {
                        Ok(file_len) if op.start + op.done as u64 >= file_len || n == 0 => {
                            let op = self.take_op(id);
                            let err = IoError::PastEof {
                                path: op.req.file.path().to_path_buf(),
                                offset: op.req.offset,
                                len: op.req.len,
                                file_len,
                            };
                            return self.complete(op.req, Err(err));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let op = self.take_op(id);
                            return self.complete(op.req, Err(e));
                        }
                    }
                }
                self.issue(id);
            }
        }
    }

    fn complete(&mut self, req: ReadRequest, result: Result<Range<usize>>) {
        match &result {
            Ok(view) => {
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes_requested.fetch_add(view.len() as u64, Ordering::Relaxed);
            }
            Err(IoError::Cancelled) => {}
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let done = ReadDone { tag: req.tag, slot: req.slot, result };
        if let Err(e) = self.done_tx.send(done) {
            // The requester went away: the slot comes home to the arena.
            let _ = self.arena.free(e.into_inner().slot);
        }
    }
}
