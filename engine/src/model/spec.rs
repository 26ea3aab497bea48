//! The model as data: one [`LayerSpec`] per decoder layer, resolved once at load from the
//! configuration, executed by the runtime's small set of mixers and feed-forward blocks.
//!
//! A layer is a token mixer followed by a feed-forward block. The mixer kinds an architecture
//! may need are variants of [`MixerSpec`] and each owns its per-sequence state in the session
//! (grouped-query attention a KV cache; multi-head latent attention a cache of compressed latent
//! and rope-key rows; Gated DeltaNet a recurrent and a convolution state). Feed-forward blocks are
//! a dense MLP or a routed MoE with a [`RouterKind`] and optional shared experts.

use floe_kernels::ops::RopeStyle;

use crate::error::{Error, Result};
use crate::model::config::{ModelConfig, QkNorm};

/// Rotary position embedding of a head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSpec {
    /// Channels rotated, from the start of the head (less than the head for partial RoPE).
    pub dims: usize,
    /// Frequency base.
    pub theta: f32,
    /// Which channels pair up.
    pub style: RopeStyle,
    /// YaRN scaling, if any (its frequencies, and a factor on cos and sin).
    pub yarn: Option<crate::model::config::Yarn>,
    /// Proportional RoPE (Gemma 4's full layers): only the first this many pairs of `dims`
    /// rotate, at the frequencies they would have if every pair did; the rest stay as they are.
    pub rotated_pairs: Option<usize>,
}

impl RopeSpec {
    /// The inverse frequencies, one per rotated pair.
    pub fn inv_freq(&self) -> Vec<f32> {
        if let Some(p) = self.rotated_pairs {
            let mut f = floe_kernels::ops::rope_inv_freq(self.dims, self.theta);
            f.iter_mut().skip(p).for_each(|x| *x = 0.0);
            return f;
        }
        match self.yarn {
            Some(y) => floe_kernels::ops::yarn_inv_freq(
                self.dims,
                self.theta,
                y.factor,
                y.original_max_positions,
                y.beta_fast,
                y.beta_slow,
                y.truncate,
            ),
            None => floe_kernels::ops::rope_inv_freq(self.dims, self.theta),
        }
    }

    /// The factor on cos and sin (1 without YaRN).
    pub fn factor(&self) -> f32 {
        self.yarn.map_or(1.0, |y| y.attention_factor())
    }
}

/// Grouped-query softmax attention with RoPE and a KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Positional rotation.
    pub rope: RopeSpec,
    /// q/k/v projections carry biases.
    pub qkv_bias: bool,
    /// Normalisation of q and k before RoPE.
    pub qk_norm: QkNorm,
    /// q/k/v clamped to +-this (OLMoE), if set.
    pub clip_qkv: Option<f32>,
    /// Score scale.
    pub scale: f32,
    /// Sliding window (positions a query sees, itself included), if the layer has one.
    pub window: Option<usize>,
    /// One learned sink logit per query head joins the softmax (gpt-oss).
    pub sinks: bool,
    /// The output projection has a bias (gpt-oss).
    pub o_bias: bool,
    /// The q projection also gives a per-channel output gate: each head's rows are its
    /// `head_dim` queries then `head_dim` gate logits, and the attention output is scaled by
    /// their sigmoid before the output projection (Qwen3.5).
    pub output_gate: bool,
    /// Values get an RMSNorm without weight per head (Gemma 4).
    pub v_norm: bool,
    /// No v projection: the values are the keys as projected, before their norm and RoPE
    /// (Gemma 4's full layers).
    pub k_is_v: bool,
}

impl AttentionSpec {
    /// Width of the q projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Width of the k and v projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
    /// Rows of the q projection (queries, and gate logits with an output gate).
    pub fn q_rows(&self) -> usize {
        if self.output_gate {
            2 * self.q_dim()
        } else {
            self.q_dim()
        }
    }
}

