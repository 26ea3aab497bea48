//! The trace simulator: replays a trace's accesses through [`ExpertCache`] with a policy, the
//! same slot table the engine uses live, so a simulated and a live LRU agree exactly.
//!
//! Model: slabs are unit-size (capacity counts experts); each layer routing's experts are
//! accessed in router order, each pinned only while it is used (the engine computes an expert
//! as its slab lands and unpins it); a prefill routing is the union of its chunk's experts,
//! each read once. After each routing, the policy is told what the router chose.

use crate::error::CacheError;
use crate::key::ExpertKey;
use crate::policy::{build, PolicyConfig, PolicyKind};
use crate::predict::{PredictorKind, RouteHistory};
use crate::table::{ExpertCache, Lookup};
use crate::trace::{PhaseFilter, Trace};
use crate::usage::ExpertUsage;

/// One policy at one capacity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SimResult {
    /// Policy name.
    pub policy: String,
    /// Slots.
    pub capacity_slots: usize,
    /// Slots as a share of all experts in the trace's model.
    pub capacity_fraction: f64,
    /// Demand accesses replayed.
    pub accesses: u64,
    /// Of them, hits.
    pub hits: u64,
    /// Of them, misses (reads).
    pub misses: u64,
    /// Bytes the misses read (per-layer expert size when the trace gives it, else 0).
    pub bytes_read: u64,
    /// hits / accesses.
    pub hit_ratio: f64,
    /// Slots pinned for good before the replay (each read once, counted here, not as misses).
    pub pinned: u64,
}

/// Replays `trace` (the `phase` steps) through `kind` with `capacity` slots.
pub fn simulate(
    trace: &Trace,
    phase: PhaseFilter,
    kind: PolicyKind,
    capacity: usize,
    config: &PolicyConfig,
) -> Result<SimResult, CacheError> {
    simulate_pinned(trace, phase, kind, capacity, config, (&[], None))
}

/// Where a replay's pinned experts are learned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PinSource {
    /// From the replayed steps themselves (the best a fixed set can do).
    Hindsight,
    /// From this share of the steps, which are then left out of the replay (as a usage file
    /// learned on earlier runs would be).
    Prefix(f64),
}

/// The `slots` most used experts as `source` learns them, and the trace to replay with them.
pub fn learn_pins(
    trace: &Trace,
    phase: PhaseFilter,
    source: PinSource,
    slots: usize,
) -> (Vec<ExpertKey>, Trace) {
    let (usage, rest) = learn_usage(trace, phase, source);
    (usage.hottest(slots), rest)
}

/// Every expert's use count as `source` learns it (what a usage file would hold), and the trace
/// to replay with it.
pub fn learn_usage(trace: &Trace, phase: PhaseFilter, source: PinSource) -> (ExpertUsage, Trace) {
    let admitted = || trace.routes.iter().filter(|r| phase.admits(r.phase));
    let steps: Vec<u64> = admitted().map(|r| r.step).collect();
    let cut = match source {
        PinSource::Hindsight => None,
        PinSource::Prefix(share) => {
            let mut distinct = steps.clone();
            distinct.dedup();
            let n = (distinct.len() as f64 * share.clamp(0.0, 1.0)).round() as usize;
            Some(distinct.get(n).copied().unwrap_or(u64::MAX))
        }
    };
    let mut usage = ExpertUsage::new("sim", trace.shape.layers, trace.shape.experts);
    for r in admitted().filter(|r| cut.is_none_or(|c| r.step < c)) {
        usage.record(r.layer as usize, r.experts.iter().map(|e| e.0 as usize));
    }
    let rest = Trace {
        shape: trace.shape,
        expert_bytes: trace.expert_bytes.clone(),
        routes: trace.routes.iter().filter(|r| cut.is_none_or(|c| r.step >= c)).cloned().collect(),
    };
    (usage, rest)
}

