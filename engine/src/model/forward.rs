//! The forward pass: embeddings, attention with RoPE, GQA and a KV cache, the MoE block (router
//! in f32, softmax, top-k, optional renormalisation, shared expert) or a dense MLP, final norm
//! and lm_head; a chunk of prompt tokens runs as a batch, decode one token at a time.

use floe_kernels::ops::{self, AttentionShape, RopeStyle};
use floe_kernels::{matmul_with, KernelPool, Matrix, QuantActivations};

use super::arch::Dense;
use super::config::{ModelConfig, QkNorm};
use super::experts::ExpertSource;
use super::format::DenseWeights;
use crate::error::{Error, Result};

/// What the router chose for one token at one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRecord {
    /// Decoder layer.
    pub layer: usize,
    /// Token position.
    pub pos: usize,
    /// Chosen experts with their final weights, in router rank order.
    pub experts: Vec<(usize, f32)>,
}

/// Per-sequence state: the KV cache and the position.
#[derive(Debug, Default)]
pub struct Session {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    pos: usize,
    step: u64,
    /// When set, every routing decision is appended here.
    pub routes: Option<Vec<RouteRecord>>,
}

impl Session {
    /// A session that records every routing decision in `routes`.
    pub fn recording() -> Self {
        Self { routes: Some(Vec::new()), ..Self::default() }
    }

    /// Tokens processed so far.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Bytes held by the KV cache.
    pub fn kv_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(|x| x.len() * 4).sum()
    }
}

/// A model ready to run: config, resident dense weights, an expert source.
pub struct Model {
    /// The configuration.
    pub cfg: ModelConfig,
    dense: DenseWeights,
    experts: Box<dyn ExpertSource>,
    pool: Option<KernelPool>,
    inv_freq: Vec<f32>,
    activations: QuantActivations,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("arch", &self.cfg.arch).field("dense", &self.dense).finish()
    }
}

fn rms_rows(x: &[f32], w: &[f32], eps: f32, width: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        ops::rms_norm(xr, w, eps, or);
    }
}

impl Model {
    /// Assembles a model. `threads` > 1 runs the matrix products on a pool of that many threads.
    pub fn new(
        cfg: ModelConfig,
        dense: DenseWeights,
        experts: Box<dyn ExpertSource>,
        threads: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        super::validate::check_dense(&cfg, &dense)
            .map_err(|error| Error::Field { origin: "dense weights".into(), error })?;
        let pool = if threads > 1 {
            Some(KernelPool::new(threads).map_err(|e| Error::Invalid(e.to_string()))?)
        } else {
            None
        };
        let inv_freq = ops::rope_inv_freq(cfg.head_dim, cfg.rope_theta);
        Ok(Self { cfg, dense, experts, pool, inv_freq, activations: QuantActivations::default() })
    }

    /// How activations meet quantised weights: Q8_0 integer dot products (default, as
    /// llama.cpp) or f32 against dequantised weights (exact, slow; for checking).
    pub fn set_quant_activations(&mut self, mode: QuantActivations) {
        self.activations = mode;
    }

    /// Bytes of the resident dense weights.
    pub fn dense_bytes(&self) -> usize {
        self.dense.bytes()
    }