/// Gated DeltaNet linear attention (Qwen3.5, Qwen3-Next): a causal depthwise convolution over
/// q, k and v, then per value head a recurrent `key_dim x value_dim` state updated by the gated
/// delta rule; a fixed-size state, no KV cache. Weights are in llama.cpp's layout,
/// `A = -exp(A_log)`, with the value heads in one of two orders (see `grouped`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaNetSpec {
    /// Key (and query) heads.
    pub key_heads: usize,
    /// Value heads.
    pub value_heads: usize,
    /// Channels per key head.
    pub key_dim: usize,
    /// Channels per value head.
    pub value_dim: usize,
    /// Width of the causal convolution.
    pub conv_kernel: usize,
    /// Qwen3-Next: value head `j` reads key head `j / (value_heads / key_heads)`, and beta and
    /// alpha come from one projection holding, per key head, its value heads' betas then their
    /// alphas. Otherwise (Qwen3.5) value head `j` reads key head `j % key_heads` and beta and
    /// alpha are two projections.
    pub grouped: bool,
}

impl DeltaNetSpec {
    /// The key head value head `j` reads.
    pub fn key_head(&self, j: usize) -> usize {
        if self.grouped {
            j / (self.value_heads / self.key_heads).max(1)
        } else {
            j % self.key_heads.max(1)
        }
    }
    /// Channels of the q/k/v projection and the convolution.
    pub fn qkv_dim(&self) -> usize {
        2 * self.key_heads * self.key_dim + self.value_heads * self.value_dim
    }
    /// Channels of the values (and of the output gate).
    pub fn value_total(&self) -> usize {
        self.value_heads * self.value_dim
    }
    /// f32 values of one sequence's state: the convolution's last inputs and the recurrence.
    pub fn state_floats(&self) -> usize {
        (self.conv_kernel - 1) * self.qkv_dim() + self.value_heads * self.key_dim * self.value_dim
    }
}

/// Multi-head latent attention (DeepSeek-V2/V3), computed in the latent space: the cache holds
/// each position's normalised `kv_rank` latent and its shared RoPE key (`rope.dims`), not
/// per-head keys and values. A head's query is its no-RoPE part taken into the latent space
/// (`k_b`, the key half of `kv_b_proj` transposed per head, as llama.cpp stores it) followed by
/// its RoPE part; scores are against `[latent; rope key]`, the output is the latent weighted by
/// the scores, taken out by `v_b` per head. The same as expanding `kv_b_proj` per position, in
/// fewer operations and a cache of `kv_rank + rope.dims` values per position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaSpec {
    /// Query heads.
    pub heads: usize,
    /// The query LoRA rank, if q goes through one.
    pub q_lora_rank: Option<usize>,
    /// Rank of the key/value latent.
    pub kv_rank: usize,
    /// Per-head query/key channels without RoPE.
    pub nope: usize,
    /// The RoPE part (its dims are the per-head query/key RoPE channels).
    pub rope: RopeSpec,
    /// Per-head value channels.
    pub v_dim: usize,
    /// Score scale (1/sqrt(nope + rope dims)).
    pub scale: f32,
    /// DeepSeek sparse attention (GLM-5): each query reads only the positions its indexer picks.
    pub indexer: Option<IndexerSpec>,
}

/// The lightning indexer of DeepSeek sparse attention (GLM-5, DeepSeek-V3.2): from the query
/// LoRA's normed latent `heads` queries of `head_dim`, from the layer input one key of
/// `head_dim` per position (LayerNorm'd, with bias), both RoPE'd (interleaved) on their first
/// `rope_dims` channels; a position scores `sum_h w_h relu(q_h . k / sqrt(head_dim))` with
/// per-head weights `w = W x / sqrt(heads)`; the `topk` best visible positions are attended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerSpec {
    /// Indexer heads.
    pub heads: usize,
    /// Channels per indexer head and key.
    pub head_dim: usize,
    /// Its rotated channels (first in the head).
    pub rope_dims: usize,
    /// Positions each query attends to.
    pub topk: usize,
    /// This layer computes the selection (and keeps indexer keys); else it reuses the
    /// previous layer's.
    pub full: bool,
}

