//! `StreamingExperts`: routed experts read from `experts.bin` on demand through the I/O thread
//! into a byte-budgeted slab cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use floe_cache::{
    build_policy, CacheStats, ExpertCache, ExpertKey, ExpertUsage, Lookup, MoeShape, PolicyConfig,
    PolicyKind, RouteHistory,
};
use floe_io::{
    BackendKind, CancelToken, DataFile, IoConfig, IoEngine, IoError, Priority, ReadDone,
    ReadRequest, ReadSegment, SlabArena, Slot,
};
use parking_lot::Mutex;
use smallvec::SmallVec;

mod budget;
mod pins;

pub(crate) use pins::start_usage;

use super::prefetch_depth::PrefetchDepth;
use super::{CacheMode, PrefetchMode, PrefetchTuning, StreamingConfig};
use crate::error::{Error, Result};
use crate::formats::packed::PackedModel;
use crate::formats::placement::{ExpertFile, ExpertPlacement, ExpertRange};
use crate::model::config::ModelConfig;
use crate::runtime::experts::{ExpertBatchFn, ExpertSource, ExpertView, GatePrediction};

/// Counters of a streaming run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct StreamingStats {
    /// Slab cache counters.
    pub cache: CacheStats,
    /// Seconds the compute thread waited for slabs.
    pub stall_s: f64,
    /// Bytes the I/O thread transferred.
    pub io_bytes: u64,
    /// Slots in the cache.
    pub slots: usize,
    /// Prefetch reads that failed: dropped and counted, not fatal.
    pub prefetch_failed: u64,
    /// Reads that came back with an error (prefetch or demand).
    pub read_errors: u64,
}

struct Inner {
    /// Slot tokens not lent to the I/O thread, by slot index.
    slots: Vec<Option<Slot>>,
    /// Prefetches submitted and not yet completed, with their cancel tokens.
    prefetches: Vec<(ExpertKey, CancelToken)>,
    /// Reads submitted and not yet landed.
    in_flight: usize,
}

/// Experts a decode step holds at once fit inline; a prefill chunk's union may spill.
const INLINE_KEYS: usize = 32;
/// Experts held by one layer's pass (pinned, ready, waiting or landed).
type Keys = SmallVec<[ExpertKey; INLINE_KEYS]>;

/// The prefetch path's predictions and the share of them read ahead.
#[derive(Debug, Default)]
struct AheadBuffers {
    predicted: Vec<(usize, f32)>,
    selected: Vec<(usize, f32)>,
}

/// Experts streamed from SSD. One compute thread uses it at a time (its state is behind a
/// mutex); the I/O thread runs beside it.
pub struct StreamingExperts {
    io: IoEngine,
    files: Vec<Arc<DataFile>>,
    cache: ExpertCache,
    experts: ExpertFile,
    mode: CacheMode,
    prefetch: PrefetchMode,
    /// Routing so far, for the `temporal`, `hot` and `affinity` predictors.
    history: Mutex<RouteHistory>,
    /// Per-layer prediction precision, when prefetch depth adapts.
    depth: Mutex<Option<PrefetchDepth>>,
    /// Use counts of the experts, when a usage file is kept.
    usage: Mutex<Option<ExpertUsage>>,
    /// The slab cache gives memory back when its limit is lowered.
    shrinkable: bool,
    inner: Mutex<Inner>,
    /// The prefetch path's buffers, reused from layer to layer.
    ahead: Mutex<AheadBuffers>,
    /// One token's route as the cache takes it, reused likewise.
    routed: Mutex<Vec<(u16, f32)>>,
    stall_ns: AtomicU64,
    /// Prefetch reads that failed (dropped, or read again on demand).
    prefetch_failed: AtomicU64,
    /// Reads that came back with an error, prefetch or demand.
    read_errors: AtomicU64,
}

impl std::fmt::Debug for StreamingExperts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingExperts")
            .field("mode", &self.mode)
            .field("slots", &self.cache.capacity())
            .finish()
    }
}

/// Merges ranges that continue each other in both the file and the slot.
fn coalesce(ranges: Vec<ExpertRange>) -> Vec<ExpertRange> {
    let mut out: Vec<ExpertRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(p)
                if p.file == r.file
                    && p.offset + p.len as u64 == r.offset
                    && p.dst + p.len == r.dst =>
            {
                p.len += r.len
            }
            _ => out.push(r),
        }
    }
    out
}

fn tag_of(key: ExpertKey) -> u64 {
    ((key.layer as u64) << 16) | key.expert as u64
}

fn key_of(tag: u64) -> ExpertKey {
    ExpertKey::new((tag >> 16) as u16, (tag & 0xFFFF) as u16)
}

