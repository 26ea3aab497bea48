//! The per-sequence state of a shared-KV attention layer (see `SharedKvSpec`): the last
//! positions' key/value rows in a ring (twice the sliding window: the window, and as much
//! again to rewind into), the compressed entries and indexer keys emitted so far, and the
//! compressors' open windows. Entries grow with the positions stored; the rest is a fixed size,
//! which is what lets a long context fit: a position past the window costs only its share of an
//! entry.

use crate::model::spec::SharedKvSpec;

/// A compressor's open window (and, where windows overlap, the one before it): per slot the
/// projected values then the gates (with their slot bias), `width` each.
#[derive(Debug, Default)]
pub(crate) struct Window {
    slots: Vec<f32>,
    ratio: usize,
    width: usize,
    overlap: bool,
}

impl Window {
    fn new(ratio: usize, width: usize, overlap: bool) -> Self {
        let windows = if overlap { 2 } else { 1 };
        Self { slots: vec![0.0; windows * ratio * 2 * width], ratio, width, overlap }
    }

    fn slot(&self, pos: usize) -> usize {
        let half = if self.overlap { (pos / self.ratio) % 2 } else { 0 };
        half * self.ratio + pos % self.ratio
    }

    /// Stores position `pos`'s values and gates (`ape`: the gates' bias of its slot); returns
    /// whether it closes its window.
    pub fn push(&mut self, pos: usize, kv: &[f32], gate: &[f32], ape: &[f32]) -> bool {
        let (w, s) = (self.width, self.slot(pos));
        let at = &mut self.slots[s * 2 * w..(s + 1) * 2 * w];
        at[..w].copy_from_slice(kv);
        at[w..].iter_mut().zip(gate).zip(ape).for_each(|((o, &g), &b)| *o = g + b);
        pos % self.ratio == self.ratio - 1
    }

    /// The entry of the window closed at `pos`, before its norm, `out.len()` channels: per
    /// channel a softmax over the gates of its candidates weighing their values. Without
    /// overlap the candidates are the window's positions; with it, the previous window's
    /// positions' first halves (none for the first window) and this window's second halves.
    pub fn pool(&self, pos: usize, out: &mut [f32]) {
        let (r, w, d) = (self.ratio, self.width, out.len());
        let window = pos / r;
        let cur = self.slot(pos) - pos % r;
        let prev = (self.overlap && window > 0).then(|| self.slot(pos - r) - (pos - r) % r);
        let second = if self.overlap { d } else { 0 };
        for (c, o) in out.iter_mut().enumerate() {
            let cand = |base: usize, off: usize| {
                (0..r).map(move |j| {
                    let at = (base + j) * 2 * w + off + c;
                    (self.slots[at], self.slots[at + w])
                })
            };
            let mut max = f32::NEG_INFINITY;
            let all = || prev.into_iter().flat_map(|p| cand(p, 0)).chain(cand(cur, second));
            all().for_each(|(_, g)| max = max.max(g));
            let (mut num, mut den) = (0.0f32, 0.0f32);
            for (v, g) in all() {
                let e = (g - max).exp();
                num += e * v;
                den += e;
            }
            *o = num / den;
        }
    }

    fn bytes(&self) -> usize {
        4 * self.slots.len()
    }
}

/// Rows a layer of `a` keeps: its window twice over (the second half to rewind into).
pub fn ring_rows(a: &SharedKvSpec) -> usize {
    2 * a.window
}

