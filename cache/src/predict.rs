//! Prefetch predictors that need only the routing history: what `floe sim` scores on a trace and
//! what the engine's `--prefetch temporal|hot|affinity` read ahead with, one implementation for
//! both.

use std::collections::HashMap;

/// A predictor of a layer's next experts from the routing seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictorKind {
    /// The experts the same layer chose at the previous step (next-token overlap).
    Temporal,
    /// The layer's top-k most chosen experts so far (per-layer popularity).
    Hot,
    /// The experts that have most often followed, one layer on in the same step, the experts
    /// the previous layer chose at this step (inter-layer affinity, learned online).
    Affinity,
}

impl PredictorKind {
    /// All of them, in the order `floe sim` prints them.
    pub const ALL: [PredictorKind; 3] =
        [PredictorKind::Temporal, PredictorKind::Hot, PredictorKind::Affinity];

    /// The `--prefetch` name.
    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::Temporal => "temporal",
            PredictorKind::Hot => "hot",
            PredictorKind::Affinity => "affinity",
        }
    }
}

/// The latest record: its step, its layer and how many records that layer had in a row at that
/// step (more than one when a prefill chunk is recorded token by token).
#[derive(Debug, Clone, Copy)]
struct Latest {
    step: u64,
    layer: usize,
    repeats: u32,
}

/// Per-layer routing history: the latest choice, how often each expert was chosen, and which
/// experts follow which from one layer to the next within a step.
#[derive(Debug, Clone)]
pub struct RouteHistory {
    experts: usize,
    last: Vec<Vec<u16>>,
    counts: Vec<Vec<u64>>,
    /// Per layer `l`, `e -> f -> n`: steps in which `f` was chosen at `l` and `e` at the layer
    /// recorded just before `l` in that step. Sparse: only pairs seen take memory, so models
    /// (or traces) with many experts cost what their routing touches, not experts squared.
    follows: Vec<HashMap<u16, HashMap<u16, u32>>>,
    latest: Option<Latest>,
}

impl RouteHistory {
    /// An empty history for `layers` layers of `experts` experts.
    pub fn new(layers: usize, experts: usize) -> Self {
        Self {
            experts,
            last: vec![Vec::new(); layers],
            counts: vec![vec![0; experts]; layers],
            follows: vec![HashMap::new(); layers],
            latest: None,
        }
    }

    /// The layer recorded just before, at the same step, when it was recorded once there (a
    /// token-by-token prefill chunk pairs no single choice with the next layer's).
    fn predecessor(&self, layer: usize, step: Option<u64>) -> Option<usize> {
        self.latest
            .filter(|p| p.layer != layer && p.repeats == 1 && step.is_none_or(|s| s == p.step))
            .map(|p| p.layer)
    }

    /// The router of `layer` chose `chosen` at `step` (one token, or the union over a chunk).
    /// Out-of-range layers and experts are ignored.
    pub fn record(&mut self, layer: usize, step: u64, chosen: &[u16]) {
        if layer >= self.last.len() {
            return;
        }
        let chosen: Vec<u16> =
            chosen.iter().copied().filter(|&e| (e as usize) < self.experts).collect();
        if let Some(prev) = self.predecessor(layer, Some(step)) {
            let follows = &mut self.follows[layer];
            for &e in &self.last[prev] {
                let row = follows.entry(e).or_default();
                for &f in &chosen {
                    *row.entry(f).or_insert(0) += 1;
                }
            }
        }
        for &e in &chosen {
            self.counts[layer][e as usize] += 1;
        }
        self.last[layer] = chosen;
        self.latest = Some(match self.latest {
            Some(p) if p.step == step && p.layer == layer => Latest { repeats: p.repeats + 1, ..p },
            _ => Latest { step, layer, repeats: 1 },
        });
    }

