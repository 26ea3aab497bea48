//! Typed per-layer weights, resolved from the dense tensors once at load: the forward pass reads
//! fields, never formats a name or looks one up.

use crate::error::{Error, Result};
use crate::formats::dense::{DenseWeights, TensorRef};
use crate::model::arch::Dense;
use crate::model::config::QkNorm;
use crate::model::spec::{FfnSpec, LayerSpec, MixerSpec, ModelSpec, RouterKind};

/// A SwiGLU MLP (a dense layer's, or a shared expert's).
#[derive(Debug, Clone, Copy)]
pub struct MlpWeights {
    /// gate [ffn, hidden].
    pub gate: TensorRef,
    /// up [ffn, hidden].
    pub up: TensorRef,
    /// down [hidden, ffn].
    pub down: TensorRef,
}

/// Grouped-query attention.
#[derive(Debug, Clone, Copy)]
pub struct AttentionWeights {
    /// Projections.
    pub q: TensorRef,
    /// k projection.
    pub k: TensorRef,
    /// v projection (None where the keys serve as values).
    pub v: Option<TensorRef>,
    /// Output projection.
    pub o: TensorRef,
    /// q/k/v biases, if the model has them.
    pub bias: Option<[TensorRef; 3]>,
    /// q and k norm weights, if the model normalises them.
    pub qk_norm: Option<[TensorRef; 2]>,
    /// Sink logits (one per query head), if the layer has sinks.
    pub sinks: Option<TensorRef>,
    /// The output projection's bias, if it has one.
    pub o_bias: Option<TensorRef>,
}

/// A DeltaNet layer's beta and decay-step (alpha) projections.
#[derive(Debug, Clone, Copy)]
pub enum BetaAlpha {
    /// Two projections, [value_heads, hidden] each.
    Split {
        /// beta.
        beta: TensorRef,
        /// alpha.
        alpha: TensorRef,
    },
    /// One [2 x value_heads, hidden] projection, per key head its betas then its alphas.
    Grouped(TensorRef),
}

/// Gated DeltaNet linear attention (llama.cpp's layout, see `DeltaNetSpec`).
#[derive(Debug, Clone, Copy)]
pub struct DeltaNetWeights {
    /// q/k/v projection [qkv_dim, hidden].
    pub qkv: TensorRef,
    /// Output gate projection (z) [value_total, hidden].
    pub gate: TensorRef,
    /// The beta and decay-step projections.
    pub beta_alpha: BetaAlpha,
    /// Convolution [qkv_dim, kernel], f32.
    pub conv: TensorRef,
    /// `A = -exp(A_log)` [value_heads].
    pub a: TensorRef,
    /// Decay-step bias [value_heads].
    pub dt_bias: TensorRef,
    /// Gated RMSNorm weight [value_dim].
    pub norm: TensorRef,
    /// Output projection [hidden, value_total].
    pub out: TensorRef,
}

/// Multi-head latent attention (llama.cpp's layout, see `MlaSpec`).
#[derive(Debug, Clone, Copy)]
pub struct MlaWeights {
    /// The query: a plain projection, or LoRA down, its norm, and up.
    pub q: MlaQuery,
    /// Latent and shared RoPE key [kv_rank + rope, hidden].
    pub kv_a: TensorRef,
    /// The latent's RMSNorm [kv_rank].
    pub kv_a_norm: TensorRef,
    /// Per head, latent to key, transposed [heads x kv_rank, nope].
    pub k_b: TensorRef,
    /// Per head, latent to value [heads x v, kv_rank].
    pub v_b: TensorRef,
    /// Output projection [hidden, heads x v].
    pub o: TensorRef,
    /// The sparse-attention indexer of a layer that computes its own selection.
    pub indexer: Option<IndexerWeights>,
}

/// A lightning indexer's weights (see `IndexerSpec`).
#[derive(Debug, Clone, Copy)]
pub struct IndexerWeights {
    /// Queries from the query LoRA's normed latent [heads x dim, q_lora_rank].
    pub q: TensorRef,
    /// Key from the layer input [dim, hidden].
    pub k: TensorRef,
    /// The key's LayerNorm weight and bias [dim].
    pub k_norm: [TensorRef; 2],
    /// Per-head score weights from the layer input [heads, hidden].
    pub weights: TensorRef,
}

