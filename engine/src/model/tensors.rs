//! The dense tensors a [`ModelSpec`] needs, with their shapes: the one list that packing, GGUF
//! import and export, `synth`, validation and the runtime's weight resolution all walk.
//!
//! Each part of a layer lists its own tensors ([`MixerSpec::tensors`], [`FfnSpec::tensors`]),
//! so a new mixer or feed-forward kind adds its tensors here, beside its spec, and every reader
//! and writer of model files follows.

use crate::model::arch::Dense;
use crate::model::config::QkNorm;
use crate::model::spec::{
    AttentionSpec, DeltaNetSpec, FfnSpec, LayerSpec, MixerSpec, MlaSpec, ModelSpec, MoeSpec,
    RouterKind, SharedKvSpec,
};

/// One dense tensor: its role and its stored shape. A vector (norm, bias, scale) is one row and
/// is stored f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorSpec {
    /// What the tensor is.
    pub role: Dense,
    /// Rows (1 for a vector).
    pub rows: usize,
    /// Columns (a vector's length).
    pub cols: usize,
}

impl TensorSpec {
    fn matrix(role: Dense, rows: usize, cols: usize) -> Self {
        Self { role, rows, cols }
    }
    fn vector(role: Dense, len: usize) -> Self {
        Self { role, rows: 1, cols: len }
    }
    /// A vector: one row, read as f32 values rather than through matrix products.
    pub fn is_vector(&self) -> bool {
        self.rows == 1
    }
}

use TensorSpec as T;

impl ModelSpec {
    /// Every dense tensor of the model, in file order: the embeddings, the output head unless
    /// it is tied to them, the final norm, the hyper-connection head, then each layer's.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let h = self.hidden;
        let mut v = vec![T::matrix(Dense::Embed, self.vocab, h)];
        if !self.tie_embeddings {
            v.push(T::matrix(Dense::LmHead, self.vocab, h));
        }
        v.push(T::vector(Dense::FinalNorm, h));
        if let Some(hc) = self.hyper {
            let s = hc.streams;
            v.extend([
                T::matrix(Dense::HcHeadFn, s, s * h),
                T::vector(Dense::HcHeadBase, s),
                T::vector(Dense::HcHeadScale, 1),
            ]);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            layer.tensors(self, l, &mut v);
        }
        v
    }
}

impl LayerSpec {
    /// Layer `l`'s tensors: its norms, its mixer's, its feed-forward block's, its
    /// hyper-connection maps and its sandwich norms.
    fn tensors(&self, model: &ModelSpec, l: usize, v: &mut Vec<TensorSpec>) {
        let h = model.hidden;
        v.push(T::vector(Dense::AttnNorm(l), h));
        self.mixer.tensors(l, h, v);
        v.push(T::vector(Dense::FfnNorm(l), h));
        self.ffn.tensors(l, h, model.vocab, v);
        if let Some(hc) = model.hyper {
            let (n, width) = ((2 + hc.streams) * hc.streams, hc.streams * h);
            v.extend([
                T::matrix(Dense::HcAttnFn(l), n, width),
                T::vector(Dense::HcAttnBase(l), n),
                T::vector(Dense::HcAttnScale(l), 3),
                T::matrix(Dense::HcFfnFn(l), n, width),
                T::vector(Dense::HcFfnBase(l), n),
                T::vector(Dense::HcFfnScale(l), 3),
            ]);
        }
        if self.post_norms {
            v.extend([
                T::vector(Dense::PostAttnNorm(l), h),
                T::vector(Dense::PostFfnNorm(l), h),
                T::vector(Dense::LayerScalar(l), 1),
            ]);
        }
    }
}

impl MixerSpec {
    /// The mixer's tensors in layer `l` of a model `h` wide.
    pub fn tensors(&self, l: usize, h: usize, v: &mut Vec<TensorSpec>) {
        match self {
            MixerSpec::Attention(a) => attention(a, l, h, v),
            MixerSpec::Mla(m) => mla(m, l, h, v),
            MixerSpec::DeltaNet(n) => delta_net(n, l, h, v),
            MixerSpec::SharedKv(a) => shared_kv(a, l, h, v),
        }
    }
}

