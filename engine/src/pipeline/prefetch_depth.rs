//! How deep to read ahead, per layer: the share of each prediction rank (the best predicted
//! expert, the second, ...) that the layer's router then chose, as a moving average, and a
//! rank is read ahead only while that share stays at or above a threshold. A wrong prefetch
//! costs a whole slab read and the slab it evicts; predictions are scored whether or not they
//! were read, so a rank that starts predicting well is read again.

use smallvec::SmallVec;

/// By default a rank is read ahead while at least this share of its predictions were chosen.
pub const DEFAULT_MIN_PRECISION: f32 = 0.5;
/// Weight of the newest prediction in each rank's moving average.
const ALPHA: f32 = 0.1;

/// One prediction awaiting its score: its step, and its experts by rank with whether the
/// router chose each.
type Pending = (u64, SmallVec<[(u16, bool); 16]>);

#[derive(Debug, Default)]
struct LayerRecord {
    /// Per rank, the moving share of predictions that were chosen (starts optimistic).
    precision: Vec<f32>,
    /// The latest prediction for this layer: its step, experts by rank and which were chosen.
    pending: Option<Pending>,
}

/// Per-layer, per-rank prediction precision.
#[derive(Debug)]
pub(crate) struct PrefetchDepth {
    layers: Vec<LayerRecord>,
    /// A rank is read ahead while at least this share of its predictions were chosen.
    min_precision: f32,
}

impl Default for PrefetchDepth {
    fn default() -> Self {
        Self::new(DEFAULT_MIN_PRECISION)
    }
}

impl PrefetchDepth {
    /// Reads a rank ahead while at least `min_precision` of its predictions were chosen.
    pub fn new(min_precision: f32) -> Self {
        Self { layers: Vec::new(), min_precision }
    }

    /// The router of `layer` chose `experts` for one token at `step`.
    pub fn on_route(&mut self, layer: usize, step: u64, experts: &[(usize, f32)]) {
        let Some(LayerRecord { pending: Some((at, ranks)), .. }) = self.layers.get_mut(layer)
        else {
            return;
        };
        if *at != step {
            return;
        }
        for (e, hit) in ranks.iter_mut() {
            *hit |= experts.iter().any(|x| x.0 == *e as usize);
        }
    }

    /// Of `predicted` (best first) for `layer` at `step`, those worth reading ahead, into `out`
    /// (replacing what it held). Scores the layer's previous prediction and keeps this one to
    /// score.
    pub fn select_into(
        &mut self,
        layer: usize,
        step: u64,
        predicted: &[(usize, f32)],
        out: &mut Vec<(usize, f32)>,
    ) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, LayerRecord::default);
        }
        let min_precision = self.min_precision;
        let r = &mut self.layers[layer];
        if let Some((_, ranks)) = r.pending.take() {
            for (rank, (_, hit)) in ranks.iter().enumerate() {
                let p = &mut r.precision[rank];
                *p += ALPHA * (f32::from(u8::from(*hit)) - *p);
            }
        }
        if r.precision.len() < predicted.len() {
            r.precision.resize(predicted.len(), 1.0);
        }
        r.pending = Some((step, predicted.iter().map(|&(e, _)| (e as u16, false)).collect()));
        out.clear();
        out.extend(
            predicted
                .iter()
                .zip(&r.precision)
                .filter(|(_, &p)| p >= min_precision)
                .map(|(x, _)| *x),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rank the router keeps choosing stays; one it never chooses drops out after a few
    /// tokens, and comes back once its predictions start being chosen.
    #[test]
    fn ranks_follow_their_precision() {
        let mut d = PrefetchDepth::default();
        let predicted = [(3, 0.5), (7, 0.3)];
        let mut read = Vec::new();
        for step in 0..40u64 {
            let mut chosen = Vec::new();
            d.select_into(2, step, &predicted, &mut chosen);
            read.push(chosen.len());
            let chosen: &[(usize, f32)] =
                if step < 20 { &[(3, 0.6), (9, 0.4)] } else { &[(3, 0.6), (7, 0.4)] };
            d.on_route(2, step, chosen);
            // Another layer's and another step's routes score nothing here.
            d.on_route(1, step, &[(7, 1.0)]);
            d.on_route(2, step + 100, &[(7, 1.0)]);
        }
        assert_eq!(read[0], 2, "optimistic at first");
        // Rank 1 was never chosen in the first 20 tokens: once 0.9^n < 0.5 (n = 7 scored
        // predictions) it is no longer read.
        assert_eq!(&read[1..7], &[2, 2, 2, 2, 2, 2]);
        assert!(read[7..21].iter().all(|&n| n == 1), "{read:?}");
        // Chosen every time from token 20: read again once its share is back over a half.
        assert_eq!(*read.last().unwrap(), 2, "{read:?}");
    }
}