/// Shared-KV attention (see `SharedKvSpec`).
#[derive(Debug, Clone, Copy)]
pub struct SharedKvWeights {
    /// Query LoRA down [q_lora_rank, hidden].
    pub q_a: TensorRef,
    /// Its RMSNorm [q_lora_rank].
    pub q_a_norm: TensorRef,
    /// Query LoRA up [heads x head_dim, q_lora_rank].
    pub q_b: TensorRef,
    /// The key/value head [head_dim, hidden].
    pub kv: TensorRef,
    /// Its RMSNorm [head_dim].
    pub kv_norm: TensorRef,
    /// Sink logits [heads].
    pub sinks: TensorRef,
    /// Grouped output projection, first stage [groups x rank, heads x head_dim / groups].
    pub o_a: TensorRef,
    /// Second stage [hidden, groups x rank].
    pub o_b: TensorRef,
    /// The compressed branch's weights, if the layer has one.
    pub compressor: Option<CompressorWeights>,
    /// Its indexer's, if it has one.
    pub indexer: Option<EntryIndexerWeights>,
}

/// A compressor: values and gates of each position, the gates' bias per window slot, the
/// entries' norm.
#[derive(Debug, Clone, Copy)]
pub struct CompressorWeights {
    /// Values [width, hidden].
    pub kv: TensorRef,
    /// Gates [width, hidden].
    pub gate: TensorRef,
    /// Gate bias per slot [ratio, width].
    pub ape: TensorRef,
    /// RMSNorm of an entry [entry width].
    pub norm: TensorRef,
}

/// A compressed branch's lightning indexer.
#[derive(Debug, Clone, Copy)]
pub struct EntryIndexerWeights {
    /// Queries from the query LoRA's normed latent [heads x dim, q_lora_rank].
    pub q: TensorRef,
    /// Per-head weights from the layer input [heads, hidden].
    pub weights: TensorRef,
    /// Its own compressor of keys.
    pub compressor: CompressorWeights,
}

/// A hyper-connection's map from the streams to its weights.
#[derive(Debug, Clone, Copy)]
pub struct HyperWeights {
    /// Projection [(2 + streams) x streams (or streams for the head), streams x hidden].
    pub proj: TensorRef,
    /// Bias of the projection's outputs.
    pub base: TensorRef,
    /// Scales (pre, post, mix; the head's one).
    pub scale: TensorRef,
}

/// How MLA forms its queries.
#[derive(Debug, Clone, Copy)]
pub enum MlaQuery {
    /// One projection [heads x (nope + rope), hidden] (V2-Lite).
    Plain(TensorRef),
    /// Down [q_lora_rank, hidden], RMSNorm, up [heads x (nope + rope), q_lora_rank].
    Lora {
        /// Down projection.
        a: TensorRef,
        /// Its RMSNorm.
        norm: TensorRef,
        /// Up projection.
        b: TensorRef,
    },
}

/// A mixer's weights.
#[derive(Debug, Clone, Copy)]
pub enum MixerWeights {
    /// Multi-head latent attention.
    Mla(MlaWeights),
    /// Grouped-query attention.
    Attention(AttentionWeights),
    /// Gated DeltaNet.
    DeltaNet(DeltaNetWeights),
    /// Shared-KV attention.
    SharedKv(SharedKvWeights),
}

/// A routed MoE block's resident weights (the experts come from the expert source).
#[derive(Debug, Clone, Copy)]
pub struct MoeWeights {
    /// Router [experts, hidden].
    pub router: TensorRef,
    /// The sigmoid router's selection bias [experts].
    pub router_bias: Option<TensorRef>,
    /// Shared expert.
    pub shared: Option<MlpWeights>,
    /// The shared expert's sigmoid gate [1, hidden].
    pub shared_gate: Option<TensorRef>,
    /// The router logits' bias [experts].
    pub router_logit_bias: Option<TensorRef>,
    /// Every expert's gate, up and down biases ([experts, ffn], [experts, ffn],
    /// [experts, hidden]).
    pub expert_bias: Option<[TensorRef; 3]>,
    /// Gemma 4's router input scale [hidden] and per-expert weight factors [experts].
    pub router_scales: Option<[TensorRef; 2]>,
    /// A hash-routed layer's experts per token id [vocab, top_k], f32.
    pub hash_table: Option<TensorRef>,
}