impl MlaSpec {
    /// Rows of the q projection (`heads x (nope + rope)`).
    pub fn q_dim(&self) -> usize {
        self.heads * (self.nope + self.rope.dims)
    }
    /// Values per position in the cache (and per head in the latent query).
    pub fn latent_dim(&self) -> usize {
        self.kv_rank + self.rope.dims
    }
}

/// Shared-KV multi-query attention (DeepSeek-V4): one key/value head (the key is the value),
/// queries through a LoRA and an unweighted per-head RMSNorm, RoPE on the trailing `rope.dims`
/// channels (undone on the output), a learned sink per head, a sliding window over the
/// positions' own rows, and optionally a compressed branch whose entries join the keys. The
/// output goes through a grouped low-rank projection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedKvSpec {
    /// Query heads.
    pub heads: usize,
    /// Channels of a head and of the key/value row.
    pub head_dim: usize,
    /// Rank of the query LoRA.
    pub q_lora_rank: usize,
    /// RoPE of the trailing `rope.dims` channels (interleaved pairs).
    pub rope: RopeSpec,
    /// Positions the sliding branch sees, itself included.
    pub window: usize,
    /// Head groups of the output projection.
    pub o_groups: usize,
    /// Each group's rank.
    pub o_lora_rank: usize,
    /// Score scale.
    pub scale: f32,
    /// The compressed branch, if the layer has one.
    pub compressor: Option<CompressorSpec>,
}

/// A compressed branch: every `ratio` positions pool into one entry (a softmax over each
/// channel's gated values, RMSNorm'd, RoPE'd at the window's first position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressorSpec {
    /// Positions per entry.
    pub ratio: usize,
    /// Entries pool two windows (compressed sparse attention): the projections are twice as
    /// wide, the first half of a position's channels feeds the next window's entry, the
    /// second half its own.
    pub overlap: bool,
    /// A lightning indexer picks the entries each query reads, if set; else it reads every
    /// entry it can see.
    pub indexer: Option<EntryIndexerSpec>,
}

/// The lightning indexer of compressed sparse attention: its own overlapping compressor of
/// `head_dim`-wide keys, `heads` queries from the query LoRA, per-head weights from the layer
/// input; an entry scores `sum_h w_h relu(q_h . k)`, the best `topk` visible ones are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryIndexerSpec {
    /// Indexer heads.
    pub heads: usize,
    /// Channels per indexer head and key.
    pub head_dim: usize,
    /// Entries each query reads.
    pub topk: usize,
}

impl SharedKvSpec {
    /// Width of the compressor's projections (0 without one).
    pub fn compressor_width(&self) -> usize {
        self.compressor.map_or(0, |c| if c.overlap { 2 * self.head_dim } else { self.head_dim })
    }
    /// f32 values of one sequence's fixed-size state: the ring of the last rows (twice the
    /// window), the projected values and gates of the compressor's open window (and of the
    /// previous one where windows overlap), the indexer's likewise.
    pub fn pending_floats(&self) -> usize {
        let ring = 2 * self.window * self.head_dim;
        let Some(c) = self.compressor else { return ring };
        let windows = if c.overlap { 2 } else { 1 };
        let mut n = windows * c.ratio * 2 * self.compressor_width();
        if let Some(ix) = c.indexer {
            n += 2 * c.ratio * 2 * 2 * ix.head_dim;
        }
        ring + n
    }
    /// f32 values the state grows by per position: its share of an entry (and of an indexer
    /// key). Its own row lives in a fixed ring (`pending_floats`).
    pub fn floats_per_position(&self) -> f64 {
        self.compressor.map_or(0.0, |c| {
            let ix = c.indexer.map_or(0, |ix| ix.head_dim);
            (self.head_dim + ix) as f64 / c.ratio as f64
        })
    }
}

/// Hyper-connections (DeepSeek-V4): the residual is `streams` parallel copies; before each
/// block a learned map of the streams weighs them into its input, after it the output is
/// spread back with learned weights and the streams mixed by a matrix projected onto the
/// doubly-stochastic ones (`sinkhorn_iters` Sinkhorn-Knopp steps); a last map collapses them
/// before the final norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HyperSpec {
    /// Residual streams.
    pub streams: usize,
    /// Sinkhorn-Knopp iterations.
    pub sinkhorn_iters: usize,
    /// Epsilon of the weights and the normalisation.
    pub eps: f32,
}

