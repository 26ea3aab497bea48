//! `moe`: floe's MoE-aware policy. It uses three things a general-purpose cache cannot know:
//!
//! 1. **The layer cycle.** Layers are visited in a fixed order once per token, so an expert of
//!    layer `l` can next be used only when the engine reaches `l` again: its earliest reuse is
//!    `d(l)` layer-visits away (`d = L` for the layer being computed now).
//! 2. **Every routing decision**, not just cache accesses: after each layer the router's top-k
//!    tells, for *every* expert of that layer, whether it was chosen. That is `E` labelled
//!    examples per layer visit. Each expert's own rate of use per visit is its baseline chance
//!    of being chosen next; the policy learns online how far a class of experts (tokens since
//!    last use, rate in half-octaves) is chosen above or below what its rates said: the lift.
//!    Where routing has no memory (random synthetic routers) the lift stays near one and the
//!    rates decide, as in the independent-reference optimum; where it has (real models), recent
//!    experts earn a lift. Nothing is tuned to a trace or a model.
//! 3. **The bounded key space** (`L x E` experts): usage counts are kept for every expert, also
//!    the ones not resident, so a returning expert is recognised; a usage file learned on
//!    earlier runs (`on_prior`) starts them off.
//!
//! With `p` = rate x lift the chance of use per visit, the expected distance to the next use is
//! `d + L * (1 - p) / p` layer-visits; the victim is the evictable key with the largest, which
//! is Belady's rule with the future replaced by its expectation.

use std::collections::HashSet;

use super::Policy;
use crate::key::{AccessCtx, ExpertKey, MoeShape};
use crate::usage::ExpertUsage;

const AGE_CLASSES: usize = 9; // log2 buckets 0..=7 of visits since last use, 8 = never used
const FREQ_CLASSES: usize = 16; // half-log2 buckets of use rate
const NEVER: u32 = u32::MAX;

/// Learned expected-reuse-distance eviction for MoE experts.
#[derive(Debug)]
pub struct MoeReuse {
    shape: MoeShape,
    /// Per expert: times chosen, and the layer-visit index of its last use.
    count: Vec<u32>,
    last_use: Vec<u32>,
    /// Per layer: router decisions seen so far.
    visits: Vec<u32>,
    /// Per layer: router decisions behind the counts learned on earlier runs (`on_prior`).
    base_visits: Vec<u32>,
    /// Per class: experts chosen at their next visit, and the sum of those experts' own rates
    /// when they were classed (what the rates alone expected).
    chosen: [[f64; FREQ_CLASSES]; AGE_CLASSES],
    rate_sum: [[f64; FREQ_CLASSES]; AGE_CLASSES],
    resident: HashSet<ExpertKey>,
    /// Per expert: used at the current visit of its layer, before the router's report
    /// (`on_route`) updates its count: it is classed as used now.
    used_now: Vec<bool>,
    /// Layer being computed now (from the latest access).
    current_layer: u16,
}

impl MoeReuse {
    /// A policy for a model of this shape.
    pub fn new(shape: MoeShape) -> Self {
        let n = shape.total_experts().max(1);
        Self {
            shape,
            count: vec![0; n],
            last_use: vec![NEVER; n],
            visits: vec![0; shape.layers.max(1) as usize],
            base_visits: vec![0; shape.layers.max(1) as usize],
            chosen: [[0.0; FREQ_CLASSES]; AGE_CLASSES],
            rate_sum: [[0.0; FREQ_CLASSES]; AGE_CLASSES],
            resident: HashSet::new(),
            used_now: vec![false; n],
            current_layer: 0,
        }
    }

    fn index(&self, key: ExpertKey) -> Option<usize> {
        (key.layer < self.shape.layers && key.expert < self.shape.experts)
            .then(|| key.layer as usize * self.shape.experts as usize + key.expert as usize)
    }

    /// The class of an expert's rate of use at its layer (its uses, `extra` more, over the
    /// layer's visits, prior ones included), in half-octaves around the uniform rate `k / E`:
    /// a rate, not a count, so a long run or a usage file learned over many runs does not push
    /// every busy expert into one top class.
    fn freq_class(&self, count: u32, layer: u16, extra: u32) -> usize {
        let l = layer as usize;
        let visits = self.base_visits[l] as f64 + (self.visits[l] + extra) as f64;
        let uniform = self.shape.top_k.max(1) as f64 / self.shape.experts.max(1) as f64;
        let ratio = ((count + extra) as f64 + 0.5) / (visits + 1.0) / uniform;
        let centre = (FREQ_CLASSES / 2) as f64;
        (2.0 * ratio.log2() + centre).floor().clamp(0.0, (FREQ_CLASSES - 1) as f64) as usize
    }

    /// An expert's own rate of use per visit of its layer (prior visits included; one more use
    /// if it is used at this visit), with half a use and one visit added so it is never zero.
    fn rate(&self, idx: usize, layer: u16) -> f64 {
        let l = layer as usize;
        let extra = self.used_now[idx] as u32;
        let visits = self.base_visits[l] as f64 + (self.visits[l] + extra) as f64;
        ((self.count[idx] + extra) as f64 + 0.5) / (visits + 1.0)
    }

