//! The slot table and policies against simple reference models.

use std::collections::{HashMap, HashSet};

use floe_cache::policy::{build, PolicyConfig, PolicyKind};
use floe_cache::sim::simulate;
use floe_cache::trace::{LayerRoute, Phase, PhaseFilter, Trace};
use floe_cache::{CacheError, ExpertCache, ExpertKey, Lookup, MoeShape};
use proptest::prelude::*;

const SHAPE: MoeShape = MoeShape { layers: 4, experts: 12, top_k: 2 };

fn policy(kind: PolicyKind, cap: usize, future: &[ExpertKey]) -> Box<dyn floe_cache::Policy> {
    build(kind, cap, SHAPE, &PolicyConfig::default(), Some(future)).unwrap()
}

fn key(k: (u16, u16)) -> ExpertKey {
    ExpertKey::new(k.0 % SHAPE.layers, k.1 % SHAPE.experts)
}

/// A naive LRU: a Vec from least to most recent.
struct NaiveLru {
    order: Vec<ExpertKey>,
    cap: usize,
}

impl NaiveLru {
    /// Returns (hit, evicted).
    fn access(&mut self, k: ExpertKey) -> (bool, Option<ExpertKey>) {
        if let Some(i) = self.order.iter().position(|x| *x == k) {
            self.order.remove(i);
            self.order.push(k);
            return (true, None);
        }
        let evicted = (self.order.len() == self.cap).then(|| self.order.remove(0));
        self.order.push(k);
        (false, evicted)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn lru_equals_a_naive_lru(
        cap in 2usize..10,
        accesses in prop::collection::vec((0u16..4, 0u16..12), 1..300),
    ) {
        let keys: Vec<ExpertKey> = accesses.into_iter().map(key).collect();
        let cache = ExpertCache::with_slots(cap, 1, 2, policy(PolicyKind::Lru, cap, &keys)).unwrap();
        let mut naive = NaiveLru { order: Vec::new(), cap };
        for &k in &keys {
            let (hit, evicted) = naive.access(k);
            match cache.acquire(k, 0, 0.5) {
                Lookup::Hit(_) => prop_assert!(hit, "{k}: cache hit, naive miss"),
                Lookup::Miss { evicted: e, .. } => {
                    prop_assert!(!hit, "{k}: cache miss, naive hit");
                    prop_assert_eq!(e, evicted);
                    cache.complete(k, true);
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            }
            cache.release(k);
        }
    }

    /// Random interleavings of demand accesses (some held pinned for a while), prefetches,
    /// completions and releases: no policy ever holds more than its capacity, evicts a pinned or
    /// loading expert, or says Full while something is evictable.
    #[test]
    fn no_policy_exceeds_capacity_or_evicts_pinned(
        kind_i in 0usize..7,
        cap in 2usize..8,
        ops in prop::collection::vec((0u8..5, 0u16..4, 0u16..12), 1..300),
    ) {
        let kind = PolicyKind::ALL[kind_i]; // every online policy (Belady is the last)
        let cache = ExpertCache::with_slots(cap, 1, 2, policy(kind, cap, &[])).unwrap();
        let mut pins: HashMap<ExpertKey, u32> = HashMap::new();
        let mut loading: HashSet<ExpertKey> = HashSet::new();
        let mut resident: HashSet<ExpertKey> = HashSet::new();
        for (op, l, e) in ops {
            let k = key((l, e));
            match op {
                0 | 1 => {
                    let r = cache.acquire(k, 0, 0.3);
                    match r {
                        Lookup::Hit(_) | Lookup::Pending(_) => {
                            prop_assert!(resident.contains(&k));
                            *pins.entry(k).or_default() += 1;
                        }
                        Lookup::Miss { evicted, .. } => {
                            if let Some(v) = evicted {
                                prop_assert!(pins.get(&v).copied().unwrap_or(0) == 0, "{kind}: evicted pinned {v}");
                                prop_assert!(!loading.contains(&v), "{kind}: evicted loading {v}");
                                resident.remove(&v);
                            }
                            resident.insert(k);
                            loading.insert(k);
                            *pins.entry(k).or_default() += 1;
                        }
                        Lookup::Full => {
                            let free = resident.iter().any(|r| pins.get(r).copied().unwrap_or(0) == 0 && !loading.contains(r));
                            prop_assert!(!free && resident.len() >= cap, "{kind}: Full with room");
                        }
                    }
                }
                2 => {
                    if let Some((_, evicted)) = cache.prefetch(k, 0) {
                        if let Some(v) = evicted {
                            prop_assert!(pins.get(&v).copied().unwrap_or(0) == 0 && !loading.contains(&v));
                            resident.remove(&v);
                        }
                        resident.insert(k);
                        loading.insert(k);
                    }
                }
                3 => {
                    // Finish one load, sometimes as a failure.
                    if let Some(&d) = loading.iter().next() {
                        let ok = (l + e) % 5 != 0;
                        cache.complete(d, ok);
                        loading.remove(&d);
                        if !ok {
                            resident.remove(&d);
                            pins.remove(&d);
                        }
                    }
                }
                _ => {
                    if let Some((&p, _)) = pins.iter().find(|(_, &n)| n > 0) {
                        cache.release(p);
                        *pins.get_mut(&p).unwrap() -= 1;
                    }
                }
            }
            prop_assert!(cache.len() <= cap, "{kind}: {} > {cap}", cache.len());
            prop_assert_eq!(cache.len(), resident.len());
        }
    }

    /// On unit-size traces Belady's hit count is at least every policy's.
    #[test]
    fn belady_is_never_beaten(
        cap in 2usize..16,
        routes in prop::collection::vec((0u16..4, prop::collection::hash_set(0u16..12, 1..3)), 4..120),
    ) {
        let trace = Trace {
            shape: SHAPE,
            expert_bytes: Vec::new(),
            routes: routes
                .into_iter()
                .enumerate()
                .map(|(i, (l, set))| LayerRoute {
                    phase: Phase::Decode,
                    step: i as u64 / 4,
                    layer: l,
                    experts: set.into_iter().map(|e| (e, 0.5)).collect(),
                })
                .collect(),
        };
        let cfg = PolicyConfig::default();
        let best = simulate(&trace, PhaseFilter::All, PolicyKind::Belady, cap, &cfg).unwrap();
        for kind in PolicyKind::ALL {
            let r = simulate(&trace, PhaseFilter::All, kind, cap, &cfg).unwrap();
            prop_assert!(r.hits <= best.hits, "{kind} {} > belady {}", r.hits, best.hits);
            prop_assert_eq!(r.accesses, best.accesses);
        }
    }
}

#[test]
fn single_flight_issues_one_read_per_key() {
    let keys: Vec<ExpertKey> =
        (0..4).flat_map(|l| (0..6).map(move |e| ExpertKey::new(l, e))).collect();
    let cache = std::sync::Arc::new(
        ExpertCache::with_slots(keys.len(), 1, 2, policy(PolicyKind::Lru, keys.len(), &[]))
            .unwrap(),
    );
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (cache, mut keys) = (cache.clone(), keys.clone());
            std::thread::spawn(move || {
                let n = keys.len();
                keys.rotate_left((t as usize * 5) % n);
                for k in keys {
                    match cache.acquire(k, t, 0.5) {
                        Lookup::Miss { .. } => {
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            cache.complete(k, true);
                        }
                        Lookup::Pending(_) => assert!(cache.wait_ready(k)),
                        Lookup::Hit(_) => {}
                        Lookup::Full => panic!("capacity holds every key"),
                    }
                    assert_eq!(cache.entry(k).map(|e| e.1), Some(true), "used before ready");
                    cache.release(k);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.misses, keys.len() as u64, "one read per key");
    assert_eq!(s.hits + s.misses, 6 * keys.len() as u64);
}

#[test]
fn a_budget_below_top_k_is_refused_with_the_minimum() {
    let err = ExpertCache::new(3 * 4096, 4096, 8, policy(PolicyKind::Lru, 3, &[])).unwrap_err();
    assert!(matches!(err, CacheError::BudgetTooSmall { slots: 3, min: 8, min_bytes: 32768 }));
    assert!(err.to_string().contains("32768"), "{err}");
}

#[test]
fn prefetch_accounting() {
    let cache = ExpertCache::with_slots(2, 10, 1, policy(PolicyKind::Lru, 2, &[])).unwrap();
    // The policy alone chooses victims here (prefetch-aware eviction is tested below).
    cache.set_prefetch_aware(false);
    let (a, b, c) = (ExpertKey::new(0, 1), ExpertKey::new(0, 2), ExpertKey::new(0, 3));
    assert!(cache.prefetch(a, 0).is_some());
    assert!(cache.prefetch(a, 0).is_none(), "already loading");
    assert!(matches!(cache.acquire(a, 0, 0.5), Lookup::Pending(_)));
    cache.complete(a, true);
    cache.release(a);
    assert!(cache.prefetch(b, 0).is_some());
    cache.complete(b, true);
    // c evicts the LRU entry, which is a (used), then b (never used: wasted).
    assert!(matches!(cache.acquire(c, 1, 0.5), Lookup::Miss { evicted: Some(k), .. } if k == a));
    cache.complete(c, true);
    cache.release(c);
    assert!(matches!(cache.acquire(a, 2, 0.5), Lookup::Miss { evicted: Some(k), .. } if k == b));
    let s = cache.stats();
    assert_eq!((s.prefetch_issued, s.prefetch_used, s.prefetch_wasted), (2, 1, 1));
    assert_eq!(s.pending_hits, 1);
    // a's prefetch was still loading when a was needed; nothing was kept from a demand access.
    assert_eq!((s.demand_hits, s.prefetch_late), (0, 1));
    assert_eq!(s.bytes_read, 40);
    assert_eq!(s.reads(), 4);
    cache.complete(a, true);
    cache.release(a);
    assert!(matches!(cache.acquire(a, 3, 0.5), Lookup::Hit(_)));
    cache.release(a);
    let s = cache.stats();
    assert_eq!((s.hits, s.demand_hits), (2, 1));
    assert!(
        (s.demand_hit_ratio() - 1.0 / 4.0).abs() < 1e-12 && (s.hit_ratio() - 0.5).abs() < 1e-12
    );
}

/// Loads `key` as a demand access and lets it go.
fn use_once(cache: &ExpertCache, key: ExpertKey, step: u64) -> Lookup {
    let got = cache.acquire(key, step, 0.5);
    cache.complete(key, true);
    cache.release(key);
    got
}

/// An expert the gate predicts for the next layer survives this layer's misses though LRU would
/// take it; a prefetched expert left unused once its layer has passed goes first. Without
/// prefetch-aware eviction, LRU's choices stand.
#[test]
fn prefetch_aware_eviction() {
    for aware in [true, false] {
        let cache = ExpertCache::with_slots(3, 10, 1, policy(PolicyKind::Lru, 3, &[])).unwrap();
        cache.set_prefetch_aware(aware);
        let (r1, a0, b0, c0) = (
            ExpertKey::new(1, 0),
            ExpertKey::new(0, 1),
            ExpertKey::new(0, 2),
            ExpertKey::new(0, 3),
        );
        use_once(&cache, r1, 0);
        use_once(&cache, a0, 1);
        use_once(&cache, b0, 1);
        // During layer 0 the gate predicts r1 (resident: nothing to read) for layer 1.
        assert!(cache.prefetch(r1, 2).is_none());
        let want = if aware { a0 } else { r1 };
        assert!(
            matches!(use_once(&cache, c0, 2), Lookup::Miss { evicted: Some(k), .. } if k == want),
            "aware {aware}"
        );
        cache.audit_idle().unwrap();
    }
    for aware in [true, false] {
        let cache = ExpertCache::with_slots(4, 10, 1, policy(PolicyKind::Lru, 4, &[])).unwrap();
        cache.set_prefetch_aware(aware);
        let (b1, z2, a0, p1, c2) = (
            ExpertKey::new(1, 0),
            ExpertKey::new(2, 0),
            ExpertKey::new(0, 0),
            ExpertKey::new(1, 5),
            ExpertKey::new(2, 9),
        );
        use_once(&cache, b1, 0);
        use_once(&cache, z2, 0);
        use_once(&cache, a0, 1);
        // Read ahead for layer 1, which then uses b1 but not p1.
        assert!(matches!(cache.prefetch(p1, 1), Some((_, None))));
        cache.complete(p1, true);
        assert!(matches!(use_once(&cache, b1, 1), Lookup::Hit(_)));
        // Layer 2's miss: p1 is the youngest but was passed over; LRU takes z2.
        let want = if aware { p1 } else { z2 };
        let got = use_once(&cache, c2, 1);
        assert!(matches!(got, Lookup::Miss { evicted: Some(k), .. } if k == want), "{got:?}");
        assert_eq!(cache.stats().prefetch_wasted, u64::from(aware));
        cache.audit_idle().unwrap();
    }
}

#[test]
fn belady_needs_the_future() {
    let e = build(PolicyKind::Belady, 4, SHAPE, &PolicyConfig::default(), None);
    assert!(e.is_err());
    assert!("nonsense".parse::<PolicyKind>().is_err());
    for k in PolicyKind::ALL {
        assert_eq!(k.name().parse::<PolicyKind>().unwrap(), k);
    }
}

/// Experts pinned for good are hits for every access, never victims, and leave the policy
/// the rest of the slots; pins stop where one layer's top-k would no longer fit.
#[test]
fn resident_pins_are_never_evicted() {
    let cache = ExpertCache::with_slots(4, 10, 2, policy(PolicyKind::Lru, 4, &[])).unwrap();
    let (p, q, r) = (ExpertKey::new(0, 0), ExpertKey::new(0, 1), ExpertKey::new(0, 2));
    assert!(cache.pin_resident(p).is_some());
    assert!(cache.pin_resident(p).is_none(), "already resident");
    assert!(cache.pin_resident(q).is_some());
    assert!(cache.pin_resident(r).is_none(), "two slots stay for the top-k");
    cache.complete(p, true);
    cache.complete(q, true);
    cache.audit_idle().unwrap();
    // Many other experts pass through the two unpinned slots.
    for i in 10..40u16 {
        let k = ExpertKey::new(1, i);
        assert!(matches!(use_once(&cache, k, i as u64), Lookup::Miss { evicted, .. }
            if evicted != Some(p) && evicted != Some(q)));
        assert!(matches!(use_once(&cache, p, i as u64), Lookup::Hit(_)));
    }
    let s = cache.stats();
    assert_eq!((s.pinned, s.demand_hits, s.misses), (2, 30, 30));
    assert_eq!(s.bytes_read, 32 * 10, "the two pins were read once");
    cache.audit_idle().unwrap();
    // A pin whose read failed gives its slot back.
    let cache = ExpertCache::with_slots(3, 10, 2, policy(PolicyKind::Lru, 3, &[])).unwrap();
    assert!(cache.pin_resident(p).is_some());
    cache.complete(p, false);
    assert_eq!(cache.stats().pinned, 0);
    assert!(cache.pin_resident(q).is_some());
}

/// A lowered limit retires free slots, then evicts; a slot in use is retired once released
/// and the next one is taken; a raised limit brings the retired slots back.
#[test]
fn the_slot_limit_shrinks_and_grows_the_cache() {
    let cache = ExpertCache::with_slots(6, 10, 2, policy(PolicyKind::Lru, 6, &[])).unwrap();
    let keys: Vec<ExpertKey> = (0..5).map(|e| ExpertKey::new(0, e)).collect();
    for (i, &k) in keys.iter().enumerate() {
        use_once(&cache, k, i as u64);
    }
    // Hold keys[4] in use while shrinking to 3: the free slot and the two oldest go.
    assert!(matches!(cache.acquire(keys[4], 9, 0.5), Lookup::Hit(_)));
    assert_eq!(cache.set_limit(3), 3);
    assert_eq!(cache.take_retired().len(), 3);
    assert_eq!(cache.len(), 3);
    assert!(cache.entry(keys[0]).is_none() && cache.entry(keys[1]).is_none());
    // Below one layer's top-k is refused: the limit stays at 2.
    assert_eq!(cache.set_limit(1), 2);
    assert_eq!(cache.take_retired().len(), 1);
    cache.release(keys[4]);
    // Still never more than two entries.
    for e in 10..20 {
        use_once(&cache, ExpertKey::new(1, e), e as u64);
        assert!(cache.len() <= 2);
    }
    cache.audit_idle().unwrap();
    assert_eq!(cache.set_limit(6), 6);
    assert!(cache.take_retired().is_empty());
    for e in 20..30 {
        use_once(&cache, ExpertKey::new(1, e), e as u64);
    }
    assert_eq!(cache.len(), 6);
    cache.audit_idle().unwrap();
}

/// Per-layer budgets: each layer gets its largest routing's slots, the rest follows the learned
/// experts' layers (then evenly); the replay is each layer alone through its own cache, and a
/// capacity below the layers' needs is refused.
#[test]
fn per_layer_budgets_follow_the_learned_experts() {
    use floe_cache::sim::{learn_pins, simulate_per_layer, PinSource};
    // Layer 0 reuses two experts; layer 1 cycles through six.
    let routes: Vec<LayerRoute> = (0..40u64)
        .flat_map(|s| {
            [
                LayerRoute {
                    phase: Phase::Decode,
                    step: s,
                    layer: 0,
                    experts: vec![((s % 2) as u16, 0.5)],
                },
                LayerRoute {
                    phase: Phase::Decode,
                    step: s,
                    layer: 1,
                    experts: vec![((s % 6) as u16, 0.5)],
                },
            ]
        })
        .collect();
    let shape = MoeShape { layers: 2, experts: 8, top_k: 1 };
    let trace = Trace { shape, expert_bytes: Vec::new(), routes };
    let (learned, _) = learn_pins(&trace, PhaseFilter::All, PinSource::Hindsight, 4);
    let cfg = PolicyConfig::default();
    let (r, slots) =
        simulate_per_layer(&trace, PhaseFilter::All, PolicyKind::Lru, 6, &cfg, &learned).unwrap();
    // 1 slot each for the largest routing; the four most used experts: layer 0's two (20 uses
    // each) first, then two of layer 1's (about 7 each).
    assert_eq!(slots, vec![3, 3]);
    // Layer 0 then hits after its two first reads; layer 1 (3 LRU slots, a cycle of 6) never.
    assert_eq!((r.misses, r.hits, r.accesses), (2 + 40, 38, 80));
    assert!(
        simulate_per_layer(&trace, PhaseFilter::All, PolicyKind::Lru, 1, &cfg, &learned).is_err()
    );
}

/// With fewer than two layers' top-k slots left beside the pins, nothing is read ahead: a
/// prefetch would evict what the layer in use needs.
#[test]
fn no_prefetch_when_pins_leave_one_layers_room() {
    let cache = ExpertCache::with_slots(6, 10, 2, policy(PolicyKind::Lru, 6, &[])).unwrap();
    let pin = |e| {
        let k = ExpertKey::new(0, e);
        assert!(cache.pin_resident(k).is_some());
        cache.complete(k, true);
    };
    pin(0);
    pin(1);
    // 4 unpinned slots: two layers' top-k, so prefetching still works.
    assert!(cache.prefetch(ExpertKey::new(1, 0), 0).is_some());
    cache.complete(ExpertKey::new(1, 0), true);
    pin(2);
    // 3 unpinned: no more prefetches (a resident one is only marked predicted).
    assert!(cache.prefetch(ExpertKey::new(1, 1), 0).is_none());
    assert!(cache.prefetch(ExpertKey::new(1, 0), 0).is_none());
    assert_eq!(cache.stats().prefetch_issued, 1);
    cache.audit_idle().unwrap();
}

/// A usage file's counts reach the moe policy: of two resident experts this run has used once
/// each, the one earlier runs chose far more often stays; without the counts nothing tells them
/// apart, and the tie goes against it.
#[test]
fn moe_keeps_what_the_prior_says_is_hot() {
    let shape = MoeShape { layers: 1, experts: 8, top_k: 1 };
    let (hot, cold, new) = (ExpertKey::new(0, 6), ExpertKey::new(0, 1), ExpertKey::new(0, 3));
    let mut usage = floe_cache::ExpertUsage::new("test", 1, 8);
    for e in 0..8usize {
        // Experts 6 and 7 were chosen at most visits before, the others now and then.
        for _ in 0..if e >= 6 { 60 } else { 3 } {
            usage.record(0, [e]);
        }
    }
    for with_prior in [true, false] {
        let p = build(PolicyKind::Moe, 2, shape, &PolicyConfig::default(), None).unwrap();
        let cache = ExpertCache::with_slots(2, 10, 1, p).unwrap();
        if with_prior {
            cache.learn_prior(&usage);
        }
        // Routing the policy learns from (busy expert 7, now and then 0, 2 or 4), none of it
        // the two experts under test.
        for step in 0..40u64 {
            let e = if step % 5 == 0 { (step % 3 * 2) as u16 } else { 7 };
            cache.on_route(0, step, &[(e, 1.0)]);
        }
        use_once(&cache, hot, 40);
        use_once(&cache, cold, 40);
        let got = use_once(&cache, new, 40);
        let want = if with_prior { cold } else { hot };
        assert!(
            matches!(got, Lookup::Miss { evicted: Some(k), .. } if k == want),
            "prior {with_prior}: {got:?}"
        );
    }
}

/// Where routing has no memory, an expert's own rate decides, not only its half-octave class:
/// of two experts used once each, in the same class (their rates 18 % and 20.5 % of visits, both
/// 1.41-2x the uniform rate) and the same age, the less used one is evicted. A class-only
/// estimate ties them, and the tie would go against the busier one (the larger key).
#[test]
fn moe_ranks_experts_of_one_class_by_their_own_rates() {
    let shape = MoeShape { layers: 1, experts: 8, top_k: 1 };
    let (less, more, new) = (ExpertKey::new(0, 1), ExpertKey::new(0, 6), ExpertKey::new(0, 3));
    let mut usage = floe_cache::ExpertUsage::new("test", 1, 8);
    for (e, n) in [(0usize, 41), (1, 72), (2, 41), (3, 41), (4, 41), (5, 41), (6, 82), (7, 41)] {
        for _ in 0..n {
            usage.record(0, [e]);
        }
    }
    let p = build(PolicyKind::Moe, 2, shape, &PolicyConfig::default(), None).unwrap();
    let cache = ExpertCache::with_slots(2, 10, 1, p).unwrap();
    cache.learn_prior(&usage);
    use_once(&cache, less, 0);
    use_once(&cache, more, 0);
    let got = use_once(&cache, new, 0);
    assert!(matches!(got, Lookup::Miss { evicted: Some(k), .. } if k == less), "{got:?}");
}