/// Gemma 4's dense MLP beside its MoE, with the three norms around them.
#[derive(Debug, Clone, Copy)]
pub struct MlpAndMoeWeights {
    /// The dense MLP (on the block's normed input).
    pub mlp: MlpWeights,
    /// RMSNorm of the MLP's output.
    pub post_mlp_norm: TensorRef,
    /// RMSNorm of the residual into the experts.
    pub pre_moe_norm: TensorRef,
    /// RMSNorm of the experts' output.
    pub post_moe_norm: TensorRef,
}

/// A feed-forward block's weights.
#[derive(Debug, Clone)]
pub enum FfnWeights {
    /// Dense MLP.
    Mlp(MlpWeights),
    /// Routed MoE (boxed: it is much larger than a dense MLP's three references).
    Moe(Box<MoeWeights>),
    /// A dense MLP and a routed MoE side by side.
    MlpAndMoe(Box<(MlpAndMoeWeights, MoeWeights)>),
}

impl FfnWeights {
    /// The routed MoE's weights, if the block has one.
    pub fn moe(&self) -> Option<&MoeWeights> {
        match self {
            FfnWeights::Moe(m) => Some(m),
            FfnWeights::MlpAndMoe(b) => Some(&b.1),
            FfnWeights::Mlp(_) => None,
        }
    }
}

/// Sandwich norms' weights (see `LayerSpec::post_norms`).
#[derive(Debug, Clone, Copy)]
pub struct PostNorms {
    /// RMSNorm of the mixer's output.
    pub mixer: TensorRef,
    /// RMSNorm of the feed-forward block's output.
    pub ffn: TensorRef,
    /// The layer output's factor [1].
    pub scalar: TensorRef,
}

/// One decoder layer.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// RMSNorm before the mixer.
    pub mixer_norm: TensorRef,
    /// The mixer.
    pub mixer: MixerWeights,
    /// RMSNorm before the feed-forward block.
    pub ffn_norm: TensorRef,
    /// The feed-forward block.
    pub ffn: FfnWeights,
    /// Sandwich norms, if the layer has them.
    pub post_norms: Option<PostNorms>,
    /// Hyper-connections before the mixer and before the feed-forward block, if the model
    /// has residual streams.
    pub hyper: Option<[HyperWeights; 2]>,
}

/// Every resident weight of the model.
#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// Token embeddings [vocab, hidden].
    pub embed: TensorRef,
    /// Output projection [vocab, hidden] (the embeddings when tied).
    pub head: TensorRef,
    /// Final RMSNorm.
    pub final_norm: TensorRef,
    /// The hyper head collapsing the residual streams, if the model has them.
    pub hyper_head: Option<HyperWeights>,
    /// Per layer.
    pub layers: Vec<LayerWeights>,
}

fn matrix(d: &DenseWeights, t: Dense, rows: usize, cols: usize) -> Result<TensorRef> {
    let r = d.tensor(&t.key())?;
    if (r.rows(), r.cols()) != (rows, cols) {
        return Err(Error::Invalid(format!(
            "tensor {}: {}x{} where the config needs {rows}x{cols}",
            t.key(),
            r.rows(),
            r.cols()
        )));
    }
    Ok(r)
}

fn vector(d: &DenseWeights, t: Dense, len: usize) -> Result<TensorRef> {
    d.vector_ref(&t.key(), len)
}

fn mlp(d: &DenseWeights, l: usize, hidden: usize, ffn: usize) -> Result<MlpWeights> {
    Ok(MlpWeights {
        gate: matrix(d, Dense::SharedGate(l), ffn, hidden)?,
        up: matrix(d, Dense::SharedUp(l), ffn, hidden)?,
        down: matrix(d, Dense::SharedDown(l), hidden, ffn)?,
    })
}

