//! The grouped-query attention mixer: q/k/v in one pool operation over one quantised input,
//! optional biases, clamping and q/k norms, RoPE from a per-pass table, the KV cache, attention
//! parallel over heads, then the output projection. Reads `hn`, writes `out`.

use floe_kernels::matmul_group;
use floe_kernels::ops::{self, AttentionShape};

use super::forward::Model;
use super::session::{sized, Scratch, Seg};
use super::weights::AttentionWeights;
use crate::error::Result;
use crate::model::config::QkNorm;
use crate::model::spec::AttentionSpec;

/// Grouped-query attention's buffers.
#[derive(Debug, Default)]
pub(crate) struct AttentionScratch {
    /// Projected queries (and, with an output gate, their gate logits), keys and values.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    /// The heads' outputs, into the output projection.
    pub att: Vec<f32>,
    /// The attention output gate (Qwen3.5).
    pub gate: Vec<f32>,
}

impl Model {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attention(
        &self,
        l: usize,
        a: &AttentionSpec,
        w: &AttentionWeights,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (qd, kvd, hd) = (a.q_dim(), a.kv_dim(), a.head_dim);
        let pool = self.pool.as_ref();
        let (q, k, v) = (
            sized(&mut sc.attn.q, n * a.q_rows()),
            sized(&mut sc.attn.k, n * kvd),
            sized(&mut sc.attn.v, n * kvd),
        );
        {
            let (wq, wk) = (self.m(&w.q)?, self.m(&w.k)?);
            let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
            match &w.v {
                Some(wv) => matmul_group(
                    &mut [(&wq, &mut *q), (&wk, &mut *k), (&self.m(wv)?, &mut *v)],
                    &mut input,
                    pool,
                ),
                None => matmul_group(&mut [(&wq, &mut *q), (&wk, &mut *k)], &mut input, pool),
            }
            .map_err(crate::error::Error::Kernel)?;
            // Without a v projection the keys as projected are the values.
            if w.v.is_none() {
                v.copy_from_slice(k);
            }
        }
        if a.v_norm {
            for head in v.chunks_exact_mut(hd) {
                let ms = head.iter().map(|x| x * x).sum::<f32>() / hd as f32;
                let inv = 1.0 / (ms + self.spec.rms_eps).sqrt();
                head.iter_mut().for_each(|x| *x *= inv);
            }
        }
        // With an output gate each head's q rows are its queries then its gate logits: split
        // them, compacting the queries in place (each lands at or before where it was read).
        let gate = if a.output_gate {
            let gate = sized(&mut sc.attn.gate, n * qd);
            for t in 0..n {
                for h in 0..a.heads {
                    let src = t * 2 * qd + h * 2 * hd;
                    let dst = t * qd + h * hd;
                    gate[dst..dst + hd].copy_from_slice(&q[src + hd..src + 2 * hd]);
                    q.copy_within(src..src + hd, dst);
                }
            }
            Some(&*gate)
        } else {
            None
        };
        let q = &mut q[..n * qd];
        if let Some([qb, kb, vb]) = &w.bias {
            for (buf, b, width) in [(&mut *q, qb, qd), (&mut *k, kb, kvd), (&mut *v, vb, kvd)] {
                let bias = self.vec(b)?;
                buf.chunks_exact_mut(width)
                    .for_each(|r| r.iter_mut().zip(bias).for_each(|(a, b)| *a += b));
            }
        }
        if let Some(clip) = a.clip_qkv {
            for buf in [&mut *q, &mut *k, &mut *v] {
                buf.iter_mut().for_each(|x| *x = x.clamp(-clip, clip));
            }
        }
        if let Some([qn, kn]) = &w.qk_norm {
            for (buf, weight, full) in [(&mut *q, qn, qd), (&mut *k, kn, kvd)] {
                let weight = self.vec(weight)?;
                let width = if a.qk_norm == QkNorm::PerHead { hd } else { full };
                let tmp = sized(&mut sc.norm, width);
                for chunk in buf.chunks_exact_mut(width) {
                    ops::rms_norm(chunk, weight, self.spec.rms_eps, tmp);
                    chunk.copy_from_slice(tmp);
                }
            }
        }
        let inv = &self.inv_freq[l];
        super::forward::rope_rows(self, l, segs, &mut sc.rope_one, &mut sc.rope);
        for t in 0..n {
            let table = &sc.rope[t * inv.len()..(t + 1) * inv.len()];
            q[t * qd..(t + 1) * qd]
                .chunks_exact_mut(hd)
                .for_each(|x| ops::rope_from_table(x, table, a.rope.style));
            k[t * kvd..(t + 1) * kvd]
                .chunks_exact_mut(hd)
                .for_each(|x| ops::rope_from_table(x, table, a.rope.style));
        }
        let shape = AttentionShape {
            heads: a.heads,
            kv_heads: a.kv_heads,
            head_dim: hd,
            scale: a.scale,
            window: a.window,
        };
        let att = sized(&mut sc.attn.att, n * qd);
        let sinks = w.sinks.as_ref().map(|t| self.vec(t)).transpose()?;
        // Each sequence against its own cache.
        for seg in segs.iter_mut() {
            let (at, kv) = (seg.at, seg.kv(l)?);
            for t in at.range() {
                kv.store(
                    at.pos + t - at.start,
                    &k[t * kvd..(t + 1) * kvd],
                    &v[t * kvd..(t + 1) * kvd],
                );
            }
            let (qs, out) =
                (&q[at.start * qd..][..at.len * qd], &mut att[at.start * qd..][..at.len * qd]);
            kv.note_queries(qs);
            ops::attention(shape, qs, kv.view(), at.pos, at.len, out, sinks, pool);
        }
        if let Some(gate) = gate {
            att.iter_mut().zip(gate).for_each(|(x, &g)| *x *= 1.0 / (1.0 + (-g).exp()));
        }
        let h = self.spec.hidden;
        let out = sized(&mut sc.out, n * h);
        let mut input = sc.in_other.input(&sc.attn.att, n, self.activations);
        floe_kernels::matmul_input(&self.m(&w.o)?, &mut input, out, pool)
            .map_err(crate::error::Error::Kernel)?;
        if let Some(b) = &w.o_bias {
            let b = self.vec(b)?;
            out.chunks_exact_mut(h).for_each(|r| r.iter_mut().zip(b).for_each(|(x, y)| *x += y));
        }
        Ok(())
    }
}
