//! The Gated DeltaNet mixer (Qwen3.5, Qwen3-Next): q/k/v, output gate, beta and decay-step projections in
//! one pool operation; the causal convolution with SiLU over q/k/v; q and k L2-normalised per
//! head (q also scaled by 1/sqrt(key_dim)); then per value head, in parallel, the gated delta
//! rule token by token from the session's state; the gated RMSNorm (norm, then times SiLU(z));
//! the output projection. Prefill runs the same recurrence as decode (exact against
//! transformers' recurrent path; its chunked path differs from that by ~6e-5). Reads `hn`,
//! writes `out`.

use floe_kernels::matmul_group;
use floe_kernels::ops;

use super::forward::Model;
use super::session::{sized, Scratch, Seg};
use super::weights::{BetaAlpha, DeltaNetWeights};
use crate::error::Result;
use crate::model::spec::DeltaNetSpec;

/// Gated DeltaNet's buffers.
#[derive(Debug, Default)]
pub(crate) struct DeltaNetScratch {
    /// The q/k/v projection and the output gate's.
    pub qkv: Vec<f32>,
    pub z: Vec<f32>,
    /// Per (token, value head): beta and the decay's input; Qwen3-Next's fused projection of
    /// both before it is split.
    pub beta: Vec<f32>,
    pub alpha: Vec<f32>,
    pub beta_alpha: Vec<f32>,
    /// Per-head outputs of the recurrence.
    pub heads: Vec<f32>,
    /// One position's convolution input row.
    pub conv_row: Vec<f32>,
    /// The heads' normed, gated output, into the output projection.
    pub gated: Vec<f32>,
}

/// transformers' `l2norm` epsilon.
const L2_EPS: f32 = 1e-6;

impl Model {
    pub(crate) fn delta_net(
        &self,
        l: usize,
        d: &DeltaNetSpec,
        w: &DeltaNetWeights,
        segs: &mut [Seg],
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (c, vt, nv, nk) = (d.qkv_dim(), d.value_total(), d.value_heads, d.key_heads);
        let (dk, dv) = (d.key_dim, d.value_dim);
        let pool = self.pool.as_ref();
        let (qkv, z) = (sized(&mut sc.lin.qkv, n * c), sized(&mut sc.lin.z, n * vt));
        let (b, a) = (sized(&mut sc.lin.beta, n * nv), sized(&mut sc.lin.alpha, n * nv));
        {
            let (wqkv, wz) = (self.m(&w.qkv)?, self.m(&w.gate)?);
            let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
            match w.beta_alpha {
                BetaAlpha::Split { beta, alpha } => {
                    let (wb, wa) = (self.m(&beta)?, self.m(&alpha)?);
                    matmul_group(
                        &mut [(&wqkv, &mut *qkv), (&wz, &mut *z), (&wb, &mut *b), (&wa, &mut *a)],
                        &mut input,
                        pool,
                    )
                }
                BetaAlpha::Grouped(ba) => {
                    let wba = self.m(&ba)?;
                    let fused = sized(&mut sc.lin.beta_alpha, n * 2 * nv);
                    let r = matmul_group(
                        &mut [(&wqkv, &mut *qkv), (&wz, &mut *z), (&wba, &mut *fused)],
                        &mut input,
                        pool,
                    );
                    // Per key head: its value heads' betas, then their alphas.
                    let per = nv / nk.max(1);
                    for ((f, bt), at) in fused
                        .chunks_exact(2 * nv)
                        .zip(b.chunks_exact_mut(nv))
                        .zip(a.chunks_exact_mut(nv))
                    {
                        for (g, pair) in f.chunks_exact(2 * per).enumerate() {
                            bt[g * per..(g + 1) * per].copy_from_slice(&pair[..per]);
                            at[g * per..(g + 1) * per].copy_from_slice(&pair[per..]);
                        }
                    }
                    r
                }
            }
            .map_err(crate::error::Error::Kernel)?;
        }
        let row = sized(&mut sc.lin.conv_row, c);
        let conv = self.vec(&w.conv)?;
        for seg in segs.iter_mut() {
            let (at, st) = (seg.at, seg.delta(l)?);
            let x = &mut qkv[at.start * c..(at.start + at.len) * c];
            ops::causal_conv1d_silu(x, c, d.conv_kernel, conv, &mut st.conv, row);
        }
        let q_scale = 1.0 / (dk as f32).sqrt();
        for t in qkv.chunks_exact_mut(c) {
            let (qk, _) = t.split_at_mut(2 * nk * dk);
            for (i, head) in qk.chunks_exact_mut(dk).enumerate() {
                ops::l2_normalize(head, L2_EPS, if i < nk { q_scale } else { 1.0 });
            }
        }
        // b becomes beta = sigmoid(b); a becomes the decay exp(A * softplus(a + dt_bias)).
        let (big_a, dt) = (self.vec(&w.a)?, self.vec(&w.dt_bias)?);
        for (bt, at) in b.chunks_exact_mut(nv).zip(a.chunks_exact_mut(nv)) {
            for j in 0..nv {
                bt[j] = 1.0 / (1.0 + (-bt[j]).exp());
                at[j] = (big_a[j] * ops::softplus(at[j] + dt[j])).exp();
            }
        }
        // Per sequence, per value head (reading key head `d.key_head(j)`): its state and its
        // outputs; then the gated RMSNorm per (token, head), written token-major for the output
        // projection.
        let norm_w = self.vec(&w.norm)?;
        let gated = sized(&mut sc.lin.gated, n * vt);
        let (qkv, b, a) = (&*qkv, &*b, &*a);
        let per_state = dk * dv;
        for seg in segs.iter_mut() {
            let (at, st) = (seg.at, seg.delta(l)?);
            let len = at.len;
            let heads = sized(&mut sc.lin.heads, nv * len * dv);
            let run = |j: usize, s: &mut [f32], out: &mut [f32]| {
                let kh = d.key_head(j);
                for (i, o) in out.chunks_exact_mut(dv).enumerate() {
                    let t = at.start + i;
                    let x = &qkv[t * c..(t + 1) * c];
                    let q = &x[kh * dk..(kh + 1) * dk];
                    let k = &x[(nk + kh) * dk..(nk + kh + 1) * dk];
                    let v = &x[2 * nk * dk + j * dv..][..dv];
                    ops::gated_delta_step(s, q, k, v, a[t * nv + j], b[t * nv + j], o);
                }
            };
            match pool {
                Some(p) if nv > 1 => {
                    p.for_each_chunk_pair(&mut st.recurrent, per_state, heads, len * dv, &run)
                }
                _ => st
                    .recurrent
                    .chunks_exact_mut(per_state)
                    .zip(heads.chunks_exact_mut(len * dv))
                    .enumerate()
                    .for_each(|(j, (s, o))| run(j, s, o)),
            }
            for j in 0..nv {
                for i in 0..len {
                    let t = at.start + i;
                    let o = &heads[(j * len + i) * dv..][..dv];
                    let dst = &mut gated[t * vt + j * dv..][..dv];
                    ops::rms_norm(o, norm_w, self.spec.rms_eps, dst);
                    let zt = &z[t * vt + j * dv..][..dv];
                    dst.iter_mut().zip(zt).for_each(|(y, &g)| *y *= ops::silu(g));
                }
            }
        }
        let out = sized(&mut sc.out, n * self.spec.hidden);
        let mut input = sc.in_other.input(&sc.lin.gated, n, self.activations);
        floe_kernels::matmul_input(&self.m(&w.out)?, &mut input, out, pool)
            .map_err(crate::error::Error::Kernel)
    }
}