fn attention(a: &AttentionSpec, l: usize, h: usize, v: &mut Vec<TensorSpec>) {
    let (q, kv) = (a.q_dim(), a.kv_dim());
    v.extend([T::matrix(Dense::Q(l), a.q_rows(), h), T::matrix(Dense::K(l), kv, h)]);
    if !a.k_is_v {
        v.push(T::matrix(Dense::V(l), kv, h));
    }
    v.push(T::matrix(Dense::O(l), h, q));
    if a.o_bias {
        v.push(T::vector(Dense::OBias(l), h));
    }
    if a.sinks {
        v.push(T::vector(Dense::AttnSinks(l), a.heads));
    }
    if a.qkv_bias {
        v.extend([
            T::vector(Dense::QBias(l), q),
            T::vector(Dense::KBias(l), kv),
            T::vector(Dense::VBias(l), kv),
        ]);
    }
    let norms = match a.qk_norm {
        QkNorm::PerHead => Some((a.head_dim, a.head_dim)),
        QkNorm::Full => Some((q, kv)),
        QkNorm::None => None,
    };
    if let Some((qn, kn)) = norms {
        v.extend([T::vector(Dense::QNorm(l), qn), T::vector(Dense::KNorm(l), kn)]);
    }
}

fn mla(m: &MlaSpec, l: usize, h: usize, v: &mut Vec<TensorSpec>) {
    match m.q_lora_rank {
        Some(r) => v.extend([
            T::matrix(Dense::MlaQA(l), r, h),
            T::vector(Dense::MlaQANorm(l), r),
            T::matrix(Dense::MlaQB(l), m.q_dim(), r),
        ]),
        None => v.push(T::matrix(Dense::Q(l), m.q_dim(), h)),
    }
    v.extend([
        T::matrix(Dense::MlaKVA(l), m.latent_dim(), h),
        T::vector(Dense::MlaKVANorm(l), m.kv_rank),
        T::matrix(Dense::MlaKB(l), m.heads * m.kv_rank, m.nope),
        T::matrix(Dense::MlaVB(l), m.heads * m.v_dim, m.kv_rank),
        T::matrix(Dense::O(l), h, m.heads * m.v_dim),
    ]);
    // A layer that reuses the previous layer's selection has no indexer of its own. The
    // indexer's queries come from the query LoRA: without one there is nothing to list, and
    // resolving the weights refuses the model.
    if let (Some(ix), Some(r)) = (m.indexer.filter(|ix| ix.full), m.q_lora_rank) {
        v.extend([
            T::matrix(Dense::IdxQ(l), ix.heads * ix.head_dim, r),
            T::matrix(Dense::IdxK(l), ix.head_dim, h),
            T::vector(Dense::IdxKNorm(l), ix.head_dim),
            T::vector(Dense::IdxKNormBias(l), ix.head_dim),
            T::matrix(Dense::IdxWeights(l), ix.heads, h),
        ]);
    }
}

fn delta_net(n: &DeltaNetSpec, l: usize, h: usize, v: &mut Vec<TensorSpec>) {
    let (c, vt, nv) = (n.qkv_dim(), n.value_total(), n.value_heads);
    v.extend([T::matrix(Dense::LinQkv(l), c, h), T::matrix(Dense::LinGate(l), vt, h)]);
    if n.grouped {
        v.push(T::matrix(Dense::LinBetaAlpha(l), 2 * nv, h));
    } else {
        v.extend([T::matrix(Dense::LinBeta(l), nv, h), T::matrix(Dense::LinAlpha(l), nv, h)]);
    }
    v.extend([
        T::matrix(Dense::LinConv(l), c, n.conv_kernel),
        T::vector(Dense::LinA(l), nv),
        T::vector(Dense::LinDtBias(l), nv),
        T::vector(Dense::LinNorm(l), n.value_dim),
        T::matrix(Dense::LinOut(l), h, vt),
    ]);
}