    /// Up to `k` experts of `layer` the predictor expects next: `temporal` gives the latest
    /// choice (in router order); `hot` the most chosen so far; `affinity` the experts that most
    /// often followed the latest recorded layer's choice (only when that layer was recorded just
    /// now, once). Ties go to the lower index; experts with no evidence are not predicted.
    pub fn predict(&self, kind: PredictorKind, layer: usize, k: usize) -> Vec<u16> {
        if layer >= self.last.len() {
            return Vec::new();
        }
        let top = |score: &dyn Fn(usize) -> u64| {
            let mut ranked: Vec<(u64, u16)> =
                (0..self.experts).map(|e| (score(e), e as u16)).filter(|&(s, _)| s > 0).collect();
            ranked.sort_by_key(|&(s, e)| (std::cmp::Reverse(s), e));
            ranked.into_iter().take(k).map(|(_, e)| e).collect()
        };
        match kind {
            PredictorKind::Temporal => self.last[layer].iter().copied().take(k).collect(),
            PredictorKind::Hot => top(&|e| self.counts[layer][e]),
            PredictorKind::Affinity => {
                let Some(prev) = self.predecessor(layer, None) else { return Vec::new() };
                let mut score: HashMap<u16, u64> = HashMap::new();
                for row in self.last[prev].iter().filter_map(|e| self.follows[layer].get(e)) {
                    for (&f, &n) in row {
                        *score.entry(f).or_insert(0) += n as u64;
                    }
                }
                let mut ranked: Vec<(u64, u16)> = score.into_iter().map(|(f, n)| (n, f)).collect();
                ranked.sort_by_key(|&(s, e)| (std::cmp::Reverse(s), e));
                ranked.into_iter().take(k).map(|(_, e)| e).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporal_repeats_the_last_choice_and_hot_ranks_by_count() {
        let mut h = RouteHistory::new(2, 8);
        assert!(h.predict(PredictorKind::Temporal, 0, 2).is_empty());
        assert!(h.predict(PredictorKind::Hot, 0, 2).is_empty());
        h.record(0, 0, &[3, 5]);
        h.record(0, 1, &[5, 1]);
        h.record(0, 2, &[7, 1, 5]);
        h.record(1, 2, &[2]);
        h.record(9, 2, &[2]); // no such layer: ignored
        assert_eq!(h.predict(PredictorKind::Temporal, 0, 8), vec![7, 1, 5]);
        assert_eq!(h.predict(PredictorKind::Temporal, 0, 2), vec![7, 1]);
        // Counts: 5 x3, 1 x2, 3 x1, 7 x1 (3 before 7 on the tie).
        assert_eq!(h.predict(PredictorKind::Hot, 0, 3), vec![5, 1, 3]);
        assert_eq!(h.predict(PredictorKind::Hot, 0, 9), vec![5, 1, 3, 7]);
        assert_eq!(h.predict(PredictorKind::Hot, 1, 4), vec![2]);
        assert!(h.predict(PredictorKind::Hot, 5, 4).is_empty());
    }

    #[test]
    fn affinity_predicts_what_followed_the_previous_layer_within_a_step() {
        let mut h = RouteHistory::new(3, 8);
        // Expert 1 at layer 0 is followed by 4 at layer 1; expert 2 by 6, twice; 1 also by 5.
        for (step, l0, l1) in [(0, 1, [4, 5]), (1, 2, [6, 3]), (2, 1, [4, 7]), (3, 2, [6, 0])] {
            h.record(0, step, &[l0]);
            h.record(1, step, &l1);
            h.record(2, step, &[0]);
        }
        // Nothing recorded at this step's layer 0 yet: no prediction.
        assert!(h.predict(PredictorKind::Affinity, 1, 2).is_empty());
        h.record(0, 4, &[1]);
        // 4 followed 1 twice; 5 and 7 once each (5 wins the tie).
        assert_eq!(h.predict(PredictorKind::Affinity, 1, 2), vec![4, 5]);
        assert_eq!(h.predict(PredictorKind::Affinity, 1, 8), vec![4, 5, 7]);
        h.record(1, 4, &[6]);
        assert_eq!(h.predict(PredictorKind::Affinity, 2, 1), vec![0]);
        // A token-by-token prefill chunk (layer 0 twice at one step) pairs nothing.
        let mut p = RouteHistory::new(2, 8);
        p.record(0, 0, &[1]);
        p.record(0, 0, &[2]);
        p.record(1, 0, &[3]);
        p.record(1, 0, &[4]);
        p.record(0, 1, &[1]);
        assert!(p.predict(PredictorKind::Affinity, 1, 2).is_empty());
    }
}