impl StreamingExperts {
    /// Streams the experts of `model` with `cfg`.
    pub fn open(model: &PackedModel, cfg: &StreamingConfig) -> Result<Self> {
        Self::open_with(model, cfg, None)
    }

    /// As [`open`](Self::open), over an already started I/O engine (tests use the fault-
    /// injecting one). The engine's arena must have the slab size of the model.
    pub fn open_with(
        model: &PackedModel,
        cfg: &StreamingConfig,
        io: Option<IoEngine>,
    ) -> Result<Self> {
        Self::open_file(model.expert_file()?, &model.manifest.config, cfg, io)
    }

    /// Streams the experts of `experts` (a packed model's experts.bin or a GGUF file) for a
    /// model of `config`.
    pub fn open_file(
        experts: ExpertFile,
        config: &ModelConfig,
        cfg: &StreamingConfig,
        io: Option<IoEngine>,
    ) -> Result<Self> {
        let c = config;
        let slab_bytes = experts.slot_bytes;
        let slab = slab_bytes as u64;
        let top_k = c.top_k;
        let slots = match cfg.cache {
            CacheMode::Policy(_) => (cfg.cache_bytes / slab) as usize,
            // Modes without a cache still need one layer's experts in memory at once.
            CacheMode::Os | CacheMode::None => {
                top_k.max((cfg.cache_bytes / slab) as usize).min(top_k * 2)
            }
        };
        if slots < top_k {
            return Err(Error::Cache(floe_cache::CacheError::BudgetTooSmall {
                slots,
                min: top_k,
                min_bytes: top_k as u64 * slab,
            }));
        }
        let backend = match (cfg.cache, cfg.io) {
            (CacheMode::Os, _) => Some(BackendKind::Buffered),
            (_, io) => io,
        };
        let io = match io {
            Some(io) => io,
            None => {
                let arena = SlabArena::new(slots, slab_bytes, 4096)?;
                IoEngine::start(
                    arena,
                    IoConfig {
                        backend,
                        queue_depth: cfg.queue_depth.max(1),
                        // Registered pages stay pinned: a shrinkable arena cannot be registered.
                        register_buffers: !cfg.shrinkable,
                    },
                )?
            }
        };
        if io.arena().slot_bytes() != slab_bytes || io.arena().slot_count() < slots {
            return Err(Error::Invalid(
                "the I/O engine's arena does not fit this model's slabs".into(),
            ));
        }
        let files = experts
            .paths
            .iter()
            .map(|p| io.open_file(p))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let shape =
            MoeShape { layers: c.layers as u16, experts: c.experts as u16, top_k: c.top_k as u16 };
        let kind = match cfg.cache {
            CacheMode::Policy(k) => k,
            _ => PolicyKind::Lru,
        };
        let policy = build_policy(kind, slots, shape, &PolicyConfig::default(), None)?;
        let cache = ExpertCache::with_slots(slots, slab, top_k, policy)?;
        let mut table: Vec<Option<Slot>> = (0..slots).map(|_| None).collect();
        while let Some(s) = io.arena().alloc() {
            let i = s.index() as usize;
            if i < slots {
                table[i] = Some(s);
            } else {
                io.arena().free(s)?;
                break;
            }
        }
        Ok(Self {
            io,
            files,
            cache,
            experts,
            mode: cfg.cache,
            prefetch: cfg.prefetch,
            history: Mutex::new(RouteHistory::new(c.layers, c.experts)),
            depth: Mutex::new(Some(PrefetchDepth::default())),
            ahead: Mutex::new(AheadBuffers::default()),
            routed: Mutex::new(Vec::new()),
            usage: Mutex::new(None),
            shrinkable: cfg.shrinkable,
            inner: Mutex::new(Inner { slots: table, prefetches: Vec::new(), in_flight: 0 }),
            stall_ns: AtomicU64::new(0),
            prefetch_failed: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
        })
    }