fn shared_kv(a: &SharedKvSpec, l: usize, h: usize, v: &mut Vec<TensorSpec>) {
    let (hd, r, g) = (a.head_dim, a.q_lora_rank, a.o_groups);
    v.extend([
        T::matrix(Dense::MlaQA(l), r, h),
        T::vector(Dense::MlaQANorm(l), r),
        T::matrix(Dense::MlaQB(l), a.heads * hd, r),
        T::matrix(Dense::Kv(l), hd, h),
        T::vector(Dense::MlaKVANorm(l), hd),
        T::vector(Dense::AttnSinks(l), a.heads),
        T::matrix(Dense::OA(l), g * a.o_lora_rank, a.heads * hd / g.max(1)),
        T::matrix(Dense::OB(l), h, g * a.o_lora_rank),
    ]);
    let Some(c) = a.compressor else { return };
    let width = a.compressor_width();
    v.extend([
        T::matrix(Dense::CmpKv(l), width, h),
        T::matrix(Dense::CmpGate(l), width, h),
        T::matrix(Dense::CmpApe(l), c.ratio, width),
        T::vector(Dense::CmpNorm(l), hd),
    ]);
    if let Some(ix) = c.indexer {
        let id = ix.head_dim;
        v.extend([
            T::matrix(Dense::IdxQ(l), ix.heads * id, r),
            T::matrix(Dense::IdxWeights(l), ix.heads, h),
            T::matrix(Dense::IdxCmpKv(l), 2 * id, h),
            T::matrix(Dense::IdxCmpGate(l), 2 * id, h),
            T::matrix(Dense::IdxCmpApe(l), c.ratio, 2 * id),
            T::vector(Dense::IdxCmpNorm(l), id),
        ]);
    }
}

impl FfnSpec {
    /// The feed-forward block's dense tensors in layer `l` (routed experts live in slabs, not
    /// here): the router and its parts, the norms around a side-by-side MLP, then the dense or
    /// shared MLP.
    pub fn tensors(&self, l: usize, h: usize, vocab: usize, v: &mut Vec<TensorSpec>) {
        let (mlp, gated) = match self {
            FfnSpec::Mlp { ffn } => (*ffn, false),
            FfnSpec::Moe(m) => {
                router(m, l, h, vocab, v);
                m.shared.map_or((0, false), |s| (s.ffn, s.gated))
            }
            FfnSpec::MlpAndMoe { ffn, moe } => {
                router(moe, l, h, vocab, v);
                v.extend([
                    T::vector(Dense::PostFfnNorm1(l), h),
                    T::vector(Dense::PreFfnNorm2(l), h),
                    T::vector(Dense::PostFfnNorm2(l), h),
                ]);
                (*ffn, false)
            }
        };
        if mlp > 0 {
            v.extend([
                T::matrix(Dense::SharedGate(l), mlp, h),
                T::matrix(Dense::SharedUp(l), mlp, h),
                T::matrix(Dense::SharedDown(l), h, mlp),
            ]);
            if gated {
                v.push(T::matrix(Dense::SharedExpertGate(l), 1, h));
            }
        }
    }
}

/// A MoE block's router and what comes with it: Gemma 4's router scales, a correction bias or
/// a hash table, gpt-oss's biases.
fn router(m: &MoeSpec, l: usize, h: usize, vocab: usize, v: &mut Vec<TensorSpec>) {
    let e = m.experts;
    v.push(T::matrix(Dense::Router(l), e, h));
    if m.scaled_router {
        v.extend([T::vector(Dense::RouterScale(l), h), T::vector(Dense::ExpertScale(l), e)]);
    }
    match m.router {
        RouterKind::SqrtSoftplus { hashed: true, .. } => {
            v.push(T::matrix(Dense::HashTable(l), vocab, m.top_k))
        }
        RouterKind::SigmoidGrouped { .. } | RouterKind::SqrtSoftplus { hashed: false, .. } => {
            v.push(T::vector(Dense::RouterBias(l), e))
        }
        RouterKind::SoftmaxTopK { .. } | RouterKind::TopKSoftmax => {}
    }
    if m.router_bias {
        v.push(T::vector(Dense::RouterLogitBias(l), e));
    }
    if m.expert_bias {
        v.extend([
            T::matrix(Dense::ExpGateBias(l), e, m.expert_ffn),
            T::matrix(Dense::ExpUpBias(l), e, m.expert_ffn),
            T::matrix(Dense::ExpDownBias(l), e, h),
        ]);
    }
}