/// [`simulate`] with `pins` held in slots for good from the start (as `--pin-mb` does live) and
/// the policy started from `prior` counts (as `--usage` does live).
pub fn simulate_pinned(
    trace: &Trace,
    phase: PhaseFilter,
    kind: PolicyKind,
    capacity: usize,
    config: &PolicyConfig,
    (pins, prior): (&[ExpertKey], Option<&ExpertUsage>),
) -> Result<SimResult, CacheError> {
    let future = trace.accesses(phase);
    let mut policy = build(kind, capacity, trace.shape, config, Some(&future))?;
    if let Some(usage) = prior {
        policy.on_prior(usage);
    }
    let slab = trace.expert_bytes.iter().copied().max().unwrap_or(1).max(1);
    let cache = ExpertCache::with_slots(capacity, slab, trace.shape.top_k as usize, policy)?;
    let mut bytes_read = 0u64;
    for &key in pins {
        if cache.pin_resident(key).is_none() {
            break;
        }
        cache.complete(key, true);
        bytes_read += trace.expert_bytes_of(key.layer).unwrap_or(0);
    }
    for route in trace.routes.iter().filter(|r| phase.admits(r.phase)) {
        for &(expert, weight) in &route.experts {
            let key = ExpertKey::new(route.layer, expert);
            match cache.acquire(key, route.step, weight) {
                Lookup::Hit(_) => {}
                Lookup::Miss { .. } => {
                    bytes_read += trace.expert_bytes_of(route.layer).unwrap_or(0);
                    cache.complete(key, true);
                }
                Lookup::Pending(_) => unreachable!("the simulator completes every read at once"),
                Lookup::Full => {
                    return Err(CacheError::Invalid(format!(
                        "capacity {capacity} cannot hold one routing of {} experts",
                        route.experts.len()
                    )))
                }
            }
            cache.release(key);
        }
        cache.on_route(route.layer, route.step, &route.experts);
    }
    let s = cache.stats();
    let total = trace.shape.total_experts().max(1);
    Ok(SimResult {
        policy: format!(
            "{}{}{}",
            kind.name(),
            if s.pinned > 0 { "+pins" } else { "" },
            if prior.is_some() { "+prior" } else { "" }
        ),
        capacity_slots: capacity,
        capacity_fraction: capacity as f64 / total as f64,
        accesses: s.hits + s.misses,
        hits: s.hits,
        misses: s.misses,
        bytes_read,
        hit_ratio: s.hit_ratio(),
        pinned: s.pinned,
    })
}

/// [`simulate`] with one cache per layer instead of one shared by all: each layer gets the
/// slots its largest routing needs, and the rest of `capacity` goes to the layers in
/// proportion to how many of the `learned` experts (the most used ones, best first) are
/// theirs, as pins would be spread. Returns the summed result and each layer's slots.
pub fn simulate_per_layer(
    trace: &Trace,
    phase: PhaseFilter,
    kind: PolicyKind,
    capacity: usize,
    config: &PolicyConfig,
    learned: &[ExpertKey],
) -> Result<(SimResult, Vec<usize>), CacheError> {
    let layers = trace.shape.layers as usize;
    let mut slots = vec![0usize; layers];
    for r in trace.routes.iter().filter(|r| phase.admits(r.phase)) {
        if let Some(s) = slots.get_mut(r.layer as usize) {
            *s = (*s).max(r.experts.len());
        }
    }
    let base: usize = slots.iter().sum();
    if base > capacity {
        return Err(CacheError::Invalid(format!(
            "capacity {capacity} cannot give every layer its largest routing ({base} slots)"
        )));
    }
    let mut extra = capacity - base;
    for key in learned {
        if extra == 0 {
            break;
        }
        if let Some(s) = slots.get_mut(key.layer as usize) {
            *s += 1;
            extra -= 1;
        }
    }
    // Whatever the learned experts did not claim is spread evenly.
    for (l, s) in slots.iter_mut().enumerate() {
        *s += extra / layers + usize::from(l < extra % layers);
    }
    let mut sum = SimResult {
        policy: format!("{}/layer", kind.name()),
        capacity_slots: capacity,
        capacity_fraction: capacity as f64 / trace.shape.total_experts().max(1) as f64,
        accesses: 0,
        hits: 0,
        misses: 0,
        bytes_read: 0,
        hit_ratio: 0.0,
        pinned: 0,
    };
    for (l, &n) in slots.iter().enumerate() {
        let routes: Vec<_> =
            trace.routes.iter().filter(|r| r.layer as usize == l).cloned().collect();
        if routes.is_empty() || n == 0 {
            continue;
        }
        let one = Trace { shape: trace.shape, expert_bytes: trace.expert_bytes.clone(), routes };
        let r = simulate_pinned(&one, phase, kind, n, config, (&[], None))?;
        sum.accesses += r.accesses;
        sum.hits += r.hits;
        sum.misses += r.misses;
        sum.bytes_read += r.bytes_read;
    }
    sum.hit_ratio = sum.hits as f64 / sum.accesses.max(1) as f64;
    Ok((sum, slots))
}

/// How well a prefetch predictor that sees only the trace guesses the next step's experts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PredictorScore {
    /// `temporal` or `hot`.
    pub predictor: String,
    /// Share of the next step's chosen experts that the prediction contained.
    pub recall: f64,
    /// Predictions scored (layer routings with a previous step).
    pub predictions: u64,
}

