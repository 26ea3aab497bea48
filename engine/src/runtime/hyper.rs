//! Hyper-connections (see `HyperSpec`): the residual as `streams` parallel copies of each row.
//! Before a block, each row's streams (RMS-normed together, without weight) are projected to
//! its weights: `pre` collapses the streams into the block's input, `post` spreads the block's
//! output back over them, and `mix` (made doubly stochastic by Sinkhorn-Knopp iterations) mixes
//! the old streams into the new: `new[k] = post[k] out + sum_j mix[j][k] old[j]`. The hyper
//! head collapses the streams once more before the final norm.

use floe_kernels::matmul_input;

use super::forward::Model;
use super::session::{sized, Scratch};
use super::weights::HyperWeights;
use crate::error::{Error, Result};
use crate::model::spec::HyperSpec;

/// Hyper-connections' buffers: each row's streams RMS-normed as one vector, their weights
/// (pre, post, mix) per row, the block input they collapse to, and the new streams before they
/// replace the residual.
#[derive(Debug, Default)]
pub(crate) struct HyperScratch {
    pub flat: Vec<f32>,
    pub mix: Vec<f32>,
    pub input: Vec<f32>,
    pub next: Vec<f32>,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Each row of `x` (`width` wide) RMS-normed without weight into `out`.
fn unit_rms_rows(x: &[f32], width: usize, eps: f32, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let inv = 1.0 / (xr.iter().map(|v| v * v).sum::<f32>() / width as f32 + eps).sqrt();
        or.iter_mut().zip(xr).for_each(|(o, v)| *o = v * inv);
    }
}

/// One row's projected weights to `pre`, `post` and the doubly-stochastic `mix` in place
/// (`streams`, `streams`, `streams x streams`, in that order).
fn weights_of(hc: &HyperSpec, m: &mut [f32], base: &[f32], scale: &[f32]) {
    let s = hc.streams;
    let (pre, rest) = m.split_at_mut(s);
    let (post, mix) = rest.split_at_mut(s);
    for (i, p) in pre.iter_mut().enumerate() {
        *p = sigmoid(*p * scale[0] + base[i]) + hc.eps;
    }
    for (i, p) in post.iter_mut().enumerate() {
        *p = 2.0 * sigmoid(*p * scale[1] + base[s + i]);
    }
    for (i, row) in mix.chunks_exact_mut(s).enumerate() {
        let b = &base[2 * s + i * s..2 * s + (i + 1) * s];
        row.iter_mut().zip(b).for_each(|(v, &bb)| *v = *v * scale[2] + bb);
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        row.iter_mut().for_each(|v| {
            *v = (*v - max).exp();
            sum += *v;
        });
        row.iter_mut().for_each(|v| *v = *v / sum + hc.eps);
    }
    let columns = |mix: &mut [f32]| {
        for j in 0..s {
            let sum: f32 = (0..s).map(|i| mix[i * s + j]).sum::<f32>() + hc.eps;
            (0..s).for_each(|i| mix[i * s + j] /= sum);
        }
    };
    columns(mix);
    for _ in 1..hc.sinkhorn_iters {
        for row in mix.chunks_exact_mut(s) {
            let sum: f32 = row.iter().sum::<f32>() + hc.eps;
            row.iter_mut().for_each(|v| *v /= sum);
        }
        columns(mix);
    }
}

/// `out` = the streams of one row (`streams` x `out.len()`) weighed by `weight(i)` and summed.
fn collapse(streams: &[f32], weight: impl Fn(usize) -> f32, out: &mut [f32]) {
    out.fill(0.0);
    for (i, stream) in streams.chunks_exact(out.len()).enumerate() {
        let c = weight(i);
        out.iter_mut().zip(stream).for_each(|(o, v)| *o += c * v);
    }
}

impl Model {
    /// Every row's streams RMS-normed together and projected by `w` into `sc.hc.mix`
    /// (`w`'s rows per row of the pass).
    fn stream_projection(
        &self,
        hc: &HyperSpec,
        w: &HyperWeights,
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let width = hc.streams * self.spec.hidden;
        let flat = sized(&mut sc.hc.flat, n * width);
        unit_rms_rows(&sc.x[..n * width], width, self.spec.rms_eps, flat);
        let proj = self.m(&w.proj)?;
        let mix = sized(&mut sc.hc.mix, n * proj.rows());
        let mut input = sc.in_other.input(flat, n, self.activations);
        matmul_input(&proj, &mut input, mix, self.pool.as_ref()).map_err(Error::Kernel)
    }

    /// Before a block: every row's weights into `sc.hc.mix`, its collapsed streams (the
    /// block's input, before the block's norm) into `sc.hc.input`.
    pub(crate) fn hyper_pre(
        &self,
        hc: &HyperSpec,
        w: &HyperWeights,
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (s, h) = (hc.streams, self.spec.hidden);
        let per = (2 + s) * s;
        self.stream_projection(hc, w, sc, n)?;
        let (base, scale) = (self.vec(&w.base)?, self.vec(&w.scale)?);
        let collapsed = sized(&mut sc.hc.input, n * h);
        for t in 0..n {
            let m = &mut sc.hc.mix[t * per..(t + 1) * per];
            weights_of(hc, m, base, scale);
            let streams = &sc.x[t * s * h..(t + 1) * s * h];
            collapse(streams, |i| m[i], &mut collapsed[t * h..(t + 1) * h]);
        }
        Ok(())
    }

    /// After a block: the streams become `post[k] out + sum_j mix[j][k] streams[j]`.
    pub(crate) fn hyper_post(&self, hc: &HyperSpec, sc: &mut Scratch, n: usize) {
        let (s, h) = (hc.streams, self.spec.hidden);
        let per = (2 + s) * s;
        let next = sized(&mut sc.hc.next, n * s * h);
        for t in 0..n {
            let m = &sc.hc.mix[t * per..(t + 1) * per];
            let (post, mix) = (&m[s..2 * s], &m[2 * s..]);
            let old = &sc.x[t * s * h..(t + 1) * s * h];
            let out = &sc.out[t * h..(t + 1) * h];
            for (k, new) in next[t * s * h..(t + 1) * s * h].chunks_exact_mut(h).enumerate() {
                new.iter_mut().zip(out).for_each(|(d, &o)| *d = post[k] * o);
                for (j, stream) in old.chunks_exact(h).enumerate() {
                    let c = mix[j * s + k];
                    new.iter_mut().zip(stream).for_each(|(d, &v)| *d += c * v);
                }
            }
        }
        std::mem::swap(&mut sc.x, &mut sc.hc.next);
    }

    /// The hyper head: every row's streams collapsed to one into `sc.hc.input`.
    pub(crate) fn hyper_head(
        &self,
        hc: &HyperSpec,
        w: &HyperWeights,
        sc: &mut Scratch,
        n: usize,
    ) -> Result<()> {
        let (s, h) = (hc.streams, self.spec.hidden);
        self.stream_projection(hc, w, sc, n)?;
        let (base, scale) = (self.vec(&w.base)?, self.vec(&w.scale)?[0]);
        let collapsed = sized(&mut sc.hc.input, n * h);
        for t in 0..n {
            let m = &sc.hc.mix[t * s..(t + 1) * s];
            let pre = |i: usize| sigmoid(m[i] * scale + base[i]) + hc.eps;
            let streams = &sc.x[t * s * h..(t + 1) * s * h];
            collapse(streams, pre, &mut collapsed[t * h..(t + 1) * h]);
        }
        Ok(())
    }
}