    /// Sets how prefetching and eviction work together.
    pub fn set_prefetch_tuning(&self, t: PrefetchTuning) {
        self.cache.set_prefetch_aware(t.aware_eviction);
        *self.depth.lock() = t.adaptive_depth.then(|| PrefetchDepth::new(t.min_precision));
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamingStats {
        StreamingStats {
            cache: self.cache.stats(),
            stall_s: self.stall_ns.load(Ordering::Relaxed) as f64 / 1e9,
            io_bytes: self.io.stats().bytes_transferred,
            slots: self.cache.capacity(),
            prefetch_failed: self.prefetch_failed.load(Ordering::Relaxed),
            read_errors: self.read_errors.load(Ordering::Relaxed),
        }
    }

    /// Lands every read still in flight, then checks that the slot table, the cache and the
    /// counters agree: every slot token home, nothing loading or pinned, every slot free or
    /// held once, and every failed read counted. For tests after a generation (ended or failed).
    pub fn audit(&self) -> std::result::Result<(), String> {
        let mut inner = self.inner.lock();
        while inner.in_flight > 0 {
            let done = self.io.next_completion().map_err(|e| e.to_string())?;
            // Errors of reads nobody waits for any more are booked by `land` (counted, entry
            // dropped); they are not failures of the audit.
            let _ = self.land(&mut inner, done);
        }
        if !inner.prefetches.is_empty() {
            return Err(format!(
                "{} prefetches booked with nothing in flight",
                inner.prefetches.len()
            ));
        }
        if let Some(i) = inner.slots.iter().position(Option::is_none) {
            return Err(format!("slot {i}'s token is not home"));
        }
        self.cache.audit_idle()?;
        let (io_errors, booked) =
            (self.io.stats().errors, self.read_errors.load(Ordering::Relaxed));
        if io_errors != booked {
            return Err(format!("{io_errors} failed reads, {booked} booked"));
        }
        Ok(())
    }

    /// The I/O engine (tests make it refuse requests).
    #[doc(hidden)]
    pub fn io(&self) -> &IoEngine {
        &self.io
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.io.backend()
    }

    /// The placement of `key`'s layer.
    fn layer(&self, key: ExpertKey) -> Result<&ExpertPlacement> {
        self.experts.layer(key.layer as usize, key.expert as usize)
    }

    /// Reads `key` into `slot`, which the cache reserved for it (a Loading entry). On any
    /// failure the slot token stays home and the entry is dropped, so the cache and the slot
    /// table agree and a later access reads the expert again.
    fn submit(
        &self,
        inner: &mut Inner,
        key: ExpertKey,
        slot: u32,
        priority: Priority,
    ) -> Result<Option<CancelToken>> {
        let submitted = self.try_submit(inner, key, slot, priority);
        if submitted.is_err() {
            self.cache.complete(key, false);
        }
        submitted
    }

    fn try_submit(
        &self,
        inner: &mut Inner,
        key: ExpertKey,
        slot: u32,
        priority: Priority,
    ) -> Result<Option<CancelToken>> {
        // Everything that can fail before the read is handed over runs before the slot token
        // leaves the table.
        let mut ranges = self.layer(key)?.read(key.expert as usize);
        // Pieces help direct reads at low queue depth; buffered reads (`--cache os`) do better
        // as one request the kernel's readahead sees whole (measured: 2.1 vs 1.55 tok/s), so the
        // page-cache baseline keeps its best form.
        if self.files[ranges[0].file].read_align() == 1 {
            ranges = coalesce(ranges);
        }
        let first = ranges[0];
        let segments = ranges[1..]
            .iter()
            .map(|r| ReadSegment {
                file: (r.file != first.file).then(|| Arc::clone(&self.files[r.file])),
                offset: r.offset,
                len: r.len,
                dst: r.dst,
            })
            .collect();
        let token = inner.slots.get_mut(slot as usize).and_then(Option::take).ok_or_else(|| {
            Error::Invalid(format!("slot {slot} is not free (cache and arena disagree)"))
        })?;
        let cancel = (priority == Priority::Prefetch).then(CancelToken::new);
        let request = ReadRequest {
            tag: tag_of(key),
            file: Arc::clone(&self.files[first.file]),
            offset: first.offset,
            len: first.len,
            slot: token,
            priority,
            cancel: cancel.clone(),
            segments,
        };
        if let Err(rejected) = self.io.submit(request) {
            // The request comes back whole: its slot goes home.
            let token = rejected.request.slot;
            let i = token.index() as usize;
            inner.slots[i] = Some(token);
            return Err(Error::Io(rejected.error));
        }
        inner.in_flight += 1;
        Ok(cancel)
    }

    /// Books a completion: the slot token comes home, the entry becomes ready (or goes).
    /// Returns the key and whether the read succeeded. A failed demand read is an error naming
    /// the file; a failed prefetch is speculative, so it is counted, logged and dropped (read
    /// again on demand if an access is already waiting for it).
    fn land(&self, inner: &mut Inner, done: ReadDone) -> Result<(ExpertKey, bool)> {
        let key = key_of(done.tag);
        let idx = done.slot.index() as usize;
        let result = done.result;
        inner.slots[idx] = Some(done.slot);
        inner.in_flight -= 1;
        let was_prefetch = inner.prefetches.iter().any(|(k, _)| *k == key);
        inner.prefetches.retain(|(k, _)| *k != key);
        let waited_for = || match self.cache.entry(key) {
            Some((slot, false, pins)) if pins > 0 => Some(slot),
            _ => None,
        };
        match result {
            Ok(_) => {
                self.cache.complete(key, true);
                Ok((key, true))
            }
            Err(IoError::Cancelled) => {
                // Cancelled as stale, but a demand access has since pinned it: read it now.
                if let Some(slot) = waited_for() {
                    self.submit(inner, key, slot, Priority::Demand)?;
                    return Ok((key, false));
                }
                self.cache.cancel(key);
                Ok((key, false))
            }
            Err(e) if was_prefetch => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                if self.prefetch_failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("a prefetch failed ({e}); dropped, read again on demand");
                } else {
                    tracing::debug!("prefetch of {key} failed: {e}");
                }
                if let Some(slot) = waited_for() {
                    self.submit(inner, key, slot, Priority::Demand)?;
                    return Ok((key, false));
                }
                self.cache.complete(key, false);
                Ok((key, false))
            }
            Err(e) => {
                self.read_errors.fetch_add(1, Ordering::Relaxed);
                self.cache.complete(key, false);
                Err(Error::Io(e))
            }
        }
    }

    fn wait_one(&self, inner: &mut Inner) -> Result<(ExpertKey, bool)> {
        if inner.in_flight == 0 {
            return Err(Error::Invalid(
                "the slab cache is full of pinned experts and no read is in flight (budget too small)".into(),
            ));
        }
        let t = Instant::now();
        let done = self.io.next_completion()?;
        self.stall_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.land(inner, done)
    }

    fn drain_ready(&self, inner: &mut Inner) -> Result<()> {
        while let Ok(done) = self.io.completions().try_recv() {
            self.land(inner, done)?;
        }
        Ok(())
    }

    fn view<'a>(&'a self, inner: &'a Inner, key: ExpertKey) -> Result<ExpertView<'a>> {
        let (slot, ready, _) =
            self.cache.entry(key).ok_or_else(|| Error::Invalid(format!("{key} not resident")))?;
        debug_assert!(ready);
        let token = inner.slots[slot as usize]
            .as_ref()
            .ok_or_else(|| Error::Invalid(format!("{key}: slot lent out")))?;
        let layout = self.layer(key)?.view(key.expert as usize, &|f| self.files[f].read_align());
        ExpertView::from_slab(&layout, self.io.arena().bytes(token))
    }

    fn run_layer(
        &self,
        inner: &mut Inner,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut ExpertBatchFn<'_>,
        pinned: &mut Keys,
    ) -> Result<()> {
        self.drain_ready(inner)?;
        self.release_retired(inner)?;
        // Prefetches for layers already passed are stale: drop them if still queued.
        for (k, c) in &inner.prefetches {
            if (k.layer as usize) < layer {
                c.cancel();
            }
        }
        let (mut ready, mut waiting) = (Keys::new(), Keys::new());
        for &(e, w) in experts {
            let key = ExpertKey::new(layer as u16, e as u16);
            let lookup = loop {
                match self.cache.acquire(key, step, w) {
                    Lookup::Full if !ready.is_empty() || !waiting.is_empty() => {
                        // The layer needs more experts than fit (a prefill chunk's union): run
                        // and unpin the ones held so far, then carry on.
                        self.flush(inner, &mut ready, &mut waiting, f, pinned)?;
                    }
                    // Every slot is loading (prefetches): a landing read frees one.
                    Lookup::Full => {
                        self.wait_one(inner)?;
                    }
                    other => break other,
                }
            };
            pinned.push(key);
            match lookup {
                Lookup::Hit(_) => ready.push(key),
                Lookup::Pending(_) => waiting.push(key),
                Lookup::Miss { slot, .. } => {
                    self.submit(inner, key, slot, Priority::Demand)?;
                    waiting.push(key);
                }
                Lookup::Full => unreachable!("retried above"),
            }
        }
        self.flush(inner, &mut ready, &mut waiting, f, pinned)
    }

    /// Runs every held expert: the ready ones now as one batch, the others in batches of those
    /// that have landed, in the order they land.
    fn flush(
        &self,
        inner: &mut Inner,
        ready: &mut Keys,
        waiting: &mut Keys,
        f: &mut ExpertBatchFn<'_>,
        pinned: &mut Keys,
    ) -> Result<()> {
        self.run_batch(inner, ready, f, pinned)?;
        while !waiting.is_empty() {
            let mut landed = Keys::new();
            waiting.retain(|k| {
                let done = self.cache.entry(*k).is_some_and(|e| e.1);
                if done {
                    landed.push(*k);
                }
                !done
            });
            if landed.is_empty() {
                self.wait_one(inner)?;
                continue;
            }
            self.run_batch(inner, &mut landed, f, pinned)?;
        }
        Ok(())
    }

    /// Hands the (ready) `keys` to `f` as one batch, then releases them.
    fn run_batch(
        &self,
        inner: &Inner,
        keys: &mut Keys,
        f: &mut ExpertBatchFn<'_>,
        pinned: &mut Keys,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let batch = keys
            .iter()
            .map(|&key| Ok((key.expert as usize, self.view(inner, key)?)))
            .collect::<Result<SmallVec<[_; INLINE_KEYS]>>>()?;
        f(&batch)?;
        for key in keys.drain(..) {
            self.release(key, pinned);
        }
        Ok(())
    }

    fn release(&self, key: ExpertKey, pinned: &mut Keys) {
        self.cache.release(key);
        if let Some(i) = pinned.iter().position(|k| *k == key) {
            pinned.swap_remove(i);
        }
        if matches!(self.mode, CacheMode::Os | CacheMode::None) {
            self.cache.invalidate(key);
        }
    }
}