/// A shared-KV attention layer's state for one sequence.
#[derive(Debug, Default)]
pub struct SharedKvState {
    /// The last `ring` positions' key/value rows, `head_dim` each, position `p` at slot
    /// `p % ring`.
    rows: Vec<f32>,
    /// Rows the ring holds.
    ring: usize,
    /// Positions stored.
    stored: usize,
    /// Compressed entries emitted so far, `head_dim` each.
    pub(crate) entries: Vec<f32>,
    /// Indexer keys emitted so far, the indexer's `head_dim` each.
    pub(crate) index_keys: Vec<f32>,
    /// The compressor's open window(s).
    pub(crate) window: Window,
    /// The indexer compressor's.
    pub(crate) index_window: Window,
    /// Every query's selected entries (`topk` each, `usize::MAX` past the visible), if kept.
    pub(crate) selections: Option<Vec<usize>>,
    /// The session's context: what the buffers grow to at most.
    ctx: usize,
}

impl SharedKvState {
    /// An empty state for a layer of `a` in a session of `ctx` positions.
    pub fn new(a: &SharedKvSpec, ctx: usize) -> Self {
        let ring = ring_rows(a).min(ctx.max(1));
        let (window, index_window) = match a.compressor {
            Some(c) => (
                Window::new(c.ratio, a.compressor_width(), c.overlap),
                c.indexer
                    .map_or_else(Window::default, |ix| Window::new(c.ratio, 2 * ix.head_dim, true)),
            ),
            None => (Window::default(), Window::default()),
        };
        Self { window, index_window, ctx, ring, ..Default::default() }
    }

    /// Stores position `pos`'s row (positions arrive in order).
    pub(crate) fn store_row(&mut self, pos: usize, row: &[f32]) {
        let hd = row.len();
        if self.rows.is_empty() {
            self.rows = vec![0.0; self.ring * hd];
        }
        let at = (pos % self.ring) * hd;
        self.rows[at..at + hd].copy_from_slice(row);
        self.stored = pos + 1;
    }

    /// Position `pos`'s row (within the last `ring` stored).
    pub(crate) fn row(&self, pos: usize, hd: usize) -> &[f32] {
        let at = (pos % self.ring) * hd;
        &self.rows[at..at + hd]
    }

    /// Makes room for the entries up to position `pos`: capacity doubles, from 256 positions'
    /// worth, up to the context, so decode emits entries without allocating.
    pub(crate) fn reserve(&mut self, pos: usize, spec: &SharedKvSpec) {
        let hd = spec.head_dim;
        let positions = (pos + 1).next_power_of_two().max(256).min(self.ctx.max(pos + 1));
        if let Some(c) = spec.compressor {
            if (pos / c.ratio + 1) * hd <= self.entries.capacity() {
                return;
            }
            let entries = positions.div_ceil(c.ratio);
            self.entries.reserve_exact((entries * hd).saturating_sub(self.entries.len()));
            if let Some(ix) = c.indexer {
                let want = entries * ix.head_dim;
                self.index_keys.reserve_exact(want.saturating_sub(self.index_keys.len()));
            }
        }
    }

    /// The session's context.
    pub(crate) fn ctx(&self) -> usize {
        self.ctx
    }

    /// Keeps every query's selected entries from now on (tests compare them).
    pub fn record_selections(&mut self) {
        self.selections.get_or_insert_with(Vec::new);
    }