fn layer(d: &DenseWeights, spec: &ModelSpec, l: usize, s: &LayerSpec) -> Result<LayerWeights> {
    let h = spec.hidden;
    let mixer = match s.mixer {
        MixerSpec::Attention(a) => {
            let (qd, kvd) = (a.q_dim(), a.kv_dim());
            let bias = if a.qkv_bias {
                Some([
                    vector(d, Dense::QBias(l), qd)?,
                    vector(d, Dense::KBias(l), kvd)?,
                    vector(d, Dense::VBias(l), kvd)?,
                ])
            } else {
                None
            };
            let qk_norm = match a.qk_norm {
                QkNorm::None => None,
                QkNorm::PerHead => Some([
                    vector(d, Dense::QNorm(l), a.head_dim)?,
                    vector(d, Dense::KNorm(l), a.head_dim)?,
                ]),
                QkNorm::Full => {
                    Some([vector(d, Dense::QNorm(l), qd)?, vector(d, Dense::KNorm(l), kvd)?])
                }
            };
            MixerWeights::Attention(AttentionWeights {
                q: matrix(d, Dense::Q(l), a.q_rows(), h)?,
                k: matrix(d, Dense::K(l), kvd, h)?,
                v: (!a.k_is_v).then(|| matrix(d, Dense::V(l), kvd, h)).transpose()?,
                o: matrix(d, Dense::O(l), h, qd)?,
                bias,
                qk_norm,
                sinks: a.sinks.then(|| vector(d, Dense::AttnSinks(l), a.heads)).transpose()?,
                o_bias: a.o_bias.then(|| vector(d, Dense::OBias(l), h)).transpose()?,
            })
        }
        MixerSpec::Mla(m) => {
            let q = match m.q_lora_rank {
                Some(r) => MlaQuery::Lora {
                    a: matrix(d, Dense::MlaQA(l), r, h)?,
                    norm: vector(d, Dense::MlaQANorm(l), r)?,
                    b: matrix(d, Dense::MlaQB(l), m.q_dim(), r)?,
                },
                None => MlaQuery::Plain(matrix(d, Dense::Q(l), m.q_dim(), h)?),
            };
            MixerWeights::Mla(MlaWeights {
                q,
                kv_a: matrix(d, Dense::MlaKVA(l), m.latent_dim(), h)?,
                kv_a_norm: vector(d, Dense::MlaKVANorm(l), m.kv_rank)?,
                k_b: matrix(d, Dense::MlaKB(l), m.heads * m.kv_rank, m.nope)?,
                v_b: matrix(d, Dense::MlaVB(l), m.heads * m.v_dim, m.kv_rank)?,
                o: matrix(d, Dense::O(l), h, m.heads * m.v_dim)?,
                indexer: match (m.indexer.filter(|ix| ix.full), m.q_lora_rank) {
                    (Some(ix), Some(r)) => Some(IndexerWeights {
                        q: matrix(d, Dense::IdxQ(l), ix.heads * ix.head_dim, r)?,
                        k: matrix(d, Dense::IdxK(l), ix.head_dim, h)?,
                        k_norm: [
                            vector(d, Dense::IdxKNorm(l), ix.head_dim)?,
                            vector(d, Dense::IdxKNormBias(l), ix.head_dim)?,
                        ],
                        weights: matrix(d, Dense::IdxWeights(l), ix.heads, h)?,
                    }),
                    (Some(_), None) => {
                        return Err(Error::Invalid(format!(
                            "layer {l}: a sparse-attention indexer needs the query LoRA"
                        )))
                    }
                    (None, _) => None,
                },
            })
        }
        MixerSpec::SharedKv(a) => MixerWeights::SharedKv(shared_kv(d, l, h, &a)?),
        MixerSpec::DeltaNet(n) => {
            let (c, vt, nv) = (n.qkv_dim(), n.value_total(), n.value_heads);
            MixerWeights::DeltaNet(DeltaNetWeights {
                qkv: matrix(d, Dense::LinQkv(l), c, h)?,
                gate: matrix(d, Dense::LinGate(l), vt, h)?,
                beta_alpha: if n.grouped {
                    BetaAlpha::Grouped(matrix(d, Dense::LinBetaAlpha(l), 2 * nv, h)?)
                } else {
                    BetaAlpha::Split {
                        beta: matrix(d, Dense::LinBeta(l), nv, h)?,
                        alpha: matrix(d, Dense::LinAlpha(l), nv, h)?,
                    }
                },
                conv: matrix(d, Dense::LinConv(l), c, n.conv_kernel)?,
                a: vector(d, Dense::LinA(l), nv)?,
                dt_bias: vector(d, Dense::LinDtBias(l), nv)?,
                norm: vector(d, Dense::LinNorm(l), n.value_dim)?,
                out: matrix(d, Dense::LinOut(l), h, vt)?,
            })
        }
    };
    let moe_weights = |m: &crate::model::spec::MoeSpec| -> Result<MoeWeights> {
        Ok(MoeWeights {
            router: matrix(d, Dense::Router(l), m.experts, h)?,
            router_bias: match m.router {
                RouterKind::SigmoidGrouped { .. } => {
                    Some(vector(d, Dense::RouterBias(l), m.experts)?)
                }
                RouterKind::SqrtSoftplus { hashed: false, .. } => {
                    Some(vector(d, Dense::RouterBias(l), m.experts)?)
                }
                RouterKind::SoftmaxTopK { .. }
                | RouterKind::TopKSoftmax
                | RouterKind::SqrtSoftplus { hashed: true, .. } => None,
            },
            hash_table: match m.router {
                RouterKind::SqrtSoftplus { hashed: true, .. } => {
                    Some(matrix(d, Dense::HashTable(l), spec.vocab, m.top_k)?)
                }
                _ => None,
            },
            shared: m.shared.map(|sh| mlp(d, l, h, sh.ffn)).transpose()?,
            shared_gate: match m.shared {
                Some(sh) if sh.gated => Some(matrix(d, Dense::SharedExpertGate(l), 1, h)?),
                _ => None,
            },
            router_logit_bias: m
                .router_bias
                .then(|| vector(d, Dense::RouterLogitBias(l), m.experts))
                .transpose()?,
            expert_bias: if m.expert_bias {
                Some([
                    matrix(d, Dense::ExpGateBias(l), m.experts, m.expert_ffn)?,
                    matrix(d, Dense::ExpUpBias(l), m.experts, m.expert_ffn)?,
                    matrix(d, Dense::ExpDownBias(l), m.experts, h)?,
                ])
            } else {
                None
            },
            router_scales: if m.scaled_router {
                Some([
                    vector(d, Dense::RouterScale(l), h)?,
                    vector(d, Dense::ExpertScale(l), m.experts)?,
                ])
            } else {
                None
            },
        })
    };
    let ffn = match &s.ffn {
        FfnSpec::Mlp { ffn } => FfnWeights::Mlp(mlp(d, l, h, *ffn)?),
        FfnSpec::Moe(m) => FfnWeights::Moe(Box::new(moe_weights(m)?)),
        FfnSpec::MlpAndMoe { ffn, moe } => FfnWeights::MlpAndMoe(Box::new((
            MlpAndMoeWeights {
                mlp: mlp(d, l, h, *ffn)?,
                post_mlp_norm: vector(d, Dense::PostFfnNorm1(l), h)?,
                pre_moe_norm: vector(d, Dense::PreFfnNorm2(l), h)?,
                post_moe_norm: vector(d, Dense::PostFfnNorm2(l), h)?,
            },
            moe_weights(moe)?,
        ))),
    };
    let post_norms = if s.post_norms {
        Some(PostNorms {
            mixer: vector(d, Dense::PostAttnNorm(l), h)?,
            ffn: vector(d, Dense::PostFfnNorm(l), h)?,
            scalar: vector(d, Dense::LayerScalar(l), 1)?,
        })
    } else {
        None
    };
    let hyper = match spec.hyper {
        Some(hc) => {
            let (n, width) = ((2 + hc.streams) * hc.streams, hc.streams * h);
            Some([
                HyperWeights {
                    proj: matrix(d, Dense::HcAttnFn(l), n, width)?,
                    base: vector(d, Dense::HcAttnBase(l), n)?,
                    scale: vector(d, Dense::HcAttnScale(l), 3)?,
                },
                HyperWeights {
                    proj: matrix(d, Dense::HcFfnFn(l), n, width)?,
                    base: vector(d, Dense::HcFfnBase(l), n)?,
                    scale: vector(d, Dense::HcFfnScale(l), 3)?,
                },
            ])
        }
        None => None,
    };
    Ok(LayerWeights {
        mixer_norm: vector(d, Dense::AttnNorm(l), h)?,
        mixer,
        ffn_norm: vector(d, Dense::FfnNorm(l), h)?,
        ffn,
        post_norms,
        hyper,
    })
}

