//! DeepSeek sparse attention (GLM-5) on top of the MLA mixer: the lightning indexer picks, per
//! query, the `topk` visible positions it scores highest (see `IndexerSpec`), and the latent
//! attention reads only those. A layer whose indexer is "shared" reuses the previous layer's
//! selection of the same pass. Selections are per sequence: positions index its own cache.

use floe_kernels::ops::{self, AttentionShape};
use floe_kernels::{matmul_group, DType, InputBuffers, Matrix, TokenKernels};

use super::forward::Model;
use super::session::{sized, Scratch, Seg};
use super::weights::IndexerWeights;
use crate::error::Result;
use crate::model::spec::{IndexerSpec, MlaSpec};

/// Sparse attention's buffers.
#[derive(Debug, Default)]
pub(crate) struct DsaScratch {
    /// The indexer's queries, keys and head weights.
    pub idx_q: Vec<f32>,
    pub idx_k: Vec<f32>,
    pub idx_w: Vec<f32>,
    /// Each token's selected positions (`topk` per token, `usize::MAX` past the visible ones;
    /// kept for the layers that reuse them).
    pub sel: Vec<usize>,
    /// One token's indexer scores, and its picks.
    pub pick: Vec<usize>,
    pub scores: Vec<f32>,
    /// The indexer's products.
    pub index: IndexerBufs,
}

/// The lightning indexer's buffers (GLM-5's and DeepSeek-V4's): one query's per-head dots with
/// every key (`heads x keys`), and its heads' input buffers.
#[derive(Debug, Default)]
pub(crate) struct IndexerBufs {
    raw: Vec<f32>,
    heads_in: InputBuffers,
}

/// How a lightning indexer weighs a head's dot with a key: `weight_h * relu(dot * inner) *
/// outer` (GLM-5 scales inside the ReLU, DeepSeek-V4 after it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexScale {
    pub inner: f32,
    pub outer: f32,
}

/// The indexer key's LayerNorm epsilon (transformers' `nn.LayerNorm(head_dim, eps=1e-6)`).
const K_NORM_EPS: f32 = 1e-6;

/// A position a query does not attend (past the visible ones when they are fewer than `topk`).
pub(crate) const UNSELECTED: usize = usize::MAX;