    fn m(&self, t: Dense) -> Result<Matrix<'_>> {
        self.dense.matrix(&t.key())
    }

    fn vec(&self, t: Dense) -> Result<&[f32]> {
        self.dense.vector(&t.key())
    }

    fn mm(&self, w: &Matrix, xs: &[f32], n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0.0; n * w.rows()];
        matmul_with(w, xs, &mut out, n, self.pool.as_ref(), self.activations)
            .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(out)
    }

    /// Runs `tokens` at the session's next positions. Returns the logits of every token
    /// (`all_logits`) or of the last one, `vocab` floats per token.
    pub fn forward(&self, s: &mut Session, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (n, h) = (tokens.len(), c.hidden);
        if n == 0 {
            return Ok(Vec::new());
        }
        if s.pos + n > c.max_positions {
            return Err(Error::Invalid(format!(
                "context full: {n} more tokens at position {} run past the model's {} positions",
                s.pos, c.max_positions
            )));
        }
        if s.k.is_empty() {
            s.k = vec![Vec::new(); c.layers];
            s.v = vec![Vec::new(); c.layers];
        }
        let mut x = vec![0.0f32; n * h];
        for (t, &id) in tokens.iter().enumerate() {
            if id as usize >= c.vocab {
                return Err(Error::Invalid(format!(
                    "token id {id} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
            self.dense.row(&Dense::Embed.key(), id as usize, &mut x[t * h..(t + 1) * h])?;
        }
        let mut hn = vec![0.0f32; n * h];
        for l in 0..c.layers {
            rms_rows(&x, self.vec(Dense::AttnNorm(l))?, c.rms_eps, h, &mut hn);
            let att = self.attention(l, s, &hn, n)?;
            x.iter_mut().zip(&att).for_each(|(a, b)| *a += b);
            rms_rows(&x, self.vec(Dense::FfnNorm(l))?, c.rms_eps, h, &mut hn);
            let ffn = if c.moe_layers[l] { self.moe(l, s, &hn, n)? } else { self.mlp(l, &hn, n)? };
            x.iter_mut().zip(&ffn).for_each(|(a, b)| *a += b);
        }
        s.pos += n;
        s.step += 1;
        let first = if all_logits { 0 } else { n - 1 };
        let rows = n - first;
        rms_rows(&x[first * h..], self.vec(Dense::FinalNorm)?, c.rms_eps, h, &mut hn[..rows * h]);
        let head = if c.tie_embeddings { Dense::Embed } else { Dense::LmHead };
        self.mm(&self.m(head)?, &hn[..rows * h], rows)
    }

    fn attention(&self, l: usize, s: &mut Session, hn: &[f32], n: usize) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (qd, kvd, hd) = (c.q_dim(), c.kv_dim(), c.head_dim);
        let mut q = self.mm(&self.m(Dense::Q(l))?, hn, n)?;
        let mut k = self.mm(&self.m(Dense::K(l))?, hn, n)?;
        let mut v = self.mm(&self.m(Dense::V(l))?, hn, n)?;
        if c.qkv_bias {
            for (buf, b, w) in [
                (&mut q, Dense::QBias(l), qd),
                (&mut k, Dense::KBias(l), kvd),
                (&mut v, Dense::VBias(l), kvd),
            ] {
                let bias = self.vec(b)?;
                buf.chunks_exact_mut(w)
                    .for_each(|r| r.iter_mut().zip(bias).for_each(|(a, b)| *a += b));
            }
        }
        if let Some(clip) = c.clip_qkv {
            for buf in [&mut q, &mut k, &mut v] {
                buf.iter_mut().for_each(|a| *a = a.clamp(-clip, clip));
            }
        }
        match c.qk_norm {
            QkNorm::None => {}
            QkNorm::PerHead | QkNorm::Full => {
                let width = |full: usize| if c.qk_norm == QkNorm::PerHead { hd } else { full };
                for (buf, w, full) in
                    [(&mut q, Dense::QNorm(l), qd), (&mut k, Dense::KNorm(l), kvd)]
                {
                    let weight = self.vec(w)?;
                    let wd = width(full);
                    let mut tmp = vec![0.0; wd];
                    for chunk in buf.chunks_exact_mut(wd) {
                        ops::rms_norm(chunk, weight, c.rms_eps, &mut tmp);
                        chunk.copy_from_slice(&tmp);
                    }
                }
            }
        }
        for t in 0..n {
            let pos = s.pos + t;
            q[t * qd..(t + 1) * qd]
                .chunks_exact_mut(hd)
                .for_each(|hq| ops::rope(hq, pos, &self.inv_freq, RopeStyle::Neox));
            k[t * kvd..(t + 1) * kvd]
                .chunks_exact_mut(hd)
                .for_each(|hk| ops::rope(hk, pos, &self.inv_freq, RopeStyle::Neox));
        }
        s.k[l].extend_from_slice(&k);
        s.v[l].extend_from_slice(&v);
        let shape = AttentionShape {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let mut out = vec![0.0; n * qd];
        ops::attention(shape, &q, &s.k[l], &s.v[l], s.pos, n, &mut out);
        self.mm(&self.m(Dense::O(l))?, &out, n)
    }

    /// SwiGLU MLP `down(silu(gate x) * up x)` over `n` rows.
    fn swiglu_mlp(
        &self,
        gate: &Matrix,
        up: &Matrix,
        down: &Matrix,
        xs: &[f32],
        n: usize,
    ) -> Result<Vec<f32>> {
        let g = self.mm(gate, xs, n)?;
        let u = self.mm(up, xs, n)?;
        let mut a = vec![0.0; g.len()];
        ops::swiglu(&g, &u, &mut a);
        self.mm(down, &a, n)
    }

    fn mlp(&self, l: usize, hn: &[f32], n: usize) -> Result<Vec<f32>> {
        self.swiglu_mlp(
            &self.m(Dense::SharedGate(l))?,
            &self.m(Dense::SharedUp(l))?,
            &self.m(Dense::SharedDown(l))?,
            hn,
            n,
        )
    }

    fn moe(&self, l: usize, s: &mut Session, hn: &[f32], n: usize) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let (h, k) = (c.hidden, c.top_k);
        let logits = self.mm(&self.m(Dense::Router(l))?, hn, n)?;
        // Route every token: softmax in f32 over all experts, top-k, optional renormalisation.
        let mut chosen: Vec<Vec<(usize, f32)>> = Vec::with_capacity(n);
        for t in 0..n {
            let mut p = logits[t * c.experts..(t + 1) * c.experts].to_vec();
            ops::softmax(&mut p);
            let mut top = ops::top_k(&p, k);
            if c.norm_topk_prob {
                let sum: f32 = top.iter().map(|x| x.1).sum();
                top.iter_mut().for_each(|x| x.1 /= sum);
            }
            self.experts.on_route(l, s.step, &top);
            if let Some(r) = s.routes.as_mut() {
                r.push(RouteRecord { layer: l, pos: s.pos + t, experts: top.clone() });
            }
            chosen.push(top);
        }
        // Prefetch (decode): the source may read the next MoE layer's experts while this layer
        // computes; with `gate` it predicts them by applying that layer's router to this layer's
        // input (mixtral-offloading), a product computed only if the source asks for it.
        if n == 1 {
            if let Some(next) = (l + 1..c.layers).find(|&x| c.moe_layers[x]) {
                self.experts.prefetch_next(next, k, s.step, &mut || {
                    let mut p = self.mm(&self.m(Dense::Router(next))?, hn, 1)?;
                    ops::softmax(&mut p);
                    Ok(ops::top_k(&p, k))
                })?;
            }
        }
        // Each expert once, over the tokens routed to it (the union of the chunk).
        let mut users: Vec<Vec<(usize, usize)>> = vec![Vec::new(); c.experts];
        let mut weight = vec![0.0f32; c.experts];
        for (t, top) in chosen.iter().enumerate() {
            for (slot, &(e, w)) in top.iter().enumerate() {
                users[e].push((t, slot));
                weight[e] = weight[e].max(w);
            }
        }
        let wanted: Vec<(usize, f32)> =
            (0..c.experts).filter(|&e| !users[e].is_empty()).map(|e| (e, weight[e])).collect();
        // Outputs per (token, slot), combined in slot order afterwards: the result does not
        // depend on the order experts arrive in.
        let mut per_slot = vec![0.0f32; n * k * h];
        let mut xs = Vec::new();
        self.experts.with_experts(l, &wanted, s.step, &mut |e, view| {
            let us = &users[e];
            xs.clear();
            for &(t, _) in us {
                xs.extend_from_slice(&hn[t * h..(t + 1) * h]);
            }
            let y = self.swiglu_mlp(&view.gate, &view.up, &view.down, &xs, us.len())?;
            for (i, &(t, slot)) in us.iter().enumerate() {
                per_slot[(t * k + slot) * h..][..h].copy_from_slice(&y[i * h..(i + 1) * h]);
            }
            Ok(())
        })?;
        let mut out = vec![0.0f32; n * h];
        for t in 0..n {
            for (slot, &(_, w)) in chosen[t].iter().enumerate() {
                let y = &per_slot[(t * k + slot) * h..][..h];
                out[t * h..(t + 1) * h].iter_mut().zip(y).for_each(|(o, v)| *o += w * v);
            }
        }
        if c.shared_ffn > 0 {
            let shared = self.mlp(l, hn, n)?;
            let gate = self.m(Dense::SharedExpertGate(l))?;
            let g = self.mm(&gate, hn, n)?;
            for t in 0..n {
                let sg = 1.0 / (1.0 + (-g[t]).exp());
                out[t * h..(t + 1) * h]
                    .iter_mut()
                    .zip(&shared[t * h..(t + 1) * h])
                    .for_each(|(o, v)| *o += sg * v);
            }
        }
        Ok(out)
    }
}