impl ModelWeights {
    /// Resolves every tensor `spec` needs, with its shape checked.
    pub fn resolve(d: &DenseWeights, spec: &ModelSpec, tie_embeddings: bool) -> Result<Self> {
        let embed = matrix(d, Dense::Embed, spec.vocab, spec.hidden)?;
        let head =
            if tie_embeddings { embed } else { matrix(d, Dense::LmHead, spec.vocab, spec.hidden)? };
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(l, s)| layer(d, spec, l, s))
            .collect::<Result<_>>()?;
        let hyper_head = match spec.hyper {
            Some(hc) => Some(HyperWeights {
                proj: matrix(d, Dense::HcHeadFn, hc.streams, hc.streams * spec.hidden)?,
                base: vector(d, Dense::HcHeadBase, hc.streams)?,
                scale: vector(d, Dense::HcHeadScale, 1)?,
            }),
            None => None,
        };
        let final_norm = vector(d, Dense::FinalNorm, spec.hidden)?;
        Ok(Self { embed, head, final_norm, hyper_head, layers })
    }

    /// The matrices read only through matrix products (never by rows): attention projections,
    /// dense and shared-expert MLPs, and the output head unless it is the embedding table.
    pub fn product_only(&self) -> Vec<TensorRef> {
        let mut out = Vec::new();
        if self.head != self.embed {
            out.push(self.head);
        }
        let mlp = |m: &MlpWeights, out: &mut Vec<TensorRef>| out.extend([m.gate, m.up, m.down]);
        for l in &self.layers {
            if let MixerWeights::Attention(a) = &l.mixer {
                out.extend([a.q, a.k, a.o]);
                out.extend(a.v);
            }
            match &l.ffn {
                FfnWeights::Mlp(m) => mlp(m, &mut out),
                FfnWeights::Moe(m) => m.shared.iter().for_each(|s| mlp(s, &mut out)),
                FfnWeights::MlpAndMoe(b) => {
                    mlp(&b.0.mlp, &mut out);
                    b.1.shared.iter().for_each(|s| mlp(s, &mut out));
                }
            }
        }
        out.retain(|t| t != &self.embed);
        out
    }
}