/// What a mixer caches per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvRows {
    /// Key heads and as many value heads (grouped-query attention).
    Split {
        /// Heads per position.
        heads: usize,
        /// Values per head.
        dim: usize,
    },
    /// One row per position read as the key of every query head, its latent part the value
    /// (MLA).
    Shared {
        /// The latent part's values.
        latent: usize,
        /// The RoPE key part's values.
        rope: usize,
        /// Query heads.
        heads: usize,
        /// Key and value widths each head would cache without the latent trick.
        expanded: (usize, usize),
    },
}

impl MixerSpec {
    /// What this mixer caches per position, or None if it keeps a fixed-size state instead.
    pub fn kv_rows(&self) -> Option<KvRows> {
        match self {
            MixerSpec::Attention(a) => Some(KvRows::Split { heads: a.kv_heads, dim: a.head_dim }),
            MixerSpec::Mla(m) => Some(KvRows::Shared {
                latent: m.kv_rank,
                rope: m.rope.dims,
                heads: m.heads,
                expanded: (m.nope + m.rope.dims, m.v_dim),
            }),
            MixerSpec::DeltaNet(_) | MixerSpec::SharedKv(_) => None,
        }
    }

    /// The factor attention scores are scaled by, if this mixer attends.
    pub fn score_scale(&self) -> Option<f32> {
        match self {
            MixerSpec::Attention(a) => Some(a.scale),
            MixerSpec::Mla(m) => Some(m.scale),
            MixerSpec::SharedKv(a) => Some(a.scale),
            MixerSpec::DeltaNet(_) => None,
        }
    }

    /// The rotary embedding this mixer applies, if it has one.
    pub fn rope(&self) -> Option<&RopeSpec> {
        match self {
            MixerSpec::Attention(a) => Some(&a.rope),
            MixerSpec::Mla(m) => Some(&m.rope),
            MixerSpec::SharedKv(a) => Some(&a.rope),
            MixerSpec::DeltaNet(_) => None,
        }
    }

    /// Whether a session can be cut back to an earlier position: a cache of positions can
    /// (later ones are overwritten), a recurrent state cannot be wound back.
    pub fn rewindable(&self) -> bool {
        match self {
            MixerSpec::Attention(_) | MixerSpec::Mla(_) | MixerSpec::SharedKv(_) => true,
            MixerSpec::DeltaNet(_) => false,
        }
    }

    /// Positions a cut may have to fall back to reach a point this mixer can resume from
    /// (compressed attention resumes only at a window boundary); zero where any point will do.
    pub fn rewind_span(&self) -> usize {
        match self {
            MixerSpec::SharedKv(a) => a.compressor.map_or(0, |c| c.ratio),
            MixerSpec::Attention(_) | MixerSpec::Mla(_) | MixerSpec::DeltaNet(_) => 0,
        }
    }

    /// f32 values the mixer's own state grows by per position, whatever the KV types
    /// (shared-KV attention's share of a compressed entry); zero for the others.
    pub fn f32_state_per_position(&self) -> f64 {
        match self {
            MixerSpec::SharedKv(a) => a.floats_per_position(),
            MixerSpec::Attention(_) | MixerSpec::Mla(_) | MixerSpec::DeltaNet(_) => 0.0,
        }
    }

    /// Width of the sparse-attention indexer keys this layer caches beside its rows, if it
    /// computes a selection of its own.
    pub fn index_key_dim(&self) -> Option<usize> {
        match self {
            MixerSpec::Mla(m) => m.indexer.filter(|ix| ix.full).map(|ix| ix.head_dim),
            MixerSpec::Attention(_) | MixerSpec::DeltaNet(_) | MixerSpec::SharedKv(_) => None,
        }
    }

