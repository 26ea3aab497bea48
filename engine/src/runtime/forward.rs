//! The forward pass: embeddings, then each layer's mixer and feed-forward block as its spec
//! says, final norm and lm_head. A chunk of prompt tokens runs as a batch (GEMM), decode one
//! token at a time; all buffers live in the session.

use floe_kernels::ops;
use floe_kernels::{KernelPool, Matrix, QuantActivations};

use super::session::{sized, LayerState, Session};
use super::weights::{FfnWeights, MixerWeights, ModelWeights};
use crate::error::{Error, Result};
use crate::formats::dense::{DenseWeights, TensorRef};
use crate::model::config::ModelConfig;
use crate::model::spec::{FfnSpec, MixerSpec, ModelSpec};
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

pub(crate) fn kernel_err(e: floe_kernels::KernelError) -> Error {
    Error::Invalid(e.to_string())
}

impl Model {
    /// Assembles a model. `threads` > 1 runs the kernels on a pool of that many threads.
    pub fn new(
        cfg: ModelConfig,
        dense: DenseWeights,
        experts: Box<dyn ExpertSource>,
        threads: usize,
    ) -> Result<Self> {
        cfg.validate()?;
        crate::formats::validate::check_dense(&cfg, &dense)
            .map_err(|error| Error::Field { origin: "dense weights".into(), error })?;
        let spec = ModelSpec::from_config(&cfg)?;
        let weights = ModelWeights::resolve(&dense, &spec, cfg.tie_embeddings)?;
        let pool =
            if threads > 1 { Some(KernelPool::new(threads).map_err(kernel_err)?) } else { None };
        let inv_freq = spec
            .layers
            .iter()
            .map(|l| match l.mixer {
                MixerSpec::Attention(a) => a.rope.inv_freq(),
                MixerSpec::Mla(m) => m.rope.inv_freq(),
                MixerSpec::DeltaNet(_) => Vec::new(),
            })
            .collect();
        let rope_factor = spec
            .layers
            .iter()
            .map(|l| match l.mixer {
                MixerSpec::Attention(a) => a.rope.factor(),
                MixerSpec::Mla(m) => m.rope.factor(),
                MixerSpec::DeltaNet(_) => 1.0,
            })
            .collect();
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
        })
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
        let (n, h, vocab) = (tokens.len(), self.spec.hidden, self.spec.vocab);
        if n == 0 {
            s.scratch.logits.clear();
            return Ok(&mut s.scratch.logits);
        }
        s.prepare(&self.spec)?;
        if s.pos + n > s.ctx {
            return Err(Error::Invalid(format!(
                "context full: {n} more tokens at position {} run past the session's {} positions \
                 (--ctx; the model has {})",
                s.pos, s.ctx, self.spec.max_positions
            )));
        }
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::Invalid(format!(
                "token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        let x = sized(&mut s.scratch.x, n * h);
        for (t, &id) in tokens.iter().enumerate() {
            self.dense.row_of(&self.weights.embed, id as usize, &mut x[t * h..(t + 1) * h])?;
        }
        for l in 0..self.spec.layers.len() {
            let lw = &self.weights.layers[l];
            let sc = &mut s.scratch;
            sized(&mut sc.hn, n * h);
            rms_rows(&sc.x, self.vec(&lw.mixer_norm)?, self.spec.rms_eps, h, &mut sc.hn);
            match (&self.spec.layers[l].mixer, &lw.mixer, &mut s.layers[l]) {
                (
                    MixerSpec::Attention(a),
                    MixerWeights::Attention(w),
                    LayerState::Attention(kv),
                ) => self.attention(l, a, w, kv, sc, s.pos, n)?,
                (MixerSpec::Mla(m), MixerWeights::Mla(w), LayerState::Attention(kv)) => {
                    self.mla(l, m, w, kv, sc, s.pos, n)?
                }
                (MixerSpec::DeltaNet(d), MixerWeights::DeltaNet(w), LayerState::DeltaNet(st)) => {
                    self.delta_net(d, w, st, sc, n)?
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "layer {l}: mixer weights or state do not match its spec"
                    )))
                }
            }
            sc.x.iter_mut().zip(&sc.out).for_each(|(a, b)| *a += b);
            rms_rows(&sc.x, self.vec(&lw.ffn_norm)?, self.spec.rms_eps, h, &mut sc.hn);
            match (&self.spec.layers[l].ffn, &lw.ffn) {
                (FfnSpec::Moe(m), FfnWeights::Moe(w)) => self.moe(l, m, w, s, n)?,
                (FfnSpec::Mlp { .. }, FfnWeights::Mlp(w)) => {
                    let sc = &mut s.scratch;
                    let mut input = sc.in_hn.input(&sc.hn, n, self.activations);
                    let (wg, wu, wd) = (self.m(&w.gate)?, self.m(&w.up)?, self.m(&w.down)?);
                    super::ffn::swiglu_into(
                        self,
                        &wg,
                        &wu,
                        &wd,
                        &mut input,
                        &mut sc.gate,
                        &mut sc.up,
                        &mut sc.act,
                        &mut sc.in_other,
                        &mut sc.out,
                    )?
                }
                _ => {
                    return Err(Error::Invalid(format!("layer {l}: weights do not match its spec")))
                }
            }
            let sc = &mut s.scratch;
            sc.x.iter_mut().zip(&sc.out).for_each(|(a, b)| *a += b);
        }
        s.pos += n;
        s.step += 1;
        let sc = &mut s.scratch;
        let first = if all_logits { 0 } else { n - 1 };
        let rows = n - first;
        let hn = sized(&mut sc.hn, rows * h);
        rms_rows(&sc.x[first * h..], self.vec(&self.weights.final_norm)?, self.spec.rms_eps, h, hn);
        let logits = sized(&mut sc.logits, rows * vocab);
        let mut input = sc.in_hn.input(&sc.hn[..rows * h], rows, self.activations);
        floe_kernels::matmul_input(
            &self.m(&self.weights.head)?,
            &mut input,
            logits,
            self.pool.as_ref(),
        )
        .map_err(kernel_err)?;
        Ok(&mut sc.logits[..rows * vocab])
    }
}
