//! `ExpertCache`: the slot table. A byte budget becomes a number of equal slots; each resident
//! expert has one, in state Loading or Ready, with a pin count. Pinned and loading entries are
//! never offered to the policy as victims; a second request for an expert that is loading gets
//! `Pending` (single-flight: one read per key) instead of a second read.
//!
//! The table owns no memory: a `SlotIndex` names a slot of whatever arena the engine keeps.

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

use crate::error::CacheError;
use crate::key::{AccessCtx, ExpertKey};
use crate::policy::Policy;

/// Index of a slot in the engine's arena.
pub type SlotIndex = u32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Loading,
    Ready,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: SlotIndex,
    state: State,
    pins: u32,
    /// Loaded by a prefetch and not used by a demand access yet.
    prefetched_unused: bool,
    /// Predicted for the layer being read ahead (a prefetch asked for it) and not used since.
    predicted: bool,
    /// The access count when it was inserted.
    since: u64,
    /// Pinned for good (`pin_resident`): unknown to the policy, never evicted.
    resident: bool,
}

impl Entry {
    fn new(slot: SlotIndex, pins: u32, prefetched: bool, since: u64) -> Self {
        Self {
            slot,
            state: State::Loading,
            pins,
            prefetched_unused: prefetched,
            predicted: prefetched,
            since,
            resident: false,
        }
    }
}

/// What a demand access found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Resident and ready; pinned for the caller, who must `release` it.
    Hit(SlotIndex),
    /// Being loaded (by a prefetch or another requester); pinned for the caller, who must wait
    /// for the load (`wait_ready`, or the engine's completion) and then `release` it.
    Pending(SlotIndex),
    /// Not resident: `slot` is reserved for it (Loading, pinned). The caller reads the slab into
    /// it, calls `complete`, uses it, and calls `release`. `evicted` was dropped to make room.
    Miss {
        /// Where to read the slab.
        slot: SlotIndex,
        /// The expert whose slot this was.
        evicted: Option<ExpertKey>,
    },
    /// Every slot is pinned or loading: nothing can be evicted now.
    Full,
}

/// Counters since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Demand accesses served without a new read (ready, or already loading): `demand_hits` +
    /// `prefetch_used`.
    pub hits: u64,
    /// Hits on an expert the cache kept from an earlier demand access (or from a prefetch that
    /// was already used once): what the policy's choices earned.
    pub demand_hits: u64,
    /// Of the hits, those that found the expert still loading (single-flight).
    pub pending_hits: u64,
    /// Of `prefetch_used`, those whose read had not finished when the expert was needed (the
    /// compute waited for part of the read).
    pub prefetch_late: u64,
    /// Demand accesses that needed a read.
    pub misses: u64,
    /// Experts evicted to make room.
    pub evictions: u64,
    /// Prefetch reads started.
    pub prefetch_issued: u64,
    /// Prefetched experts later used by a demand access.
    pub prefetch_used: u64,
    /// Prefetched experts evicted or failed without ever being used.
    pub prefetch_wasted: u64,
    /// Loads that failed.
    pub load_errors: u64,
    /// Bytes read into slots (misses + prefetches, whole slabs).
    pub bytes_read: u64,
    /// Slots held by experts pinned for good (`pin_resident`).
    pub pinned: u64,
}