    /// f32 values of the fixed-size state this mixer keeps (zero for attention).
    pub fn recurrent_floats(&self) -> usize {
        match self {
            MixerSpec::DeltaNet(d) => d.state_floats(),
            MixerSpec::SharedKv(a) => a.pending_floats(),
            MixerSpec::Attention(_) | MixerSpec::Mla(_) => 0,
        }
    }
}

/// How a layer mixes information across positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixerSpec {
    /// Multi-head latent attention.
    Mla(MlaSpec),
    /// Grouped-query attention.
    Attention(AttentionSpec),
    /// Gated DeltaNet linear attention.
    DeltaNet(DeltaNetSpec),
    /// Shared-KV attention with a sliding window and a compressed branch.
    SharedKv(SharedKvSpec),
}

impl RouterKind {
    /// The chosen experts' weights are normalised to a fixed sum: fewer experts are weighed by
    /// renormalising over them.
    pub fn renormalizes(&self) -> bool {
        match *self {
            RouterKind::SoftmaxTopK { renormalize } => renormalize,
            RouterKind::TopKSoftmax => true,
            RouterKind::SigmoidGrouped { renormalize, .. } => renormalize,
            RouterKind::SqrtSoftplus { renormalize, .. } => renormalize,
        }
    }
}

/// How a MoE router turns its logits into experts and weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouterKind {
    /// Softmax over all experts, the top k, optionally renormalised to sum to 1 (Qwen, Mixtral,
    /// OLMoE).
    SoftmaxTopK {
        /// Renormalise the chosen weights.
        renormalize: bool,
    },
    /// The top k logits, then a softmax over those k (gpt-oss).
    TopKSoftmax,
    /// Sigmoid scores; experts chosen by score plus a learned correction bias, only within
    /// the `top_groups` best of `groups` equal groups (a group scores its two best); weights
    /// the unbiased scores, optionally renormalised, times `routed_scale` (DeepSeek-V3).
    SigmoidGrouped {
        /// Expert groups.
        groups: usize,
        /// Groups a token may choose from.
        top_groups: usize,
        /// Renormalise the chosen weights.
        renormalize: bool,
        /// Factor on the routed experts' weights.
        routed_scale: f32,
    },
    /// `sqrt(softplus(logit))` scores (DeepSeek-V4); experts chosen by score plus a learned
    /// correction bias, or (`hashed`) read from the token's row of a frozen table; weights the
    /// scores of the chosen, optionally renormalised, times `routed_scale`.
    SqrtSoftplus {
        /// The experts come from the token id's row of the layer's table.
        hashed: bool,
        /// Renormalise the chosen weights.
        renormalize: bool,
        /// Factor on the routed experts' weights.
        routed_scale: f32,
    },
}

/// The gated activation of an MLP or expert: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    /// SiLU (SwiGLU).
    Silu,
    /// GELU, tanh approximation (GeGLU; Gemma).
    GeluTanh,
    /// SiLU with the gate clamped to at most `limit` and the up projection to +-`limit`
    /// (DeepSeek-V4).
    ClampedSilu {
        /// The clamp.
        limit: f32,
    },
}

/// Experts every token runs besides the routed ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SharedExpertSpec {
    /// Hidden width.
    pub ffn: usize,
    /// Scaled by a sigmoid gate of the input (Qwen2-MoE, Qwen3.5).
    pub gated: bool,
}

/// A routed mixture of experts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeSpec {
    /// Routed experts.
    pub experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Hidden width of one expert.
    pub expert_ffn: usize,
    /// Routing rule.
    pub router: RouterKind,
    /// Shared experts, if any.
    pub shared: Option<SharedExpertSpec>,
    /// The router's logits have a bias (gpt-oss).
    pub router_bias: bool,
    /// Each expert's gate, up and down have biases (gpt-oss).
    pub expert_bias: bool,
    /// gpt-oss's clamped SwiGLU instead of SwiGLU.
    pub clamped_swiglu: Option<crate::model::config::ClampedSwiglu>,
    /// The experts' activation.
    pub act: Activation,
    /// Gemma 4's router: it reads the residual (not the block's normed input) through an
    /// RMSNorm without weight, a learned per-channel scale and `1/sqrt(hidden)`; each chosen
    /// expert's weight is then scaled by a learned factor of its own.
    pub scaled_router: bool,
}

