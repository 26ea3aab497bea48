//! Prefetch predictors that need only the routing history: what `floe sim` scores on a trace and
//! what the engine's `--prefetch temporal|hot` read ahead with, one implementation for both.

/// A predictor of a layer's next experts from the routing seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictorKind {
    /// The experts the same layer chose at the previous step (next-token overlap).
    Temporal,
    /// The layer's top-k most chosen experts so far (per-layer popularity).
    Hot,
}

impl PredictorKind {
    /// Both, in the order `floe sim` prints them.
    pub const ALL: [PredictorKind; 2] = [PredictorKind::Temporal, PredictorKind::Hot];

    /// The `--prefetch` name.
    pub fn name(self) -> &'static str {
        match self {
            PredictorKind::Temporal => "temporal",
            PredictorKind::Hot => "hot",
        }
    }
}

/// Per-layer routing history: the latest choice and how often each expert was chosen.
#[derive(Debug, Clone)]
pub struct RouteHistory {
    experts: usize,
    last: Vec<Vec<u16>>,
    counts: Vec<Vec<u64>>,
}

impl RouteHistory {
    /// An empty history for `layers` layers of `experts` experts.
    pub fn new(layers: usize, experts: usize) -> Self {
        Self { experts, last: vec![Vec::new(); layers], counts: vec![vec![0; experts]; layers] }
    }

    /// The router of `layer` chose `chosen` (one token, or the union over a chunk). Out-of-range
    /// layers and experts are ignored.
    pub fn record(&mut self, layer: usize, chosen: &[u16]) {
        let (Some(last), Some(counts)) = (self.last.get_mut(layer), self.counts.get_mut(layer))
        else {
            return;
        };
        last.clear();
        for &e in chosen.iter().filter(|&&e| (e as usize) < self.experts) {
            last.push(e);
            counts[e as usize] += 1;
        }
    }

    /// Up to `k` experts of `layer` the predictor expects next: `temporal` gives the latest
    /// choice (in router order), `hot` the most chosen so far (ties to the lower index; experts
    /// never chosen are not predicted).
    pub fn predict(&self, kind: PredictorKind, layer: usize, k: usize) -> Vec<u16> {
        match kind {
            PredictorKind::Temporal => self
                .last
                .get(layer)
                .map(|l| l.iter().copied().take(k).collect())
                .unwrap_or_default(),
            PredictorKind::Hot => {
                let Some(counts) = self.counts.get(layer) else { return Vec::new() };
                let mut ranked: Vec<u16> =
                    (0..self.experts as u16).filter(|&e| counts[e as usize] > 0).collect();
                ranked.sort_by_key(|&e| (std::cmp::Reverse(counts[e as usize]), e));
                ranked.truncate(k);
                ranked
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
        h.record(0, &[3, 5]);
        h.record(0, &[5, 1]);
        h.record(0, &[7, 1, 5]);
        h.record(1, &[2]);
        h.record(9, &[2]); // no such layer: ignored
        assert_eq!(h.predict(PredictorKind::Temporal, 0, 8), vec![7, 1, 5]);
        assert_eq!(h.predict(PredictorKind::Temporal, 0, 2), vec![7, 1]);
        // Counts: 5 x3, 1 x2, 3 x1, 7 x1 (3 before 7 on the tie).
        assert_eq!(h.predict(PredictorKind::Hot, 0, 3), vec![5, 1, 3]);
        assert_eq!(h.predict(PredictorKind::Hot, 0, 9), vec![5, 1, 3, 7]);
        assert_eq!(h.predict(PredictorKind::Hot, 1, 4), vec![2]);
        assert!(h.predict(PredictorKind::Hot, 5, 4).is_empty());
    }
}
