//! The I/O thread: takes requests (demand before prefetch), splits each into its segments,
//! keeps the backend at its queue depth, resumes short and interrupted reads, and sends one
//! completion per request when every segment has landed (or failed). The request, and with it
//! the slot, stays here until then: a buffer the kernel may still write is never handed back.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender, TryRecvError};

use crate::arena::SlabArena;
use crate::backend::{Backend, RawDone, RawRead};
use crate::engine::{CancelToken, Counters, ReadDone, ReadRequest};
use crate::error::{IoError, Result};
use crate::file::{DataFile, FileMode};

/// How long the idle I/O thread watches its request channels before it sleeps.
pub(crate) const IDLE_SPIN: Duration = Duration::from_micros(100);

/// A request whose segments are being read.
struct Pending {
    req: ReadRequest,
    /// Segments not yet finished.
    left: usize,
    /// Where each segment's bytes sit in the slot (segment 0 is the request's own range).
    views: Vec<Range<usize>>,
    /// The first failure, reported once every segment is back.
    error: Option<IoError>,
}

/// One segment's read in flight.
struct InFlight {
    /// Index into `IoThread::pending`.
    rid: usize,
    /// The segment's file.
    file: Arc<DataFile>,
    /// File offset of the slot byte at `dst`.
    start: u64,
    /// Slot offset the read starts at.
    dst: usize,
    /// Bytes to read from `start` (the aligned cover for direct files).
    read_len: usize,
    /// Bytes already valid.
    done: usize,
    /// Bytes that must be valid for the segment to be complete.
    need: usize,
    align: usize,
}

pub(crate) struct IoThread {
    backend: Box<dyn Backend>,
    arena: Arc<SlabArena>,
    demand_rx: Receiver<ReadRequest>,
    prefetch_rx: Receiver<ReadRequest>,
    done_tx: Sender<ReadDone>,
    parked: Arc<AtomicBool>,
    counters: Arc<Counters>,
    demand: VecDeque<ReadRequest>,
    prefetch: VecDeque<ReadRequest>,
    /// Requests being read, by id; `free_pending` lists the empty entries.
    pending: Vec<Option<Pending>>,
    free_pending: Vec<usize>,
    /// Segments of started requests waiting for a backend slot: (request id, segment).
    segments: VecDeque<(usize, InFlight)>,
    /// Backend operations, by id (at most the queue depth).
    ops: Vec<Option<InFlight>>,
    free_ids: Vec<u64>,
    closed: bool,
}

