//! The forward pass: embeddings, then each layer's mixer and feed-forward block as its spec
//! says, final norm and lm_head. A chunk of prompt tokens runs as a batch (GEMM), decode one
//! token at a time; all buffers live in the session.

use floe_kernels::ops;
use floe_kernels::{KernelPool, Matrix, QuantActivations};

use smallvec::SmallVec;

use super::session::{sized, BatchScratch, PassKind, Scratch, Seg, SeqRows, Session};
use super::weights::{FfnWeights, MixerWeights, ModelWeights};
use crate::error::{Error, Result};
use crate::formats::dense::{DenseWeights, TensorRef};
use crate::model::config::ModelConfig;
use crate::model::spec::{Activation, FfnSpec, MixerSpec, ModelSpec};
use crate::runtime::experts::ExpertSource;

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

/// A model ready to run: config, layer spec, resident weights, an expert source, a thread pool.
pub struct Model {
    /// The configuration.
    pub cfg: ModelConfig,
    /// The per-layer description the forward pass executes.
    pub spec: ModelSpec,
    pub(crate) weights: ModelWeights,
    pub(crate) dense: DenseWeights,
    pub(crate) experts: Box<dyn ExpertSource>,
    pub(crate) pool: Option<KernelPool>,
    /// RoPE inverse frequencies per layer (empty for layers without RoPE).
    pub(crate) inv_freq: Vec<Vec<f32>>,
    /// The factor on each layer's cos and sin (YaRN's attention factor; 1 without it).
    pub(crate) rope_factor: Vec<f32>,
    pub(crate) activations: QuantActivations,
    /// Skip a routed expert below this fraction of its token's top weight (0: exact).
    pub(crate) min_expert_weight_ratio: f32,
    /// Token-layer routings so far, and the routed experts they ran.
    pub(crate) routed: [std::sync::atomic::AtomicU64; 2],
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("arch", &self.cfg.arch).field("dense", &self.dense).finish()
    }
}

pub(crate) fn rms_rows(x: &[f32], w: &[f32], eps: f32, width: usize, out: &mut [f32]) {
    for (xr, or) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        ops::rms_norm(xr, w, eps, or);
    }
}

/// RMSNorm of each `w.len()`-wide row of `x` in place (`tmp` holds one row).
pub(crate) fn rms_rows_in_place(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut Vec<f32>) {
    let row = sized(tmp, w.len());
    for xr in x.chunks_exact_mut(w.len()) {
        ops::rms_norm(xr, w, eps, row);
        xr.copy_from_slice(row);
    }
}

/// The RoPE table of `n` positions from `pos` for layer `l`, with YaRN's factor on cos and sin.
pub(crate) fn rope_table_for(
    model: &Model,
    l: usize,
    pos: usize,
    n: usize,
    out: &mut Vec<(f32, f32)>,
) {
    ops::rope_table(pos, n, &model.inv_freq[l], out);
    let f = model.rope_factor[l];
    if f != 1.0 {
        out.iter_mut().for_each(|(c, s)| (*c, *s) = (*c * f, *s * f));
    }
}

/// The RoPE table of every row of a pass for layer `l`: each sequence's rows at its positions.
pub(crate) fn rope_rows(
    model: &Model,
    l: usize,
    segs: &[Seg],
    one: &mut Vec<(f32, f32)>,
    out: &mut Vec<(f32, f32)>,
) {
    out.clear();
    for seg in segs {
        rope_table_for(model, l, seg.at.pos, seg.at.len, one);
        out.extend_from_slice(one);
    }
}