    /// The selected entries of every query so far, `topk` each, if kept.
    pub fn selections(&self) -> Option<&[usize]> {
        self.selections.as_deref()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.rows.len() + self.entries.capacity() + self.index_keys.capacity())
            + self.window.bytes()
            + self.index_window.bytes()
    }

    /// Bytes of the fixed-size part (the open windows).
    pub fn fixed_bytes(&self) -> usize {
        4 * self.rows.len() + self.window.bytes() + self.index_window.bytes()
    }

    /// Whether the state can be cut back to its first `pos` positions: where no compressor
    /// has consumed a position at or past `pos` that it still needs (a window boundary of its
    /// compressor, with the window before it still held where windows overlap). Positions
    /// inside an open window are pooled only when it closes, so a cut inside one would need
    /// positions the state no longer has.
    pub(crate) fn can_rewind(&self, pos: usize, spec: &SharedKvSpec) -> bool {
        // The next query's window must still be in the ring.
        if self.stored.saturating_sub(pos) + spec.window > self.ring.max(spec.window) {
            return false;
        }
        let Some(c) = spec.compressor else { return true };
        if !pos.is_multiple_of(c.ratio) {
            return false;
        }
        // Only the current and the previous windows are held.
        let stored = self.stored;
        !c.overlap || pos == 0 || stored.div_ceil(c.ratio) <= pos / c.ratio + 1
    }

    /// Drops every position from `pos` on (see [`can_rewind`](Self::can_rewind)).
    pub(crate) fn truncate(&mut self, pos: usize, spec: &SharedKvSpec) {
        if let Some(c) = spec.compressor {
            let keep = pos / c.ratio;
            self.entries.truncate(keep * spec.head_dim);
            if let Some(ix) = c.indexer {
                self.index_keys.truncate(keep * ix.head_dim);
            }
        }
        self.stored = pos;
        if let Some(sel) = self.selections.as_mut() {
            let per = spec.compressor.and_then(|c| c.indexer).map_or(0, |ix| ix.topk);
            sel.truncate(pos * per);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compressed entry, written plainly in f64: per channel, a softmax over the gates (plus
    /// their slot bias) of the window's positions (with overlap: the previous window's first
    /// halves, none for window 0, and this window's second halves) weighing their values.
    fn reference(
        kv: &[Vec<f64>],
        gate: &[Vec<f64>],
        ape: &[Vec<f64>],
        ratio: usize,
        window: usize,
        d: usize,
        overlap: bool,
    ) -> Vec<f64> {
        (0..d)
            .map(|c| {
                let mut cand: Vec<(f64, f64)> = Vec::new();
                if overlap && window > 0 {
                    for (j, slot) in ape.iter().enumerate() {
                        let p = (window - 1) * ratio + j;
                        cand.push((kv[p][c], gate[p][c] + slot[c]));
                    }
                }
                let off = if overlap { d } else { 0 };
                for (j, slot) in ape.iter().enumerate() {
                    let p = window * ratio + j;
                    cand.push((kv[p][off + c], gate[p][off + c] + slot[off + c]));
                }
                let max = cand.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
                let den: f64 = cand.iter().map(|x| (x.1 - max).exp()).sum();
                cand.iter().map(|x| x.0 * (x.1 - max).exp()).sum::<f64>() / den
            })
            .collect()
    }

    #[test]
    fn pooled_entries_match_a_plain_f64_reference() {
        let mut state = 11u64;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) as f64 / (1u64 << 31) as f64) * 6.0 - 3.0
        };
        for (ratio, d, overlap) in [(4, 5, true), (3, 7, false), (2, 1, true), (8, 3, false)] {
            let width = if overlap { 2 * d } else { d };
            let n = 4 * ratio;
            let kv: Vec<Vec<f64>> = (0..n).map(|_| (0..width).map(|_| rnd()).collect()).collect();
            let gate: Vec<Vec<f64>> =
                (0..n).map(|_| (0..width).map(|_| rnd() * 2.0).collect()).collect();
            let ape: Vec<Vec<f64>> =
                (0..ratio).map(|_| (0..width).map(|_| rnd()).collect()).collect();
            let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
            let mut w = Window::new(ratio, width, overlap);
            let mut out = vec![0.0f32; d];
            let mut closed = 0;
            for p in 0..n {
                if w.push(p, &f(&kv[p]), &f(&gate[p]), &f(&ape[p % ratio])) {
                    w.pool(p, &mut out);
                    let want = reference(&kv, &gate, &ape, ratio, p / ratio, d, overlap);
                    for (g, r) in out.iter().zip(&want) {
                        assert!(
                            (*g as f64 - r).abs() < 1e-5,
                            "{ratio} {d} {overlap} window {p}: {g} vs {r}"
                        );
                    }
                    closed += 1;
                }
            }
            assert_eq!(closed, 4, "a window closes every {ratio} positions");
        }
    }
}