/// The feed-forward block of a layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FfnSpec {
    /// A dense SwiGLU MLP of this hidden width.
    Mlp {
        /// Hidden width.
        ffn: usize,
    },
    /// A routed MoE.
    Moe(MoeSpec),
    /// A dense MLP and a routed MoE side by side (Gemma 4): the MLP on the block's normed
    /// input, the experts on the residual normed by their own norm, each output normed, then
    /// summed.
    MlpAndMoe {
        /// The dense MLP's hidden width (its activation is the experts').
        ffn: usize,
        /// The MoE.
        moe: MoeSpec,
    },
}

impl FfnSpec {
    /// The routed MoE, if the block has one.
    pub fn moe(&self) -> Option<&MoeSpec> {
        match self {
            FfnSpec::Moe(m) | FfnSpec::MlpAndMoe { moe: m, .. } => Some(m),
            FfnSpec::Mlp { .. } => None,
        }
    }
}

/// One decoder layer: pre-norm mixer, then pre-norm feed-forward, each added to the residual.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    /// Token mixer.
    pub mixer: MixerSpec,
    /// Feed-forward block.
    pub ffn: FfnSpec,
    /// Sandwich norms (Gemma 4): the mixer's and the feed-forward block's outputs are each
    /// RMSNorm'd before they join the residual, and the layer's output is scaled by a learned
    /// scalar.
    pub post_norms: bool,
}

impl LayerSpec {
    /// f32 values of pass scratch one token of a pass can need in this layer, an upper bound:
    /// residual and norm buffers, the mixer's projections and outputs, the router's logits and
    /// each routed expert's gathered input, gate, up, activation and output. What a memory
    /// budget sets aside per token of the largest pass.
    pub fn scratch_floats_per_token(&self, hidden: usize) -> usize {
        let mixer = match self.mixer {
            MixerSpec::Attention(a) => {
                a.q_rows() + 2 * a.kv_heads * a.head_dim + 2 * a.heads * a.head_dim
            }
            MixerSpec::Mla(m) => {
                m.q_lora_rank.unwrap_or(0)
                    + 2 * m.q_dim()
                    + m.latent_dim() * (m.heads + 1)
                    + 2 * m.heads * (m.nope + m.v_dim)
            }
            MixerSpec::DeltaNet(d) => 2 * d.qkv_dim() + 3 * d.value_total() + 4 * d.value_heads,
            MixerSpec::SharedKv(a) => {
                let ix = a.compressor.and_then(|c| c.indexer);
                a.q_lora_rank
                    + 3 * a.heads * a.head_dim
                    + a.head_dim
                    + 2 * a.compressor_width()
                    + 2 * a.o_groups * a.o_lora_rank
                    + ix.map_or(0, |ix| ix.heads * (ix.head_dim + 1) + 4 * ix.head_dim)
            }
        };
        let moe = |m: &MoeSpec| {
            m.experts
                + m.top_k * (3 * m.expert_ffn + 3 * hidden + 2)
                + m.shared.map_or(0, |s| 3 * s.ffn + 1)
        };
        let ffn = match &self.ffn {
            FfnSpec::Mlp { ffn } => 3 * ffn,
            FfnSpec::Moe(m) => moe(m),
            FfnSpec::MlpAndMoe { ffn, moe: m } => 3 * ffn + moe(m) + 2 * hidden,
        };
        8 * hidden + mixer + ffn
    }
}

/// The whole model as data.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Residual width.
    pub hidden: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Longest context.
    pub max_positions: usize,
    /// The decoder layers.
    pub layers: Vec<LayerSpec>,
    /// Embeddings are scaled by this (Gemma: `sqrt(hidden)`), if set.
    pub embed_scale: Option<f32>,
    /// Final logits become `cap * tanh(logits / cap)`, if set.
    pub logit_softcap: Option<f32>,
    /// Hyper-connection residual streams, if the model has them.
    pub hyper: Option<HyperSpec>,
    /// The output head is the embedding table.
    pub tie_embeddings: bool,
}