impl Model {
    /// Assembles a model. `threads` > 1 runs the kernels on a pool of that many threads.
    pub fn new(
        cfg: ModelConfig,
        mut dense: DenseWeights,
        experts: Box<dyn ExpertSource>,
        threads: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        crate::formats::validate::check_dense(&cfg, &dense)
            .map_err(|error| Error::Field { origin: "dense weights".into(), error })?;
        let spec = ModelSpec::from_config(&cfg)?;
        let weights = ModelWeights::resolve(&dense, &spec)?;
        if floe_kernels::interleave_q4_0_here() {
            dense.interleave(&weights.product_only())?;
        }
        let pool = if threads > 1 {
            Some(KernelPool::new(threads).map_err(crate::error::Error::Kernel)?)
        } else {
            None
        };
        let inv_freq = spec
            .layers
            .iter()
            .map(|l| l.mixer.rope().map_or_else(Vec::new, |r| r.inv_freq()))
            .collect();
        let rope_factor =
            spec.layers.iter().map(|l| l.mixer.rope().map_or(1.0, |r| r.factor())).collect();
        Ok(Self {
            cfg,
            spec,
            weights,
            dense,
            experts,
            pool,
            inv_freq,
            rope_factor,
            activations: QuantActivations::default(),
            min_expert_weight_ratio: 0.0,
            routed: Default::default(),
        })
    }

    /// Skips every routed expert whose weight is below `ratio` of its token's largest (lossy;
    /// 0 runs the model exactly). See [`ExpertSelection`](super::router::ExpertSelection).
    pub fn set_min_expert_weight_ratio(&mut self, ratio: f32) {
        self.min_expert_weight_ratio = ratio;
    }

    /// How activations meet quantised weights: Q8_0 integer dot products (default, as
    /// llama.cpp) or f32 against dequantised weights (exact, slow; for checking).
    pub fn set_quant_activations(&mut self, mode: QuantActivations) {
        self.activations = mode;
    }

    /// Routed experts run per token and MoE layer so far, on average (what the expert-count
    /// knobs leave; the model's top-k without them).
    pub fn mean_routed_experts(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        let [routings, experts] = &self.routed;
        experts.load(Relaxed) as f64 / routings.load(Relaxed).max(1) as f64
    }