impl IoThread {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        arena: Arc<SlabArena>,
        (demand_rx, prefetch_rx): (Receiver<ReadRequest>, Receiver<ReadRequest>),
        done_tx: Sender<ReadDone>,
        parked: Arc<AtomicBool>,
        counters: Arc<Counters>,
        queue_depth: usize,
    ) -> Self {
        Self {
            backend,
            arena,
            demand_rx,
            prefetch_rx,
            done_tx,
            parked,
            counters,
            demand: VecDeque::new(),
            prefetch: VecDeque::new(),
            pending: Vec::new(),
            free_pending: Vec::new(),
            segments: VecDeque::new(),
            ops: (0..queue_depth).map(|_| None).collect(),
            free_ids: (0..queue_depth as u64).rev().collect(),
            closed: false,
        }
    }

    fn in_flight(&self) -> usize {
        self.ops.len() - self.free_ids.len()
    }

    pub(crate) fn run(mut self) {
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
                segments: Vec::new(),
            };
            let _ = self.done_tx.send(done);
        }
        if self.in_flight() > 0 || !self.segments.is_empty() {
            std::mem::forget(Arc::clone(&self.arena));
            for p in self.pending.iter_mut().filter_map(Option::take) {
                std::mem::forget(p);
            }
            self.ops.iter_mut().for_each(|o| *o = None);
            self.segments.clear();
            self.free_ids = (0..self.ops.len() as u64).collect();
        }
        self.closed = true;
    }

    fn intake(&mut self) {
        for (rx, queue) in
            [(&self.demand_rx, &mut self.demand), (&self.prefetch_rx, &mut self.prefetch)]
        {
            loop {
                match rx.try_recv() {
                    Ok(req) => queue.push_back(req),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.closed = true;
                        break;
                    }
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
            if let Some((_, op)) = self.segments.pop_front() {
                self.issue_new(op);
                continue;
            }
            let Some(req) = self.demand.pop_front().or_else(|| self.prefetch.pop_front()) else {
                return;
            };
            if req.cancel.as_ref().is_some_and(CancelToken::is_cancelled) {
                self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                self.complete(req, Err(IoError::Cancelled), Vec::new());
                continue;
            }
            self.start(req);
        }
    }

    /// Plans the request's segments (aligned covers inside the slot, no overlaps) and queues
    /// them; a request that cannot fit is completed with the error at once.
    fn start(&mut self, req: ReadRequest) {
        // `IoEngine::submit` refuses foreign slots; this guards every other way in, since a
        // slot of another arena would make `issue` hand the kernel an address outside it.
        if let Err(e) = self.arena.check(&req.slot) {
            return self.complete(req, Err(e), Vec::new());
        }
        let slot_bytes = self.arena.slot_bytes();
        let ranges = std::iter::once((&req.file, req.offset, req.len, 0)).chain(
            req.segments
                .iter()
                .map(|s| (s.file.as_ref().unwrap_or(&req.file), s.offset, s.len, s.dst)),
        );
        let mut plan = Vec::with_capacity(1 + req.segments.len());
        for (file, offset, len, dst) in ranges {
            let align = if file.mode() == FileMode::Direct { file.align() } else { 1 };
            let start = offset - offset % align as u64;
            let head = (offset - start) as usize;
            let end = (head + len).next_multiple_of(align);
            if dst + end > slot_bytes || !dst.is_multiple_of(self.arena.align()) {
                let err =
                    IoError::TooLargeForSlot { offset, len, needed: dst + end, align, slot_bytes };
                return self.complete(req, Err(err), Vec::new());
            }
            plan.push((start, dst, end, head, len, align, Arc::clone(file)));
        }
        let mut covers: Vec<(usize, usize)> = plan.iter().map(|p| (p.1, p.1 + p.2)).collect();
        covers.sort_unstable();
        if covers.windows(2).any(|w| w[1].0 < w[0].1) {
            let err = IoError::Config(format!(
                "read of {} segments at {:?}: their slot ranges overlap",
                plan.len(),
                covers
            ));
            return self.complete(req, Err(err), Vec::new());
        }
        let views: Vec<Range<usize>> = plan.iter().map(|p| p.1 + p.3..p.1 + p.3 + p.4).collect();
        let to_read: Vec<_> = plan.into_iter().filter(|p| p.4 > 0).collect();
        if to_read.is_empty() {
            let mut views = views;
            let first = views.remove(0);
            return self.complete(req, Ok(first), views);
        }
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        let rid = match self.free_pending.pop() {
            Some(i) => i,
            None => {
                self.pending.push(None);
                self.pending.len() - 1
            }
        };
        self.pending[rid] = Some(Pending { req, left: to_read.len(), views, error: None });
        for (start, dst, read_len, head, len, align, file) in to_read {
            let op = InFlight { rid, file, start, dst, read_len, done: 0, need: head + len, align };
            self.segments.push_back((rid, op));
        }
    }

    fn issue_new(&mut self, op: InFlight) {
        let id = self.free_ids.pop().expect("caller checked a free id");
        self.ops[id as usize] = Some(op);
        self.issue(id);
    }

    /// Hands the unread rest of op `id` to the backend (from its last aligned point).
    fn issue(&mut self, id: u64) {
        let op = self.ops[id as usize].as_mut().expect("issue of a live op");
        // Direct reads must restart at an aligned offset; re-reading a few bytes is harmless.
        let resume = op.done - op.done % op.align;
        op.done = resume;
        let req = &self.pending[op.rid].as_ref().expect("op of a live request").req;
        let (slot, req_priority) = (&req.slot, req.priority);
        // The slot belongs to this arena: `start` completed any request whose slot did not
        // with an error before it got here.
        let buf = self.arena.slot_ptr(slot).wrapping_add(op.dst + resume);
        // SAFETY: dst + resume < dst + read_len <= slot_bytes (checked in `start`), so buf ..
        // buf + len lies inside the slot; the slot token sits in `pending` (this thread) until
        // the request completes, which is after this op's RawDone, so nobody else touches the
        // bytes; the Arc<DataFile> in `op` keeps the fd open until then.
        let raw = unsafe {
            RawRead::new(
                id,
                op.file.raw_fd(),
                op.start + resume as u64,
                op.read_len - resume,
                buf,
                req_priority,
            )
        };
        if let Err(e) = self.backend.push(raw) {
            self.finish_segment(id, Some(e));
        }
    }

    /// Op `id` is over (with `error` if it failed): frees the backend slot and completes the
    /// request if it was its last segment.
    fn finish_segment(&mut self, id: u64, error: Option<IoError>) {
        let op = self.ops[id as usize].take().expect("completion of a live op");
        self.free_ids.push(id);
        let p = self.pending[op.rid].as_mut().expect("op of a live request");
        if p.error.is_none() {
            p.error = error;
        }
        p.left -= 1;
        if p.left == 0 {
            let p = self.pending[op.rid].take().expect("live request");
            self.free_pending.push(op.rid);
            match p.error {
                Some(e) => self.complete(p.req, Err(e), Vec::new()),
                None => {
                    let mut views = p.views;
                    let first = views.remove(0);
                    self.complete(p.req, Ok(first), views)
                }
            }
        }
    }

    fn on_raw_done(&mut self, done: RawDone) {
        let id = done.id;
        let Some(op) = self.ops.get_mut(id as usize).and_then(Option::as_mut) else {
            tracing::error!("completion for unknown read id {id}; ignored");
            return;
        };
        let req = &self.pending[op.rid].as_ref().expect("op of a live request").req;
        let (path, offset, len) = (op.file.path().to_path_buf(), req.offset, req.len);
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
                self.finish_segment(id, Some(IoError::Read { path, offset, len, source }));
            }
            Ok(n) => {
                let asked = op.read_len - op.done;
                op.done += n;
                self.counters.bytes_transferred.fetch_add(n as u64, Ordering::Relaxed);
                if op.done >= op.need {
                    return self.finish_segment(id, None);
                }
                if n < asked {
                    // Short: either end of file (a truncated file or a bad range) or a
                    // genuinely partial read, which is resumed.
                    let reached = op.start + op.done as u64;
                    match op.file.len() {
                        Ok(file_len) if reached >= file_len || n == 0 => {
                            let err = IoError::PastEof { path, offset, len, file_len };
                            return self.finish_segment(id, Some(err));
                        }
                        Ok(_) => {}
                        Err(e) => return self.finish_segment(id, Some(e)),
                    }
                }
                self.issue(id);
            }
        }
    }

    fn complete(
        &mut self,
        req: ReadRequest,
        result: Result<Range<usize>>,
        segments: Vec<Range<usize>>,
    ) {
        match &result {
            Ok(view) => {
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
                let bytes = view.len() + segments.iter().map(|s| s.len()).sum::<usize>();
                self.counters.bytes_requested.fetch_add(bytes as u64, Ordering::Relaxed);
            }
            Err(IoError::Cancelled) => {}
            Err(_) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let done = ReadDone { tag: req.tag, slot: req.slot, result, segments };
        if let Err(e) = self.done_tx.send(done) {
            // The requester went away: the slot comes home to the arena.
            let _ = self.arena.free(e.into_inner().slot);
        }
    }
}
