//! The multi-head latent attention mixer (DeepSeek-V2/V3), in the latent space (see `MlaSpec`):
//! q (plain or through its LoRA) and the latent with the shared RoPE key in one pool operation;
//! the latent RMSNorm'd and stored with the rotated key as one cache vector per position; each
//! head's no-RoPE query taken into the latent space by its `k_b`, its RoPE query rotated; one
//! attention over the shared cache (every head against the same vectors, as MQA); each head's
//! latent output taken out by its `v_b`; the output projection. Reads `hn`, writes `out`.

use floe_kernels::ops::{self, AttentionShape};
use floe_kernels::{matmul_group, matmul_input, Matrix};

use super::forward::{rms_rows, Model};
use super::session::{sized, Scratch, Seg};
use super::weights::{MlaQuery, MlaWeights};
use crate::error::{Error, Result};
use crate::model::spec::MlaSpec;

/// Multi-head latent attention's buffers.
#[derive(Debug, Default)]
pub(crate) struct MlaScratch {
    /// The projected queries and the layer's `[latent; rope key]` projection.
    pub q: Vec<f32>,
    pub kva: Vec<f32>,
    /// The query LoRA's output, and its normed form (which the sparse indexer reads too).
    pub qa: Vec<f32>,
    pub q_normed: Vec<f32>,
    /// Each position's cached row: the normed latent and the rotated key.
    pub latent: Vec<f32>,
    /// Queries in the latent space, per head.
    pub qlat: Vec<f32>,
    /// A head's gathered inputs and its product's result.
    pub gather: Vec<f32>,
    pub head: Vec<f32>,
    /// Each head's latent output, and its value output (into the output projection).
    pub att: Vec<f32>,
    pub vout: Vec<f32>,
}

/// Rows `first..first + count` of `m`.
pub(crate) fn rows<'a>(m: &Matrix<'a>, first: usize, count: usize) -> Result<Matrix<'a>> {
    let rb = m.dtype().row_bytes(m.cols()).map_err(crate::error::Error::Kernel)?;
    let bytes = m.bytes().get(first * rb..(first + count) * rb).ok_or_else(|| {
        Error::Invalid(format!("rows {first}+{count} of a {}-row matrix", m.rows()))
    })?;
    Matrix::new(m.dtype(), count, m.cols(), bytes).map_err(crate::error::Error::Kernel)
}

/// Where a per-head product reads: the buffer, its stride per token, the head's offset, width.
pub(crate) type HeadSource<'a> = (&'a [f32], usize, usize, usize);
/// Where it writes: the buffer, its stride per token, the head's offset (the width is `w`'s rows).
pub(crate) type HeadTarget<'a> = (&'a mut [f32], usize, usize);