impl ModelSpec {
    /// Resolves the per-layer spec of a (validated) configuration.
    pub fn from_config(c: &ModelConfig) -> Result<Self> {
        if c.moe_layers.len() != c.layers {
            return Err(Error::Invalid(format!(
                "config: {} MoE-layer flags for {} layers",
                c.moe_layers.len(),
                c.layers
            )));
        }
        let attention = AttentionSpec {
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            rope: RopeSpec {
                dims: c.rotary_dims(),
                theta: c.rope_theta,
                style: RopeStyle::Neox,
                yarn: c.yarn,
                rotated_pairs: None,
            },
            qkv_bias: c.qkv_bias,
            qk_norm: c.qk_norm,
            clip_qkv: c.clip_qkv,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
            window: None,
            sinks: c.extras.attn_sinks,
            o_bias: c.extras.o_bias,
            output_gate: c.arch.attention_output_gate(),
            v_norm: c.gemma.is_some(),
            k_is_v: false,
        };
        // Gemma 4: scores unscaled; its full layers with their own shape and proportional RoPE.
        let attention = match c.gemma {
            Some(_) => AttentionSpec { scale: 1.0, ..attention },
            None => attention,
        };
        let full_attention = match c.gemma {
            Some(g) => AttentionSpec {
                kv_heads: g.global_kv_heads,
                head_dim: g.global_head_dim,
                rope: RopeSpec {
                    dims: g.global_head_dim,
                    theta: g.global_rope_theta,
                    rotated_pairs: Some(g.global_rope_pairs),
                    ..attention.rope
                },
                k_is_v: g.k_eq_v,
                ..attention
            },
            None => attention,
        };
        let delta_net = c.linear.map(|lin| DeltaNetSpec {
            key_heads: lin.key_heads,
            value_heads: lin.value_heads,
            key_dim: lin.key_dim,
            value_dim: lin.value_dim,
            conv_kernel: lin.conv_kernel,
            grouped: lin.grouped,
        });
        let mla = c.mla.map(|m| MlaSpec {
            heads: c.heads,
            q_lora_rank: (m.q_lora_rank > 0).then_some(m.q_lora_rank),
            kv_rank: m.kv_lora_rank,
            nope: m.qk_nope_dim,
            rope: RopeSpec {
                dims: m.qk_rope_dim,
                theta: c.rope_theta,
                style: RopeStyle::Interleaved,
                yarn: c.yarn,
                rotated_pairs: None,
            },
            v_dim: m.v_head_dim,
            scale: c.yarn.map_or(1.0, |y| y.score_factor())
                / ((m.qk_nope_dim + m.qk_rope_dim) as f32).sqrt(),
            indexer: None,
        });
        let router = match c.sigmoid_router {
            Some(r) => RouterKind::SigmoidGrouped {
                groups: r.groups,
                top_groups: r.top_groups,
                renormalize: c.norm_topk_prob,
                routed_scale: r.routed_scale,
            },
            None if c.extras.top_k_then_softmax => RouterKind::TopKSoftmax,
            None => RouterKind::SoftmaxTopK { renormalize: c.norm_topk_prob },
        };
        let moe = MoeSpec {
            experts: c.experts,
            top_k: c.top_k,
            expert_ffn: c.expert_ffn,
            router,
            shared: (c.shared_ffn > 0).then_some(SharedExpertSpec {
                ffn: c.shared_ffn,
                gated: c.arch.gated_shared_expert(),
            }),
            router_bias: c.extras.expert_biases,
            expert_bias: c.extras.expert_biases,
            clamped_swiglu: c.clamped_swiglu,
            act: if c.gemma.is_some() { Activation::GeluTanh } else { Activation::Silu },
            scaled_router: c.gemma.is_some(),
        };
        let layers = c
            .moe_layers
            .iter()
            .enumerate()
            .map(|(l, &is_moe)| {
                let mixer = match (delta_net, mla, &c.v4) {
                    (_, _, Some(v)) => MixerSpec::SharedKv(shared_kv(c, v, l)),
                    (delta_net, mla, None) => match (delta_net, mla) {
                        (Some(d), _) if c.is_linear(l) => MixerSpec::DeltaNet(d),
                        (_, Some(m)) => MixerSpec::Mla(MlaSpec {
                            indexer: c.dsa.as_ref().map(|d| IndexerSpec {
                                heads: d.heads,
                                head_dim: d.head_dim,
                                rope_dims: m.rope.dims,
                                topk: d.topk,
                                full: d.full_layers.get(l).copied().unwrap_or(true),
                            }),
                            ..m
                        }),
                        _ => match c.window(l) {
                            Some(w) => {
                                MixerSpec::Attention(AttentionSpec { window: Some(w), ..attention })
                            }
                            None => MixerSpec::Attention(full_attention),
                        },
                    },
                };
                let moe = match &c.v4 {
                    Some(v) => MoeSpec {
                        router: RouterKind::SqrtSoftplus {
                            hashed: l < v.hash_layers,
                            renormalize: c.norm_topk_prob,
                            routed_scale: c.sigmoid_router.map_or(1.0, |r| r.routed_scale),
                        },
                        act: if v.swiglu_limit > 0.0 {
                            Activation::ClampedSilu { limit: v.swiglu_limit }
                        } else {
                            Activation::Silu
                        },
                        ..moe
                    },
                    None => moe,
                };
                let ffn = match (is_moe, c.gemma) {
                    (true, Some(_)) => FfnSpec::MlpAndMoe { ffn: c.dense_ffn, moe },
                    (true, None) => FfnSpec::Moe(moe),
                    (false, _) => FfnSpec::Mlp { ffn: c.dense_ffn },
                };
                LayerSpec { mixer, ffn, post_norms: c.gemma.is_some() }
            })
            .collect();
        Ok(Self {
            hidden: c.hidden,
            vocab: c.vocab,
            tie_embeddings: c.tie_embeddings,
            rms_eps: c.rms_eps,
            max_positions: c.max_positions,
            layers,
            embed_scale: c.gemma.map(|_| (c.hidden as f32).sqrt()),
            logit_softcap: c.gemma.and_then(|g| g.logit_softcap),
            hyper: c.v4.as_ref().map(|v| HyperSpec {
                streams: v.hc_mult,
                sinkhorn_iters: v.hc_sinkhorn_iters,
                eps: v.hc_eps,
            }),
        })
    }

