//! DeepSeek sparse attention (GLM-5) on top of the MLA mixer: the lightning indexer picks, per
//! query, the `topk` visible positions it scores highest (see `IndexerSpec`), and the latent
//! attention reads only those. A layer whose indexer is "shared" reuses the previous layer's
//! selection of the same pass. Selections are per sequence: positions index its own cache.

use floe_kernels::matmul_group;
use floe_kernels::ops;

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
    /// The rows and scores of one token's selection, and its picks.
    pub pick: Vec<usize>,
    pub rows: Vec<f32>,
    pub scores: Vec<f32>,
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
        sc.dsa.sel.clear();
        sc.dsa.sel.resize(n * k, UNSELECTED);
        let sel = &mut sc.dsa.sel;
        let (scores, order) = (&mut sc.dsa.scores, &mut sc.dsa.pick);
        for seg in segs.iter_mut() {
            let (at, kv) = (seg.at, seg.kv(l)?);
            for t in at.range() {
                kv.store_index_key(at.pos + t - at.start, &key[t * d..(t + 1) * d]);
            }
            for t in at.range() {
                let visible = at.pos + t - at.start + 1;
                let keys = kv.index_keys(visible);
                // Sized as the cache grows (powers of two from 256): decode allocates nothing
                // in between.
                let room = visible.next_power_of_two().max(256);
                scores.clear();
                scores.reserve(room);
                order.reserve(room);
                for kj in keys.chunks_exact(d) {
                    let mut s = 0.0f32;
                    for h in 0..heads {
                        let qh = &q[(t * heads + h) * d..][..d];
                        let dot: f32 = qh.iter().zip(kj).map(|(a, b)| a * b).sum();
                        s += wt[t * heads + h] * wscale * (dot * qscale).max(0.0);
                    }
                    scores.push(s);
                }
                let out = &mut sel[t * k..(t + 1) * k];
                out.fill(UNSELECTED);
                if visible <= k {
                    out[..visible].iter_mut().enumerate().for_each(|(j, o)| *o = j);
                } else {
                    order.clear();
                    order.extend(0..visible);
                    order.select_nth_unstable_by(k - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
                    out.copy_from_slice(&order[..k]);
                }
                kv.note_selection(out);
            }
        }
        Ok(())
    }

    /// Latent attention of every row over its selected positions only (`sc.dsa.sel`): per
    /// head, a softmax over the selection of `q . row * scale`, the output the selected rows'
    /// latent parts weighted by it. `qlat` is `n x heads x latent`; writes `n x heads x rank`.
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
        let att = sized(&mut sc.mla.att, n * heads * rank);
        let (sel, rows, scores) = (&sc.dsa.sel, &mut sc.dsa.rows, &mut sc.dsa.scores);
        let picked = &mut sc.dsa.pick;
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
                let r = sized(rows, picked.len() * lat);
                for (i, &p) in picked.iter().enumerate() {
                    kv.load_shared(p, &mut r[i * lat..(i + 1) * lat]);
                }
                for h in 0..heads {
                    let qh = &qlat[(t * heads + h) * lat..][..lat];
                    scores.clear();
                    scores.extend(
                        r.chunks_exact(lat).map(|row| {
                            qh.iter().zip(row).map(|(a, b)| a * b).sum::<f32>() * m.scale
                        }),
                    );
                    ops::softmax(scores);
                    let out = &mut att[(t * heads + h) * rank..][..rank];
                    out.fill(0.0);
                    for (row, &p) in r.chunks_exact(lat).zip(scores.iter()) {
                        out.iter_mut().zip(&row[..rank]).for_each(|(o, v)| *o += p * v);
                    }
                }
            }
        }
        Ok(())
    }
}