impl Model {
    /// The indexer of layer `l`: its keys stored in each sequence's cache, each row's
    /// selection into `sc.dsa.sel` (`topk` per row). `q_latent` is the query LoRA's normed
    /// latent of every row; `sc.hn` the layer input; `sc.rope` the pass's RoPE table.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dsa_select(
        &self,
        l: usize,
        ix: &IndexerSpec,
        w: &IndexerWeights,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
        q_latent: &[f32],
    ) -> Result<()> {
        let (heads, d, rd, k) = (ix.heads, ix.head_dim, ix.rope_dims, ix.topk);
        let pool = self.pool.as_ref();
        let (q, key, wt) = (
            sized(&mut sc.dsa.idx_q, n * heads * d),
            sized(&mut sc.dsa.idx_k, n * d),
            sized(&mut sc.dsa.idx_w, n * heads),
        );
        {
            let (wk, ww) = (self.m(&w.k)?, self.m(&w.weights)?);
            let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
            matmul_group(&mut [(&wk, &mut *key), (&ww, &mut *wt)], &mut input, pool)
                .map_err(crate::error::Error::Kernel)?;
            let mut qi = sc.in_other.input(q_latent, n, self.activations);
            floe_kernels::matmul_input(&self.m(&w.q)?, &mut qi, q, pool)
                .map_err(crate::error::Error::Kernel)?;
        }
        let (kw, kb) = (self.vec(&w.k_norm[0])?, self.vec(&w.k_norm[1])?);
        let inv = &self.inv_freq[l];
        let style = floe_kernels::ops::RopeStyle::Interleaved;
        for t in 0..n {
            let row = &mut key[t * d..(t + 1) * d];
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / d as f32;
            let inv_sd = 1.0 / (var + K_NORM_EPS).sqrt();
            for ((x, &g), &b) in row.iter_mut().zip(kw).zip(kb) {
                *x = (*x - mean) * inv_sd * g + b;
            }
            let table = &sc.rope[t * inv.len()..(t + 1) * inv.len()];
            ops::rope_from_table(&mut row[..rd], table, style);
            for h in q[t * heads * d..(t + 1) * heads * d].chunks_exact_mut(d) {
                ops::rope_from_table(&mut h[..rd], table, style);
            }
        }
        let (qscale, wscale) = (1.0 / (d as f32).sqrt(), 1.0 / (heads as f32).sqrt());
        wt.iter_mut().for_each(|w| *w *= wscale);
        sc.dsa.sel.clear();
        sc.dsa.sel.resize(n * k, UNSELECTED);
        let sel = &mut sc.dsa.sel;
        let (scores, order, index) = (&mut sc.dsa.scores, &mut sc.dsa.pick, &mut sc.dsa.index);
        for seg in segs.iter_mut() {
            let (at, kv) = (seg.at, seg.kv(l)?);
            for t in at.range() {
                kv.store_index_key(at.pos + t - at.start, &key[t * d..(t + 1) * d]);
            }
            for t in at.range() {
                let visible = at.pos + t - at.start + 1;
                let out = &mut sel[t * k..(t + 1) * k];
                out.fill(UNSELECTED);
                if visible <= k {
                    // Every visible position is picked: nothing to score.
                    out[..visible].iter_mut().enumerate().for_each(|(j, o)| *o = j);
                    kv.note_selection(out);
                    continue;
                }
                let qt = &q[t * heads * d..(t + 1) * heads * d];
                let weights = &wt[t * heads..(t + 1) * heads];
                let scale = IndexScale { inner: qscale, outer: 1.0 };
                let keys = kv.index_keys(visible);
                self.index_scores(qt, keys, weights, scale, index, scores)?;
                order.reserve(visible.next_power_of_two().max(256));
                order.clear();
                order.extend(0..visible);
                order.select_nth_unstable_by(k - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
                out.copy_from_slice(&order[..k]);
                kv.note_selection(out);
            }
        }
        Ok(())
    }

    /// The lightning indexer's score of each of `keys` (`keys x d`) for one query (`q`,
    /// `heads x d`): `sum_h weights[h] * relu(q_h . key * inner) * outer`, heads in order, into
    /// `scores`. The dots are one f32 product with the heads as its tokens, always through the
    /// tiles, so a query scores alike in a prompt and alone.
    pub(crate) fn index_scores(
        &self,
        q: &[f32],
        keys: &[f32],
        weights: &[f32],
        scale: IndexScale,
        bufs: &mut IndexerBufs,
        scores: &mut Vec<f32>,
    ) -> Result<()> {
        let (heads, d) = (weights.len(), q.len() / weights.len().max(1));
        let count = keys.len() / d.max(1);
        // Sized as the keys grow (powers of two from 256): decode allocates nothing between.
        let room = count.next_power_of_two().max(256);
        scores.clear();
        scores.reserve(room);
        scores.resize(count, 0.0);
        if count == 0 {
            return Ok(());
        }
        bufs.raw.clear();
        bufs.raw.reserve(room * heads);
        bufs.raw.resize(count * heads, 0.0);
        let km = Matrix::new(DType::F32, count, d, bytemuck::cast_slice(keys))
            .map_err(crate::error::Error::Kernel)?;
        bufs.heads_in.set_kernels(TokenKernels::Tiles);
        let mut input = bufs.heads_in.input(q, heads, self.activations);
        floe_kernels::matmul_input(&km, &mut input, &mut bufs.raw, self.pool.as_ref())
            .map_err(crate::error::Error::Kernel)?;
        for (dots, &w) in bufs.raw.chunks_exact(count).zip(weights) {
            for (s, &dot) in scores.iter_mut().zip(dots) {
                *s += w * (dot * scale.inner).max(0.0) * scale.outer;
            }
        }
        Ok(())
    }

    /// Latent attention of every row over its selected positions only (`sc.dsa.sel`), through
    /// the same tiled attention kernel as dense MLA (every head against the shared rows, the
    /// output their latent parts). `qlat` is `n x heads x latent`; writes `n x heads x rank`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dsa_attention(
        &self,
        l: usize,
        m: &MlaSpec,
        k: usize,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
        qlat: &[f32],
    ) -> Result<()> {
        let (heads, rank, lat) = (m.heads, m.kv_rank, m.latent_dim());
        let shape =
            AttentionShape { heads, kv_heads: 1, head_dim: lat, scale: m.scale, window: None };
        let att = sized(&mut sc.mla.att, n * heads * rank);
        let (sel, picked) = (&sc.dsa.sel, &mut sc.dsa.pick);
        for seg in segs.iter_mut() {
            let (at, kv) = (seg.at, seg.kv(l)?);
            for t in at.range() {
                picked.clear();
                picked.extend(
                    sel[t * k..(t + 1) * k]
                        .iter()
                        .copied()
                        .filter(|&p| p != UNSELECTED && p <= at.pos + t - at.start),
                );
                let (q, out) = (
                    &qlat[t * heads * lat..][..heads * lat],
                    &mut att[t * heads * rank..][..heads * rank],
                );
                ops::attention_at(shape, q, kv.view(), picked, out, self.pool.as_ref());
            }
        }
        Ok(())
    }
}