    fn class(&self, idx: usize, layer: u16) -> (usize, usize) {
        if self.used_now[idx] {
            // Used at this visit: one visit old at the next, with one more use.
            return (0, self.freq_class(self.count[idx], layer, 1));
        }
        let last = self.last_use[idx];
        let age = if last == NEVER {
            AGE_CLASSES - 1
        } else {
            let visits_since = self.visits[layer as usize].saturating_sub(last).max(1);
            (visits_since.ilog2() as usize).min(AGE_CLASSES - 2)
        };
        let freq = self.freq_class(self.count[idx], layer, 0);
        (age, freq)
    }

    /// Learned lift of a class: how many times more often its experts were chosen at their
    /// next visit than their own rates said (chosen / summed rates, plus one of each so an
    /// unseen class starts at one). Where routing has no memory it learns one everywhere and
    /// the rates decide alone; recency and the rest of the class move it where it has.
    fn lift(&self, (age, freq): (usize, usize)) -> f64 {
        (self.chosen[age][freq] + 1.0) / (self.rate_sum[age][freq] + 1.0)
    }

    /// Expected layer-visits until `key` is used again: the layers until its layer comes round,
    /// then `L * (1 - p) / p` with `p` its rate times its class's lift.
    fn expected_distance(&self, key: ExpertKey, lifts: &[[f64; FREQ_CLASSES]; AGE_CLASSES]) -> f64 {
        let layers = self.shape.layers.max(1);
        let Some(idx) = self.index(key) else { return f64::INFINITY };
        let ahead = (key.layer as i64 - self.current_layer as i64).rem_euclid(layers as i64);
        let d = if ahead == 0 { layers as f64 } else { ahead as f64 };
        let (a, f) = self.class(idx, key.layer);
        let p = (self.rate(idx, key.layer) * lifts[a][f]).clamp(1e-6, 0.999);
        d + layers as f64 * (1.0 - p) / p
    }
}

impl Policy for MoeReuse {
    fn name(&self) -> &'static str {
        "moe"
    }
    fn on_hit(&mut self, key: ExpertKey, _: &AccessCtx) {
        self.current_layer = key.layer;
        if let Some(i) = self.index(key) {
            self.used_now[i] = true;
        }
    }
    fn on_insert(&mut self, key: ExpertKey, ctx: &AccessCtx) {
        self.current_layer = key.layer;
        self.resident.insert(key);
        // A prefetch is not a use.
        if let Some(i) = self.index(key).filter(|_| ctx.demand) {
            self.used_now[i] = true;
        }
    }
    fn on_remove(&mut self, key: ExpertKey) {
        self.resident.remove(&key);
    }
    fn victim(&mut self, evictable: &dyn Fn(ExpertKey) -> bool) -> Option<ExpertKey> {
        let mut lifts = [[0.0; FREQ_CLASSES]; AGE_CLASSES];
        for (a, row) in lifts.iter_mut().enumerate() {
            for (f, lift) in row.iter_mut().enumerate() {
                *lift = self.lift((a, f));
            }
        }
        let mut best: Option<(f64, ExpertKey)> = None;
        for &key in &self.resident {
            if !evictable(key) {
                continue;
            }
            let dist = self.expected_distance(key, &lifts);
            // Ties (common before anything is learned) go to the larger key, deterministically.
            if best.is_none_or(|(b, bk)| dist > b || (dist == b && key > bk)) {
                best = Some((dist, key));
            }
        }
        let (_, key) = best?;
        self.resident.remove(&key);
        Some(key)
    }
    fn on_prior(&mut self, usage: &ExpertUsage) {
        let e = self.shape.experts as usize;
        for l in 0..self.shape.layers {
            let base = l as usize * e;
            let mut uses = 0u64;
            for x in 0..self.shape.experts {
                let n = usage.count(ExpertKey::new(l, x));
                uses += n;
                self.count[base + x as usize] = n.min(u32::MAX as u64 / 2) as u32;
            }
            let visits = uses / self.shape.top_k.max(1) as u64;
            self.base_visits[l as usize] = visits.min(u32::MAX as u64 / 2) as u32;
        }
    }
    fn on_route(&mut self, layer: u16, _step: u64, experts: &[(u16, f32)]) {
        if layer >= self.shape.layers {
            return;
        }
        let base = layer as usize * self.shape.experts as usize;
        self.used_now[base..base + self.shape.experts as usize].fill(false);
        let is_chosen = |e: u16| experts.iter().any(|&(x, _)| x == e);
        for e in 0..self.shape.experts {
            let (a, f) = self.class(base + e as usize, layer);
            self.rate_sum[a][f] += self.rate(base + e as usize, layer);
            if is_chosen(e) {
                self.chosen[a][f] += 1.0;
            }
        }
        let visit = self.visits[layer as usize];
        for &(e, _) in experts {
            if e < self.shape.experts {
                self.count[base + e as usize] += 1;
                self.last_use[base + e as usize] = visit;
            }
        }
        self.visits[layer as usize] = visit + 1;
    }
}