fn shared_kv(
    d: &DenseWeights,
    l: usize,
    h: usize,
    a: &crate::model::spec::SharedKvSpec,
) -> Result<SharedKvWeights> {
    let (r, hd) = (a.q_lora_rank, a.head_dim);
    let compressor = match a.compressor {
        Some(c) => {
            let w = a.compressor_width();
            Some(CompressorWeights {
                kv: matrix(d, Dense::CmpKv(l), w, h)?,
                gate: matrix(d, Dense::CmpGate(l), w, h)?,
                ape: matrix(d, Dense::CmpApe(l), c.ratio, w)?,
                norm: vector(d, Dense::CmpNorm(l), hd)?,
            })
        }
        None => None,
    };
    let indexer = match a.compressor.and_then(|c| c.indexer.map(|ix| (c.ratio, ix))) {
        Some((ratio, ix)) => Some(EntryIndexerWeights {
            q: matrix(d, Dense::IdxQ(l), ix.heads * ix.head_dim, r)?,
            weights: matrix(d, Dense::IdxWeights(l), ix.heads, h)?,
            compressor: CompressorWeights {
                kv: matrix(d, Dense::IdxCmpKv(l), 2 * ix.head_dim, h)?,
                gate: matrix(d, Dense::IdxCmpGate(l), 2 * ix.head_dim, h)?,
                ape: matrix(d, Dense::IdxCmpApe(l), ratio, 2 * ix.head_dim)?,
                norm: vector(d, Dense::IdxCmpNorm(l), ix.head_dim)?,
            },
        }),
        None => None,
    };
    let group_in = a.heads * hd / a.o_groups.max(1);
    Ok(SharedKvWeights {
        q_a: matrix(d, Dense::MlaQA(l), r, h)?,
        q_a_norm: vector(d, Dense::MlaQANorm(l), r)?,
        q_b: matrix(d, Dense::MlaQB(l), a.heads * hd, r)?,
        kv: matrix(d, Dense::Kv(l), hd, h)?,
        kv_norm: vector(d, Dense::MlaKVANorm(l), hd)?,
        sinks: vector(d, Dense::AttnSinks(l), a.heads)?,
        o_a: matrix(d, Dense::OA(l), a.o_groups * a.o_lora_rank, group_in)?,
        o_b: matrix(d, Dense::OB(l), h, a.o_groups * a.o_lora_rank)?,
        compressor,
        indexer,
    })
}