    /// Token-layer routings so far, and the routed experts they ran.
    pub fn routed_experts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.routed[0].load(Relaxed), self.routed[1].load(Relaxed))
    }

    /// Bytes of the resident dense weights.
    pub fn dense_bytes(&self) -> usize {
        self.dense.bytes()
    }

    pub(crate) fn m(&self, t: &TensorRef) -> Result<Matrix<'_>> {
        self.dense.view(t)
    }

    pub(crate) fn vec(&self, t: &TensorRef) -> Result<&[f32]> {
        self.dense.values(t)
    }

    /// Runs `tokens` at the session's next positions. Returns the logits of every token
    /// (`all_logits`) or of the last one, `vocab` floats per token.
    pub fn forward(&self, s: &mut Session, tokens: &[u32], all_logits: bool) -> Result<Vec<f32>> {
        Ok(self.step(s, tokens, all_logits)?.to_vec())
    }

    /// [`forward`](Self::forward) into the session's logits buffer (no allocation once the
    /// session has run a pass of this size).
    pub fn step<'s>(
        &self,
        s: &'s mut Session,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<&'s mut [f32]> {
        let mut sc = std::mem::take(&mut s.scratch);
        let step = s.step;
        let kind = if tokens.len() > 1 { PassKind::Prefill } else { PassKind::Decode };
        let r = self.pass_inner(
            std::slice::from_mut(&mut &mut *s),
            &[tokens],
            &mut sc,
            step,
            (kind, all_logits),
        );
        s.scratch = sc;
        let rows = r?;
        if rows > 0 {
            s.step += 1;
        }
        Ok(&mut s.scratch.logits[..rows * self.spec.vocab])
    }

    /// One forward pass over several sequences at once: `tokens[i]` run at `seqs[i]`'s next
    /// positions, all rows through each layer together, so an expert chosen by several sequences
    /// is read and run once over all their tokens. Attention (and any recurrent state) stays per
    /// sequence. Every product computes each row as it would alone ([`PassKind`]), so each
    /// sequence gets exactly the logits it gets in a pass of its own of that kind (a decode
    /// pass's equal [`step`](Self::step)'s with one token): the last token's, or every token's
    /// with `all_logits`, in `seqs` order, `vocab` floats per row.
    pub fn pass<'b>(
        &self,
        batch: &'b mut BatchScratch,
        seqs: &mut [&mut Session],
        tokens: &[&[u32]],
        kind: PassKind,
        all_logits: bool,
    ) -> Result<&'b mut [f32]> {
        let (scratch, step) = (&mut batch.scratch, batch.step);
        let rows = self.pass_inner(seqs, tokens, scratch, step, (kind, all_logits))?;
        batch.step += 1;
        Ok(&mut batch.scratch.logits[..rows * self.spec.vocab])
    }

    /// Checks every sequence, then runs the pass; returns the logits rows written.
    fn pass_inner(
        &self,
        seqs: &mut [&mut Session],
        tokens: &[&[u32]],
        sc: &mut Scratch,
        step: u64,
        (kind, all_logits): (PassKind, bool),
    ) -> Result<usize> {
        let (h, vocab) = (self.spec.hidden, self.spec.vocab);
        if seqs.len() != tokens.len() {
            return Err(Error::Invalid(format!(
                "a pass of {} sequences got {} token lists",
                seqs.len(),
                tokens.len()
            )));
        }
        sc.rows.clear();
        let mut n = 0;
        for (s, toks) in seqs.iter_mut().zip(tokens) {
            if toks.is_empty() {
                continue;
            }
            s.prepare(&self.spec)?;
            if s.pos + toks.len() > s.ctx {
                return Err(Error::Invalid(format!(
                    "context full: {} more tokens at position {} run past the session's {} \
                     positions (--ctx; the model has {})",
                    toks.len(),
                    s.pos,
                    s.ctx,
                    self.spec.max_positions
                )));
            }
            if let Some(&id) = toks.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Invalid(format!(
                    "token id {id} is outside the vocabulary of {vocab}"
                )));
            }
            sc.rows.push(SeqRows {
                pos: s.pos,
                start: n,
                len: toks.len(),
                experts: s.experts_per_token(),
                min_weight: s.expert_knobs().min_weight,
            });
            n += toks.len();
        }
        if n == 0 {
            sc.logits.clear();
            return Ok(0);
        }
        // Sequences with tokens, in pass order.
        let mut active: SmallVec<[&mut Session; 8]> = seqs
            .iter_mut()
            .zip(tokens)
            .filter(|(_, t)| !t.is_empty())
            .map(|(s, _)| &mut **s)
            .collect();
        sc.set_kernels(kind.kernels());
        sc.tokens.clear();
        sc.tokens.extend(tokens.iter().flat_map(|t| t.iter()));
        // Hyper-connections: every row's residual is `streams` copies of its embedding.
        let streams = self.spec.hyper.map_or(1, |hc| hc.streams);
        let x = sized(&mut sc.x, n * streams * h);
        for (t, &id) in sc.tokens.iter().enumerate() {
            let row = &mut x[t * streams * h..(t + 1) * streams * h];
            self.dense.row_of(&self.weights.embed, id as usize, &mut row[..h])?;
            for s in 1..streams {
                row.copy_within(..h, s * h);
            }
        }
        if let Some(scale) = self.spec.embed_scale {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        let rows = std::mem::take(&mut sc.rows);
        let result = self.layers(&mut active, &rows, sc, (step, kind), n);
        sc.rows = rows;
        result?;
        for (s, at) in active.iter_mut().zip(&sc.rows) {
            s.pos += at.len;
        }
        // The final norm and lm_head over the rows whose logits are returned.
        if let (Some(hc), Some(head)) = (self.spec.hyper, &self.weights.hyper_head) {
            self.hyper_head(&hc, head, sc, n)?;
        }
        let residual = if self.spec.hyper.is_some() { &sc.hc.input } else { &sc.x };
        sc.head_rows.clear();
        for at in &sc.rows {
            let first = if all_logits { at.start } else { at.start + at.len - 1 };
            sc.head_rows.extend_from_slice(&residual[first * h..(at.start + at.len) * h]);
        }
        let out_rows = sc.head_rows.len() / h;
        let hn = sized(&mut sc.hn, out_rows * h);
        rms_rows(&sc.head_rows, self.vec(&self.weights.final_norm)?, self.spec.rms_eps, h, hn);
        let logits = sized(&mut sc.logits, out_rows * vocab);
        let mut input = sc.in_hn.input(&sc.hn[..out_rows * h], out_rows, self.activations);
        floe_kernels::matmul_input(
            &self.m(&self.weights.head)?,
            &mut input,
            logits,
            self.pool.as_ref(),
        )
        .map_err(crate::error::Error::Kernel)?;
        if let Some(cap) = self.spec.logit_softcap {
            logits.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        }
        Ok(out_rows)
    }

    /// Every decoder layer over the pass's `n` rows (`sc.x`), sequence `i` owning `rows[i]`.
    fn layers(
        &self,
        seqs: &mut [&mut Session],
        rows: &[SeqRows],
        sc: &mut Scratch,
        (step, kind): (u64, PassKind),
        n: usize,
    ) -> Result<()> {
        let h = self.spec.hidden;
        for l in 0..self.spec.layers.len() {
            let lw = &self.weights.layers[l];
            let hyper = self.spec.hyper.zip(lw.hyper.as_ref());
            sized(&mut sc.hn, n * h);
            match hyper {
                Some((hc, [hw, _])) => {
                    self.hyper_pre(&hc, hw, sc, n)?;
                    rms_rows(
                        &sc.hc.input,
                        self.vec(&lw.mixer_norm)?,
                        self.spec.rms_eps,
                        h,
                        &mut sc.hn,
                    )
                }
                None => {
                    rms_rows(&sc.x, self.vec(&lw.mixer_norm)?, self.spec.rms_eps, h, &mut sc.hn)
                }
            }
            {
                let mut segs: SmallVec<[Seg; 8]> = seqs
                    .iter_mut()
                    .zip(rows)
                    .map(|(s, &at)| Seg { state: &mut s.layers[l], at })
                    .collect();
                match (&self.spec.layers[l].mixer, &lw.mixer) {
                    (MixerSpec::Attention(a), MixerWeights::Attention(w)) => {
                        self.attention(l, a, w, &mut segs, sc, n)?
                    }
                    (MixerSpec::Mla(m), MixerWeights::Mla(w)) => {
                        self.mla(l, m, w, &mut segs, sc, n)?
                    }
                    (MixerSpec::DeltaNet(d), MixerWeights::DeltaNet(w)) => {
                        self.delta_net(l, d, w, &mut segs, sc, n)?
                    }
                    (MixerSpec::SharedKv(a), MixerWeights::SharedKv(w)) => {
                        self.shared_kv(l, a, w, &mut segs, sc, n)?
                    }
                    _ => {
                        return Err(Error::Invalid(format!(
                            "layer {l}: mixer weights do not match its spec"
                        )))
                    }
                }
            }
            let eps = self.spec.rms_eps;
            if let Some(pn) = &lw.post_norms {
                rms_rows_in_place(&mut sc.out[..n * h], self.vec(&pn.mixer)?, eps, &mut sc.norm);
            }
            match hyper {
                Some((hc, [_, hw])) => {
                    self.hyper_post(&hc, sc, n);
                    self.hyper_pre(&hc, hw, sc, n)?;
                    rms_rows(&sc.hc.input, self.vec(&lw.ffn_norm)?, eps, h, &mut sc.hn);
                }
                None => {
                    sc.x.iter_mut().zip(&sc.out).for_each(|(a, b)| *a += b);
                    rms_rows(&sc.x, self.vec(&lw.ffn_norm)?, eps, h, &mut sc.hn);
                }
            }
            let decode = kind == PassKind::Decode;
            match (&self.spec.layers[l].ffn, &lw.ffn) {
                (FfnSpec::Moe(m), FfnWeights::Moe(w)) => {
                    self.moe(l, m, w, sc, rows, step, decode)?;
                    record_routes(seqs, rows, &sc.moe.chosen, l, m.top_k);
                }
                (FfnSpec::Mlp { .. }, FfnWeights::Mlp(w)) => {
                    let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
                    let (wg, wu, wd) = (self.m(&w.gate)?, self.m(&w.up)?, self.m(&w.down)?);
                    super::ffn::glu_into(
                        self,
                        Activation::Silu,
                        [&wg, &wu, &wd],
                        &mut input,
                        [&mut sc.glu.gate, &mut sc.glu.up, &mut sc.glu.act],
                        &mut sc.in_other,
                        &mut sc.out,
                    )?
                }
                (FfnSpec::MlpAndMoe { moe: m, .. }, FfnWeights::MlpAndMoe(b)) => {
                    let (mw, moe_w) = (&b.0, &b.1);
                    let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
                    let (wg, wu, wd) =
                        (self.m(&mw.mlp.gate)?, self.m(&mw.mlp.up)?, self.m(&mw.mlp.down)?);
                    super::ffn::glu_into(
                        self,
                        m.act,
                        [&wg, &wu, &wd],
                        &mut input,
                        [&mut sc.glu.gate, &mut sc.glu.up, &mut sc.glu.act],
                        &mut sc.in_other,
                        &mut sc.glu.mlp_out,
                    )?;
                    let post_mlp = self.vec(&mw.post_mlp_norm)?;
                    rms_rows_in_place(&mut sc.glu.mlp_out[..n * h], post_mlp, eps, &mut sc.norm);
                    rms_rows(&sc.x, self.vec(&mw.pre_moe_norm)?, eps, h, &mut sc.hn);
                    self.moe(l, m, moe_w, sc, rows, step, decode)?;
                    record_routes(seqs, rows, &sc.moe.chosen, l, m.top_k);
                    let post_moe = self.vec(&mw.post_moe_norm)?;
                    rms_rows_in_place(&mut sc.out[..n * h], post_moe, eps, &mut sc.norm);
                    sc.out.iter_mut().zip(&sc.glu.mlp_out).for_each(|(o, v)| *o += v);
                }
                _ => {
                    return Err(Error::Invalid(format!("layer {l}: weights do not match its spec")))
                }
            }
            if let Some(pn) = &lw.post_norms {
                rms_rows_in_place(&mut sc.out[..n * h], self.vec(&pn.ffn)?, eps, &mut sc.norm);
            }
            match hyper {
                Some((hc, _)) => self.hyper_post(&hc, sc, n),
                None => sc.x.iter_mut().zip(&sc.out).for_each(|(a, b)| *a += b),
            }
            if let Some(pn) = &lw.post_norms {
                let scalar = self.vec(&pn.scalar)?[0];
                sc.x.iter_mut().for_each(|v| *v *= scalar);
            }
        }
        Ok(())
    }
}

/// Records each sequence's chosen experts of layer `l` (sessions that record routes).
fn record_routes(
    seqs: &mut [&mut Session],
    rows: &[SeqRows],
    chosen: &[(usize, f32)],
    l: usize,
    k: usize,
) {
    for (s, at) in seqs.iter_mut().zip(rows) {
        if let Some(r) = s.routes.as_mut() {
            for t in at.range() {
                r.push(RouteRecord {
                    layer: l,
                    pos: at.pos + t - at.start,
                    experts: chosen[t * k..(t + 1) * k]
                        .iter()
                        .filter(|x| x.0 != super::router::SKIPPED)
                        .copied()
                        .collect(),
                });
            }
        }
    }
}