impl CacheStats {
    /// hits / (hits + misses), 0 when nothing was accessed. Counts a prefetched expert that
    /// was used as a hit, though it was read for this access: see `demand_hit_ratio`.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.hits, self.hits + self.misses)
    }

    /// demand_hits / accesses: the share of accesses served by what the cache kept, reads
    /// made for them (misses and used prefetches) not counted.
    pub fn demand_hit_ratio(&self) -> f64 {
        ratio(self.demand_hits, self.hits + self.misses)
    }

    /// Slabs read: demand misses, prefetches (used or not) and pins.
    pub fn reads(&self) -> u64 {
        self.misses + self.prefetch_issued + self.pinned
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[derive(Debug)]
struct Inner {
    map: HashMap<ExpertKey, Entry>,
    free: Vec<SlotIndex>,
    policy: Box<dyn Policy>,
    stats: CacheStats,
    seq: u64,
    /// Eviction knows about prefetches (see `take_slot`).
    prefetch_aware: bool,
    /// The layer of the latest demand access.
    current: Option<u16>,
    /// Per layer, the access count of its latest demand access.
    visited: Vec<u64>,
    /// The layer the latest prefetch read ahead for.
    ahead: Option<u16>,
    /// Keys loaded by a prefetch and not used yet (few: about a layer's worth).
    unused_prefetches: Vec<ExpertKey>,
    /// Slots the cache may use now (`set_limit`); the others are retired.
    limit: usize,
    /// Retired slots: held by no entry, not free.
    retired: Vec<SlotIndex>,
    /// Slots retired since `take_retired` last handed them out (to give their memory back).
    newly_retired: Vec<SlotIndex>,
}

impl std::fmt::Debug for dyn Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The byte-budgeted slot table. All methods take `&self`; it is `Send + Sync`.
#[derive(Debug)]
pub struct ExpertCache {
    inner: Mutex<Inner>,
    loaded: Condvar,
    capacity: usize,
    slab_bytes: u64,
    /// Slots that must stay free of pins: one layer's experts at once.
    min_unpinned: usize,
}

impl ExpertCache {
    /// A cache of `budget_bytes / slab_bytes` slots. Refuses a budget that cannot hold one
    /// layer's `top_k` experts at once, saying the minimum.
    pub fn new(
        budget_bytes: u64,
        slab_bytes: u64,
        top_k: usize,
        policy: Box<dyn Policy>,
    ) -> Result<Self, CacheError> {
        if slab_bytes == 0 {
            return Err(CacheError::Invalid("slab size must be positive".into()));
        }
        Self::with_slots((budget_bytes / slab_bytes) as usize, slab_bytes, top_k, policy)
    }

    /// A cache of exactly `slots` slots.
    pub fn with_slots(
        slots: usize,
        slab_bytes: u64,
        top_k: usize,
        policy: Box<dyn Policy>,
    ) -> Result<Self, CacheError> {
        let min = top_k.max(1);
        if slots < min {
            return Err(CacheError::BudgetTooSmall {
                slots,
                min,
                min_bytes: min as u64 * slab_bytes,
            });
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                map: HashMap::with_capacity(slots),
                free: (0..slots as SlotIndex).rev().collect(),
                policy,
                stats: CacheStats::default(),
                seq: 0,
                prefetch_aware: true,
                current: None,
                visited: Vec::new(),
                ahead: None,
                unused_prefetches: Vec::new(),
                limit: slots,
                retired: Vec::new(),
                newly_retired: Vec::new(),
            }),
            loaded: Condvar::new(),
            capacity: slots,
            slab_bytes,
            min_unpinned: min,
        })
    }

    /// Whether eviction takes prefetches into account (default: yes). When it does, a slot
    /// is taken first from a prefetched expert left unused once its layer has passed, and
    /// never from an expert predicted for the layer being read ahead, or prefetched for the
    /// current one, while anything else can go. Off: the policy alone chooses.
    pub fn set_prefetch_aware(&self, on: bool) {
        self.inner.lock().prefetch_aware = on;
    }

    /// Takes a free slot for `key` for good: the entry is Loading and pinned, never offered
    /// to the policy, never evicted. The caller reads the slab into the slot and calls
    /// `complete`. `None` when `key` is resident already, or no free slot is left beyond the
    /// top-k slots the cache keeps for everything else.
    pub fn pin_resident(&self, key: ExpertKey) -> Option<SlotIndex> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if inner.map.contains_key(&key)
            || inner.limit - inner.stats.pinned as usize <= self.min_unpinned
        {
            return None;
        }
        let slot = inner.free.pop()?;
        let mut entry = Entry::new(slot, 1, false, inner.seq);
        entry.resident = true;
        inner.map.insert(key, entry);
        inner.stats.pinned += 1;
        inner.stats.bytes_read += self.slab_bytes;
        Some(slot)
    }

    /// Lets the cache use only `limit` of its slots (at least the pins and one layer's top-k;
    /// at most its capacity). Shrinking retires free slots first, then evicts the policy's
    /// victims; what cannot be evicted now (in use, loading) is retired as soon as a slot is
    /// next taken. Growing brings retired slots back as free ones. Returns the limit set.
    pub fn set_limit(&self, limit: usize) -> usize {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let limit = limit.clamp(self.min_unpinned + inner.stats.pinned as usize, self.capacity);
        inner.limit = limit;
        while self.capacity - inner.retired.len() < limit {
            let Some(slot) = inner.retired.pop() else { break };
            inner.newly_retired.retain(|&s| s != slot);
            inner.free.push(slot);
        }
        while self.capacity - inner.retired.len() > limit {
            let slot = match inner.free.pop() {
                Some(slot) => slot,
                None => match Self::evict_one(inner) {
                    Some((slot, _)) => slot,
                    None => break,
                },
            };
            inner.retired.push(slot);
            inner.newly_retired.push(slot);
        }
        limit
    }

    /// Slots usable now (the capacity unless `set_limit` lowered it).
    pub fn limit(&self) -> usize {
        self.inner.lock().limit
    }

    /// Slots retired since the last call, whose memory the owner may give back.
    pub fn take_retired(&self) -> Vec<SlotIndex> {
        std::mem::take(&mut self.inner.lock().newly_retired)
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes per slot.
    pub fn slab_bytes(&self) -> u64 {
        self.slab_bytes
    }

    /// The policy's name.
    pub fn policy_name(&self) -> &'static str {
        self.inner.lock().policy.name()
    }

    /// A demand access to `key` for token `step` with router weight `weight`.
    pub fn acquire(&self, key: ExpertKey, step: u64, weight: f32) -> Lookup {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let ctx = AccessCtx { step, seq: inner.seq, weight, demand: true };
        inner.seq += 1;
        inner.current = Some(key.layer);
        let layer = key.layer as usize;
        if inner.visited.len() <= layer {
            inner.visited.resize(layer + 1, 0);
        }
        inner.visited[layer] = inner.seq;
        if let Some(e) = inner.map.get_mut(&key) {
            e.pins += 1;
            e.predicted = false;
            inner.stats.hits += 1;
            if e.prefetched_unused {
                e.prefetched_unused = false;
                inner.unused_prefetches.retain(|k| *k != key);
                inner.stats.prefetch_used += 1;
                if e.state == State::Loading {
                    inner.stats.prefetch_late += 1;
                }
            } else {
                inner.stats.demand_hits += 1;
            }
            let (slot, state) = (e.slot, e.state);
            if !e.resident {
                inner.policy.on_hit(key, &ctx);
            }
            return match state {
                State::Ready => Lookup::Hit(slot),
                State::Loading => {
                    inner.stats.pending_hits += 1;
                    Lookup::Pending(slot)
                }
            };
        }
        let Some((slot, evicted)) = Self::take_slot(inner) else { return Lookup::Full };
        inner.stats.misses += 1;
        inner.stats.bytes_read += self.slab_bytes;
        inner.map.insert(key, Entry::new(slot, 1, false, inner.seq));
        inner.policy.on_insert(key, &ctx);
        Lookup::Miss { slot, evicted }
    }

    /// Reserves a slot to prefetch `key` unless it is resident or loading, nothing can be
    /// evicted, or pins leave fewer than two layers' top-k slots. The entry is Loading and
    /// unpinned; call `complete` when the read finishes.
    /// A resident `key` is marked as predicted for its layer instead.
    pub fn prefetch(&self, key: ExpertKey, step: u64) -> Option<(SlotIndex, Option<ExpertKey>)> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if inner.ahead != Some(key.layer) {
            inner.ahead = Some(key.layer);
            // What was predicted for an earlier layer is no longer protected.
            inner.map.values_mut().for_each(|e| e.predicted = false);
        }
        if let Some(e) = inner.map.get_mut(&key) {
            e.predicted = true;
            return None;
        }
        // Pins can leave the policy too few slots to read ahead in: with fewer than a layer
        // being read ahead beside the layer in use, a prefetch would evict what the current
        // layer needs.
        let pinned = inner.stats.pinned as usize;
        if pinned > 0 && inner.limit.saturating_sub(pinned) < 2 * self.min_unpinned {
            return None;
        }
        let (slot, evicted) = Self::take_slot(inner)?;
        let ctx = AccessCtx { step, seq: inner.seq, weight: 0.0, demand: false };
        inner.stats.prefetch_issued += 1;
        inner.stats.bytes_read += self.slab_bytes;
        inner.map.insert(key, Entry::new(slot, 0, true, inner.seq));
        inner.unused_prefetches.push(key);
        inner.policy.on_insert(key, &ctx);
        Some((slot, evicted))
    }

    /// A free slot, or one freed by evicting a ready, unpinned entry: with prefetch-aware
    /// eviction, a prefetched expert left unused by its layer's visit (the demand has moved on
    /// to another layer), else the policy's victim among entries not wanted ahead (predicted
    /// for the layer being read ahead, or prefetched for a layer not visited yet), else the
    /// policy's victim.
    fn take_slot(inner: &mut Inner) -> Option<(SlotIndex, Option<ExpertKey>)> {
        loop {
            let capacity = inner.map.len() + inner.free.len() + inner.retired.len();
            let taken = match inner.free.pop() {
                Some(slot) => (slot, None),
                None => Self::evict_one(inner)?,
            };
            // Over the limit (it was lowered while slots were in use): retire this one.
            if capacity - inner.retired.len() > inner.limit {
                inner.retired.push(taken.0);
                inner.newly_retired.push(taken.0);
                continue;
            }
            return Some(taken);
        }
    }

    /// Evicts a ready, unpinned entry (see `take_slot`) and returns its slot.
    fn evict_one(inner: &mut Inner) -> Option<(SlotIndex, Option<ExpertKey>)> {
        let map = &inner.map;
        let evictable =
            |k: ExpertKey| map.get(&k).is_some_and(|e| e.state == State::Ready && e.pins == 0);
        let victim = if inner.prefetch_aware {
            let (current, ahead, visited) = (inner.current, inner.ahead, &inner.visited);
            let passed = |k: ExpertKey, e: &Entry| {
                Some(k.layer) != current
                    && visited.get(k.layer as usize).is_some_and(|&v| v > e.since)
            };
            let stale = inner
                .unused_prefetches
                .iter()
                .position(|&k| evictable(k) && map.get(&k).is_some_and(|e| passed(k, e)));
            match stale {
                Some(i) => {
                    let key = inner.unused_prefetches[i];
                    inner.policy.on_remove(key);
                    Some(key)
                }
                None => {
                    let wanted = |k: ExpertKey| {
                        map.get(&k).is_some_and(|e| {
                            (e.predicted && Some(k.layer) == ahead)
                                || (e.prefetched_unused && !passed(k, e))
                        })
                    };
                    let unwanted = |k: ExpertKey| evictable(k) && !wanted(k);
                    inner.policy.victim(&unwanted).or_else(|| inner.policy.victim(&evictable))
                }
            }
        } else {
            inner.policy.victim(&evictable)
        }?;
        let entry = inner.map.remove(&victim).expect("policy returned a resident victim");
        debug_assert!(entry.pins == 0 && entry.state == State::Ready, "evicted a pinned entry");
        inner.stats.evictions += 1;
        if entry.prefetched_unused {
            inner.stats.prefetch_wasted += 1;
            inner.unused_prefetches.retain(|k| *k != victim);
        }
        Some((entry.slot, Some(victim)))
    }

    /// The read for `key` finished. On success the entry becomes Ready; on failure it is
    /// dropped (its slot freed) so a later access retries. Wakes `wait_ready` callers.
    pub fn complete(&self, key: ExpertKey, ok: bool) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if ok {
            if let Some(e) = inner.map.get_mut(&key) {
                e.state = State::Ready;
            }
        } else if let Some(e) = inner.map.remove(&key) {
            inner.stats.load_errors += 1;
            if e.prefetched_unused {
                inner.stats.prefetch_wasted += 1;
                inner.unused_prefetches.retain(|k| *k != key);
            }
            inner.free.push(e.slot);
            if e.resident {
                inner.stats.pinned -= 1;
            } else {
                inner.policy.on_remove(key);
            }
        }
        drop(g);
        self.loaded.notify_all();
    }

    /// A prefetch of `key` was cancelled before its read was submitted: the entry and its
    /// accounting go (it was never read, so it is neither issued bytes nor waste).
    pub fn cancel(&self, key: ExpertKey) {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        if let Some(e) = inner.map.get(&key) {
            if e.state != State::Loading || !e.prefetched_unused || e.pins > 0 {
                return;
            }
            let e = inner.map.remove(&key).expect("present");
            inner.free.push(e.slot);
            inner.unused_prefetches.retain(|k| *k != key);
            inner.stats.prefetch_issued -= 1;
            inner.stats.bytes_read -= self.slab_bytes;
            inner.policy.on_remove(key);
        }
        drop(g);
        self.loaded.notify_all();
    }

    /// Drops `key` if it is ready and unpinned (for modes that keep nothing between uses).
    /// Returns whether it was dropped.
    pub fn invalidate(&self, key: ExpertKey) -> bool {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        match inner.map.get(&key) {
            Some(e) if e.state == State::Ready && e.pins == 0 => {
                let e = inner.map.remove(&key).expect("present");
                inner.free.push(e.slot);
                inner.unused_prefetches.retain(|k| *k != key);
                inner.policy.on_remove(key);
                true
            }
            _ => false,
        }
    }

    /// Blocks until `key` is no longer loading. True if it is resident and ready.
    pub fn wait_ready(&self, key: ExpertKey) -> bool {
        let mut g = self.inner.lock();
        loop {
            match g.map.get(&key).map(|e| e.state) {
                Some(State::Ready) => return true,
                None => return false,
                Some(State::Loading) => self.loaded.wait(&mut g),
            }
        }
    }

    /// Drops one pin of `key` taken by `acquire`.
    pub fn release(&self, key: ExpertKey) {
        let mut g = self.inner.lock();
        if let Some(e) = g.map.get_mut(&key) {
            debug_assert!(e.pins > 0, "release of an unpinned expert {key}");
            e.pins = e.pins.saturating_sub(1);
        }
    }

    /// Tells the policy what the router chose at `layer` for `step`.
    pub fn on_route(&self, layer: u16, step: u64, experts: &[(u16, f32)]) {
        self.inner.lock().policy.on_route(layer, step, experts);
    }

    /// Hands the policy use counts learned on earlier runs ([`Policy::on_prior`]).
    pub fn learn_prior(&self, usage: &crate::usage::ExpertUsage) {
        self.inner.lock().policy.on_prior(usage);
    }

    /// Slot, readiness and pin count of `key`, if resident.
    pub fn entry(&self, key: ExpertKey) -> Option<(SlotIndex, bool, u32)> {
        self.inner.lock().map.get(&key).map(|e| (e.slot, e.state == State::Ready, e.pins))
    }

    /// Experts resident or loading now.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// True when nothing is resident.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks the table at rest (nothing loading, nothing in use): every entry ready and
    /// unpinned, every slot either free or held by exactly one entry. Returns what is wrong.
    pub fn audit_idle(&self) -> Result<(), String> {
        let g = self.inner.lock();
        let mut seen = vec![false; self.capacity];
        for (key, e) in &g.map {
            if e.state != State::Ready || e.pins != u32::from(e.resident) {
                return Err(format!("{key}: {:?} with {} pins while idle", e.state, e.pins));
            }
            let s = e.slot as usize;
            if s >= self.capacity || std::mem::replace(&mut seen[s], true) {
                return Err(format!("{key}: slot {s} out of range or held twice"));
            }
        }
        for &s in g.free.iter().chain(&g.retired) {
            let s = s as usize;
            if s >= self.capacity || std::mem::replace(&mut seen[s], true) {
                return Err(format!("free or retired slot {s} out of range or also in use"));
            }
        }
        if let Some(s) = seen.iter().position(|x| !x) {
            return Err(format!("slot {s} is neither free nor held (lost)"));
        }
        let unused = g.map.iter().filter(|(_, e)| e.prefetched_unused).count();
        if unused != g.unused_prefetches.len()
            || g.unused_prefetches
                .iter()
                .any(|k| !g.map.get(k).is_some_and(|e| e.prefetched_unused))
        {
            return Err(format!(
                "{unused} unused prefetched entries, {} listed",
                g.unused_prefetches.len()
            ));
        }
        Ok(())
    }

    /// Counters so far.
    pub fn stats(&self) -> CacheStats {
        self.inner.lock().stats
    }
}