impl Model {
    /// One head's `w` (its block of `k_b` or `v_b`) times that head's values of every token:
    /// gathered into one `n`-token input, multiplied, scattered back.
    pub(crate) fn head_product(
        &self,
        w: &Matrix,
        n: usize,
        (src, src_stride, src_at, width): HeadSource,
        (dst, dst_stride, dst_at): HeadTarget,
        (gather, head, bufs): (&mut Vec<f32>, &mut Vec<f32>, &mut floe_kernels::InputBuffers),
    ) -> Result<()> {
        let g = sized(gather, n * width);
        for t in 0..n {
            g[t * width..(t + 1) * width].copy_from_slice(&src[t * src_stride + src_at..][..width]);
        }
        let rows = w.rows();
        let out = sized(head, n * rows);
        let mut input = bufs.input(g, n, self.activations);
        matmul_input(w, &mut input, out, self.pool.as_ref())
            .map_err(crate::error::Error::Kernel)?;
        for t in 0..n {
            dst[t * dst_stride + dst_at..][..rows].copy_from_slice(&out[t * rows..(t + 1) * rows]);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn mla(
        &self,
        l: usize,
        m: &MlaSpec,
        w: &MlaWeights,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (heads, nope, r, rank, vd) = (m.heads, m.nope, m.rope.dims, m.kv_rank, m.v_dim);
        let (qh, lat) = (nope + r, m.latent_dim());
        let pool = self.pool.as_ref();
        let eps = self.spec.rms_eps;
        let q = sized(&mut sc.mla.q, n * m.q_dim());
        let kva = sized(&mut sc.mla.kva, n * lat);
        let wkva = self.m(&w.kv_a)?;
        match &w.q {
            MlaQuery::Plain(wq) => {
                let wq = self.m(wq)?;
                let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
                matmul_group(&mut [(&wq, &mut *q), (&wkva, &mut *kva)], &mut input, pool)
                    .map_err(crate::error::Error::Kernel)?;
            }
            MlaQuery::Lora { a, norm, b } => {
                let (wa, wb) = (self.m(a)?, self.m(b)?);
                let qa_dim = wa.rows();
                let qa = sized(&mut sc.mla.qa, n * qa_dim);
                {
                    let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
                    matmul_group(&mut [(&wa, &mut *qa), (&wkva, &mut *kva)], &mut input, pool)
                        .map_err(crate::error::Error::Kernel)?;
                }
                let normed = sized(&mut sc.mla.q_normed, n * qa_dim);
                rms_rows(qa, self.vec(norm)?, eps, qa_dim, normed);
                let mut input = sc.in_other.input(normed, n, self.activations);
                matmul_input(&wb, &mut input, q, pool).map_err(crate::error::Error::Kernel)?;
            }
        }
        // Cache vectors: the normalised latent, then the rotated shared key.
        let inv = &self.inv_freq[l];
        super::forward::rope_rows(self, l, segs, &mut sc.rope_one, &mut sc.rope);
        let kv_norm = self.vec(&w.kv_a_norm)?;
        let latent = sized(&mut sc.mla.latent, n * lat);
        for t in 0..n {
            let (src, dst) = (&kva[t * lat..(t + 1) * lat], &mut latent[t * lat..(t + 1) * lat]);
            ops::rms_norm(&src[..rank], kv_norm, eps, &mut dst[..rank]);
            dst[rank..].copy_from_slice(&src[rank..]);
            let table = &sc.rope[t * inv.len()..(t + 1) * inv.len()];
            ops::rope_from_table(&mut dst[rank..], table, m.rope.style);
        }
        for seg in segs.iter_mut() {
            let (at, kv) = (seg.at, seg.kv(l)?);
            for t in at.range() {
                kv.store_shared(at.pos + t - at.start, &latent[t * lat..(t + 1) * lat]);
            }
        }
        // Queries in the latent space: per head, k_b times its no-RoPE part; then its RoPE part.
        let qlat = sized(&mut sc.mla.qlat, n * heads * lat);
        let k_b = self.m(&w.k_b)?;
        for h in 0..heads {
            let bufs = (&mut sc.mla.gather, &mut sc.mla.head, &mut sc.in_other);
            let src = (&*q, heads * qh, h * qh, nope);
            self.head_product(
                &rows(&k_b, h * rank, rank)?,
                n,
                src,
                (qlat, heads * lat, h * lat),
                bufs,
            )?;
            for t in 0..n {
                let dst = &mut qlat[(t * heads + h) * lat + rank..][..r];
                dst.copy_from_slice(&q[(t * heads + h) * qh + nope..][..r]);
                let table = &sc.rope[t * inv.len()..(t + 1) * inv.len()];
                ops::rope_from_table(dst, table, m.rope.style);
            }
        }
        // Sparse attention: this layer's indexer picks each row's positions (a shared layer
        // keeps the previous layer's picks).
        if let (Some(ix), Some(iw)) = (m.indexer.filter(|ix| ix.full), &w.indexer) {
            let q_latent = std::mem::take(&mut sc.mla.q_normed);
            let qa_dim = q_latent.len() / n.max(1);
            let r = self.dsa_select(l, &ix, iw, segs, sc, n, &q_latent[..n * qa_dim]);
            sc.mla.q_normed = q_latent;
            r?;
        }
        let shape =
            AttentionShape { heads, kv_heads: 1, head_dim: lat, scale: m.scale, window: None };
        // Each head's output is its latent part only (the RoPE part is not a value).
        if let Some(ix) = m.indexer {
            let qlat = std::mem::take(&mut sc.mla.qlat);
            let r = self.dsa_attention(l, m, ix.topk, segs, sc, n, &qlat[..n * heads * lat]);
            sc.mla.qlat = qlat;
            r?;
        } else {
            let att = sized(&mut sc.mla.att, n * heads * rank);
            let (w_row, o_row) = (heads * lat, heads * rank);
            for seg in segs.iter_mut() {
                let (at, kv) = (seg.at, seg.kv(l)?);
                let (qs, out) = (
                    &sc.mla.qlat[at.start * w_row..][..at.len * w_row],
                    &mut att[at.start * o_row..][..at.len * o_row],
                );
                kv.note_queries(qs);
                ops::attention(shape, qs, kv.view(), at.pos, at.len, out, None, pool);
            }
        }
        // Per head, v_b times its latent output.
        let v_b = self.m(&w.v_b)?;
        let vout = sized(&mut sc.mla.vout, n * heads * vd);
        for h in 0..heads {
            let bufs = (&mut sc.mla.gather, &mut sc.mla.head, &mut sc.in_other);
            let src = (&sc.mla.att[..n * heads * rank], heads * rank, h * rank, rank);
            self.head_product(&rows(&v_b, h * vd, vd)?, n, src, (vout, heads * vd, h * vd), bufs)?;
        }
        let out = sized(&mut sc.out, n * self.spec.hidden);
        let mut input = sc.in_other.input(&sc.mla.vout, n, self.activations);
        matmul_input(&self.m(&w.o)?, &mut input, out, pool).map_err(crate::error::Error::Kernel)
    }
}