    /// The next MoE layer after `l`, if any.
    pub fn next_moe(&self, l: usize) -> Option<(usize, &MoeSpec)> {
        self.layers.iter().enumerate().skip(l + 1).find_map(|(i, s)| s.ffn.moe().map(|m| (i, m)))
    }
}

/// Layer `l` of DeepSeek-V4: the sliding branch alone (the main RoPE) or with a compressed
/// branch (the compressed layers' RoPE).
fn shared_kv(c: &ModelConfig, v: &crate::model::deepseek_v4::V4Layout, l: usize) -> SharedKvSpec {
    let ratio = v.compress_ratios.get(l).copied().unwrap_or(0);
    let rope = |theta, yarn| RopeSpec {
        dims: c.rope_dims.unwrap_or(c.head_dim),
        theta,
        style: RopeStyle::Interleaved,
        yarn,
        rotated_pairs: None,
    };
    SharedKvSpec {
        heads: c.heads,
        head_dim: c.head_dim,
        q_lora_rank: v.q_lora_rank,
        rope: if ratio == 0 {
            rope(c.rope_theta, None)
        } else {
            rope(v.compress_rope_theta, v.compress_yarn)
        },
        window: v.window,
        o_groups: v.o_groups,
        o_lora_rank: v.o_lora_rank,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
        compressor: (ratio > 0).then(|| {
            let indexed = v.indexed.get(l).copied().unwrap_or(false);
            CompressorSpec {
                ratio,
                overlap: indexed,
                indexer: indexed.then_some(EntryIndexerSpec {
                    heads: v.index_heads,
                    head_dim: v.index_head_dim,
                    topk: v.index_topk,
                }),
            }
        }),
    }
}