impl ExpertSource for StreamingExperts {
    fn with_experts(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut dyn FnMut(usize, &ExpertView<'_>) -> Result<()>,
    ) -> Result<()> {
        self.with_expert_batches(layer, experts, step, &mut |batch| {
            batch.iter().try_for_each(|(e, view)| f(*e, view))
        })
    }

    fn with_expert_batches(
        &self,
        layer: usize,
        experts: &[(usize, f32)],
        step: u64,
        f: &mut ExpertBatchFn<'_>,
    ) -> Result<()> {
        let mut inner = self.inner.lock();
        let mut pinned = Keys::new();
        let result = self.run_layer(&mut inner, layer, experts, step, f, &mut pinned);
        // On error, give back every pin so the cache stays consistent for the caller.
        for key in pinned {
            self.cache.release(key);
        }
        result
    }

    fn on_route(&self, layer: usize, step: u64, experts: &[(usize, f32)]) {
        let mut route = self.routed.lock();
        route.clear();
        route.extend(experts.iter().map(|&(e, w)| (e as u16, w)));
        self.cache.on_route(layer as u16, step, &route);
        if let Some(d) = self.depth.lock().as_mut() {
            d.on_route(layer, step, experts);
        }
        if let Some(u) = self.usage.lock().as_mut() {
            u.record(layer, experts.iter().map(|x| x.0));
        }
        if matches!(self.prefetch, PrefetchMode::History(_)) {
            let chosen: Vec<u16> = route.iter().map(|r| r.0).collect();
            self.history.lock().record(layer, step, &chosen);
        }
    }

    fn prefetch_next(
        &self,
        layer: usize,
        k: usize,
        step: u64,
        gate: &mut GatePrediction<'_>,
    ) -> Result<()> {
        // Only a cache of ours can keep what is read ahead.
        if !matches!(self.mode, CacheMode::Policy(_)) {
            return Ok(());
        }
        let mut buffers = self.ahead.lock();
        let AheadBuffers { predicted, selected } = &mut *buffers;
        match self.prefetch {
            PrefetchMode::None => return Ok(()),
            PrefetchMode::Gate => gate(predicted)?,
            PrefetchMode::History(kind) => {
                let experts = self.history.lock().predict(kind, layer, k);
                predicted.clear();
                predicted.extend(experts.into_iter().map(|e| (e as usize, 0.0)));
            }
        }
        let predicted: &[(usize, f32)] = match self.depth.lock().as_mut() {
            Some(d) => {
                d.select_into(layer, step, predicted, selected);
                selected
            }
            None => predicted,
        };
        self.prefetch(layer, predicted, step);
        Ok(())
    }
}

impl StreamingExperts {
    /// Reads `experts` of `layer` ahead at low priority, those not resident or loading.
    fn prefetch(&self, layer: usize, experts: &[(usize, f32)], step: u64) {
        let mut inner = self.inner.lock();
        for &(e, _) in experts {
            let key = ExpertKey::new(layer as u16, e as u16);
            if let Some((slot, _)) = self.cache.prefetch(key, step) {
                match self.submit(&mut inner, key, slot, Priority::Prefetch) {
                    Ok(Some(c)) => inner.prefetches.push((key, c)),
                    Ok(None) => {}
                    // `submit` dropped the entry; the expert is read on demand if needed.
                    Err(e) => tracing::warn!("prefetch of {key} could not be submitted: {e}"),
                }
            }
        }
    }
}