/// Scores the [`PredictorKind`]s (`temporal`: the previous step's experts of the same layer;
/// `hot`: the layer's top-k most chosen so far; `affinity`: what most often followed the previous
/// layer's choice at this step) as recall of each routing's experts, over the `phase` steps.
pub fn score_predictors(trace: &Trace, phase: PhaseFilter) -> Vec<PredictorScore> {
    let mut history = RouteHistory::new(trace.shape.layers as usize, trace.shape.experts as usize);
    let mut hits = [0u64; PredictorKind::ALL.len()];
    let (mut total, mut n) = (0u64, 0u64);
    let mut seen = vec![false; trace.shape.layers as usize];
    for r in trace.routes.iter().filter(|r| phase.admits(r.phase)) {
        let l = r.layer as usize;
        if l >= seen.len() {
            continue;
        }
        let chosen: Vec<u16> = r.experts.iter().map(|e| e.0).collect();
        if seen[l] {
            for (hit, kind) in hits.iter_mut().zip(PredictorKind::ALL) {
                let predicted = history.predict(kind, l, chosen.len());
                *hit += chosen.iter().filter(|e| predicted.contains(e)).count() as u64;
            }
            total += chosen.len() as u64;
            n += 1;
        }
        history.record(l, r.step, &chosen);
        seen[l] = true;
    }
    let ratio = |h: u64| if total == 0 { 0.0 } else { h as f64 / total as f64 };
    PredictorKind::ALL
        .iter()
        .zip(hits)
        .map(|(k, h)| PredictorScore {
            predictor: k.name().into(),
            recall: ratio(h),
            predictions: n,
        })
        .collect()
}

/// Per-layer popularity skew of a trace, as the exponent `s` of a Zipf law `count ~ rank^-s`
/// fitted by least squares on log-log per layer and averaged over layers, two ways.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ZipfFit {
    /// Over every expert the layer used at least once. In a short trace the tail is made of
    /// experts seen once or twice, whose counts fall off a cliff (sampling noise, and the
    /// unseen ones are dropped), so this reads steeper than the law that drew them.
    pub all_used: f64,
    /// Over each layer's top quarter of experts by count: the part a cache holds, where counts
    /// are large enough to be measured.
    pub head_quarter: f64,
    /// `all_used` of each layer (`None` for a layer with fewer than three used experts).
    pub per_layer_all_used: Vec<Option<f64>>,
    /// `head_quarter` of each layer.
    pub per_layer_head_quarter: Vec<Option<f64>>,
}

/// Fits [`ZipfFit`] to the `phase` routings of `trace`.
pub fn zipf_fit(trace: &Trace, phase: PhaseFilter) -> ZipfFit {
    let experts = trace.shape.experts as usize;
    let mut counts = vec![vec![0u64; experts]; trace.shape.layers as usize];
    for r in trace.routes.iter().filter(|r| phase.admits(r.phase)) {
        for &(e, _) in &r.experts {
            if let Some(c) = counts.get_mut(r.layer as usize).and_then(|l| l.get_mut(e as usize)) {
                *c += 1;
            }
        }
    }
    let head = experts.div_ceil(4).max(3);
    let (mut all, mut top) = (Vec::new(), Vec::new());
    for mut c in counts {
        c.sort_unstable_by(|a, b| b.cmp(a));
        c.retain(|&x| x > 0);
        all.push(rank_slope(&c));
        top.push(rank_slope(&c[..c.len().min(head)]));
    }
    let mean = |v: &[Option<f64>]| {
        let fits: Vec<f64> = v.iter().flatten().copied().collect();
        if fits.is_empty() {
            0.0
        } else {
            fits.iter().sum::<f64>() / fits.len() as f64
        }
    };
    ZipfFit {
        all_used: mean(&all),
        head_quarter: mean(&top),
        per_layer_all_used: all,
        per_layer_head_quarter: top,
    }
}

/// `-slope` of log(count) against log(rank) for counts sorted descending; `None` for fewer than
/// three points or no spread.
fn rank_slope(sorted: &[u64]) -> Option<f64> {
    if sorted.len() < 3 {
        return None;
    }
    let pts: Vec<(f64, f64)> =
        sorted.iter().enumerate().map(|(i, &x)| (((i + 1) as f64).ln(), (x as f64).ln())).collect();
    let n = pts.len() as f64;
    let (mx, my) =
        (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    (sxx > 0.0).then(|| -sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{LayerRoute, Phase};

    /// A trace whose layer-0 counts follow `count = round(1000 * rank^-s)` exactly.
    fn zipf_trace(s: f64, experts: u16) -> Trace {
        let mut routes = Vec::new();
        for e in 0..experts {
            let n = (1000.0 * ((e + 1) as f64).powf(-s)).round() as u64;
            for step in 0..n {
                routes.push(LayerRoute {
                    step,
                    phase: Phase::Decode,
                    layer: 0,
                    experts: vec![(e, 1.0)],
                });
            }
        }
        Trace {
            shape: crate::key::MoeShape { layers: 1, experts, top_k: 1 },
            expert_bytes: vec![],
            routes,
        }
    }

    #[test]
    fn zipf_fit_recovers_the_exponent_of_an_exact_law() {
        for s in [0.5, 0.8, 1.2] {
            let fit = zipf_fit(&zipf_trace(s, 64), PhaseFilter::All);
            // Rounding counts to integers is the only error: at most a few hundredths.
            assert!((fit.all_used - s).abs() < 0.03, "s {s}: all {}", fit.all_used);
            assert!((fit.head_quarter - s).abs() < 0.01, "s {s}: head {}", fit.head_quarter);
            assert_eq!(fit.per_layer_all_used, vec![Some(fit.all_used)]);
        }
    }
}
