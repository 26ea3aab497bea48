//! Typed per-layer weights, resolved from the dense tensors once at load: the forward pass reads
//! fields, never formats a name or looks one up.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

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

/// The dense tensors the spec lists ([`ModelSpec::tensors`]), each checked against its listed
/// shape. Resolution takes each by role, once; a role taken that the list lacks, or a listed
/// tensor left untaken, is a disagreement between the list and this file and fails the load.
struct Listed {
    found: HashMap<Dense, TensorRef>,
    taken: RefCell<HashSet<Dense>>,
}

impl Listed {
    fn check(d: &DenseWeights, spec: &ModelSpec) -> Result<Self> {
        let mut found = HashMap::new();
        for t in spec.tensors() {
            let key = t.role.key();
            let r = if t.is_vector() {
                d.vector_ref(&key, t.cols)?
            } else {
                let r = d.tensor(&key)?;
                if (r.rows(), r.cols()) != (t.rows, t.cols) {
                    return Err(Error::Invalid(format!(
                        "tensor {key}: {}x{} where the config needs {}x{}",
                        r.rows(),
                        r.cols(),
                        t.rows,
                        t.cols
                    )));
                }
                r
            };
            found.insert(t.role, r);
        }
        Ok(Self { found, taken: RefCell::new(HashSet::new()) })
    }

    fn get(&self, t: Dense) -> Result<TensorRef> {
        let r = self.found.get(&t).copied().ok_or_else(|| {
            Error::Invalid(format!("tensor {}: read but not in the layer spec's list", t.key()))
        })?;
        self.taken.borrow_mut().insert(t);
        Ok(r)
    }

    fn finish(&self) -> Result<()> {
        let taken = self.taken.borrow();
        match self.found.keys().find(|t| !taken.contains(t)) {
            Some(t) => Err(Error::Invalid(format!(
                "tensor {}: in the layer spec's list but never read",
                t.key()
            ))),
            None => Ok(()),
        }
    }
}

fn mlp(d: &Listed, l: usize) -> Result<MlpWeights> {
    Ok(MlpWeights {
        gate: d.get(Dense::SharedGate(l))?,
        up: d.get(Dense::SharedUp(l))?,
        down: d.get(Dense::SharedDown(l))?,
    })
}

fn layer(d: &Listed, spec: &ModelSpec, l: usize, s: &LayerSpec) -> Result<LayerWeights> {
    let mixer = match s.mixer {
        MixerSpec::Attention(a) => {
            let bias = if a.qkv_bias {
                Some([d.get(Dense::QBias(l))?, d.get(Dense::KBias(l))?, d.get(Dense::VBias(l))?])
            } else {
                None
            };
            let qk_norm = match a.qk_norm {
                QkNorm::None => None,
                QkNorm::PerHead | QkNorm::Full => {
                    Some([d.get(Dense::QNorm(l))?, d.get(Dense::KNorm(l))?])
                }
            };
            MixerWeights::Attention(AttentionWeights {
                q: d.get(Dense::Q(l))?,
                k: d.get(Dense::K(l))?,
                v: (!a.k_is_v).then(|| d.get(Dense::V(l))).transpose()?,
                o: d.get(Dense::O(l))?,
                bias,
                qk_norm,
                sinks: a.sinks.then(|| d.get(Dense::AttnSinks(l))).transpose()?,
                o_bias: a.o_bias.then(|| d.get(Dense::OBias(l))).transpose()?,
            })
        }
        MixerSpec::Mla(m) => {
            let q = match m.q_lora_rank {
                Some(_) => MlaQuery::Lora {
                    a: d.get(Dense::MlaQA(l))?,
                    norm: d.get(Dense::MlaQANorm(l))?,
                    b: d.get(Dense::MlaQB(l))?,
                },
                None => MlaQuery::Plain(d.get(Dense::Q(l))?),
            };
            MixerWeights::Mla(MlaWeights {
                q,
                kv_a: d.get(Dense::MlaKVA(l))?,
                kv_a_norm: d.get(Dense::MlaKVANorm(l))?,
                k_b: d.get(Dense::MlaKB(l))?,
                v_b: d.get(Dense::MlaVB(l))?,
                o: d.get(Dense::O(l))?,
                indexer: match (m.indexer.filter(|ix| ix.full), m.q_lora_rank) {
                    (Some(_), Some(_)) => Some(IndexerWeights {
                        q: d.get(Dense::IdxQ(l))?,
                        k: d.get(Dense::IdxK(l))?,
                        k_norm: [d.get(Dense::IdxKNorm(l))?, d.get(Dense::IdxKNormBias(l))?],
                        weights: d.get(Dense::IdxWeights(l))?,
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
        MixerSpec::SharedKv(a) => MixerWeights::SharedKv(shared_kv(d, l, &a)?),
        MixerSpec::DeltaNet(n) => MixerWeights::DeltaNet(DeltaNetWeights {
            qkv: d.get(Dense::LinQkv(l))?,
            gate: d.get(Dense::LinGate(l))?,
            beta_alpha: if n.grouped {
                BetaAlpha::Grouped(d.get(Dense::LinBetaAlpha(l))?)
            } else {
                BetaAlpha::Split {
                    beta: d.get(Dense::LinBeta(l))?,
                    alpha: d.get(Dense::LinAlpha(l))?,
                }
            },
            conv: d.get(Dense::LinConv(l))?,
            a: d.get(Dense::LinA(l))?,
            dt_bias: d.get(Dense::LinDtBias(l))?,
            norm: d.get(Dense::LinNorm(l))?,
            out: d.get(Dense::LinOut(l))?,
        }),
    };
    let moe_weights = |m: &crate::model::spec::MoeSpec| -> Result<MoeWeights> {
        Ok(MoeWeights {
            router: d.get(Dense::Router(l))?,
            router_bias: match m.router {
                RouterKind::SigmoidGrouped { .. } => Some(d.get(Dense::RouterBias(l))?),
                RouterKind::SqrtSoftplus { hashed: false, .. } => {
                    Some(d.get(Dense::RouterBias(l))?)
                }
                RouterKind::SoftmaxTopK { .. }
                | RouterKind::TopKSoftmax
                | RouterKind::SqrtSoftplus { hashed: true, .. } => None,
            },
            hash_table: match m.router {
                RouterKind::SqrtSoftplus { hashed: true, .. } => Some(d.get(Dense::HashTable(l))?),
                _ => None,
            },
            shared: m.shared.map(|_| mlp(d, l)).transpose()?,
            shared_gate: match m.shared {
                Some(sh) if sh.gated => Some(d.get(Dense::SharedExpertGate(l))?),
                _ => None,
            },
            router_logit_bias: m
                .router_bias
                .then(|| d.get(Dense::RouterLogitBias(l)))
                .transpose()?,
            expert_bias: if m.expert_bias {
                Some([
                    d.get(Dense::ExpGateBias(l))?,
                    d.get(Dense::ExpUpBias(l))?,
                    d.get(Dense::ExpDownBias(l))?,
                ])
            } else {
                None
            },
            router_scales: if m.scaled_router {
                Some([d.get(Dense::RouterScale(l))?, d.get(Dense::ExpertScale(l))?])
            } else {
                None
            },
        })
    };
    let ffn = match &s.ffn {
        FfnSpec::Mlp { .. } => FfnWeights::Mlp(mlp(d, l)?),
        FfnSpec::Moe(m) => FfnWeights::Moe(Box::new(moe_weights(m)?)),
        FfnSpec::MlpAndMoe { moe, .. } => FfnWeights::MlpAndMoe(Box::new((
            MlpAndMoeWeights {
                mlp: mlp(d, l)?,
                post_mlp_norm: d.get(Dense::PostFfnNorm1(l))?,
                pre_moe_norm: d.get(Dense::PreFfnNorm2(l))?,
                post_moe_norm: d.get(Dense::PostFfnNorm2(l))?,
            },
            moe_weights(moe)?,
        ))),
    };
    let post_norms = if s.post_norms {
        Some(PostNorms {
            mixer: d.get(Dense::PostAttnNorm(l))?,
            ffn: d.get(Dense::PostFfnNorm(l))?,
            scalar: d.get(Dense::LayerScalar(l))?,
        })
    } else {
        None
    };
    let hyper = match spec.hyper {
        Some(_) => Some([
            HyperWeights {
                proj: d.get(Dense::HcAttnFn(l))?,
                base: d.get(Dense::HcAttnBase(l))?,
                scale: d.get(Dense::HcAttnScale(l))?,
            },
            HyperWeights {
                proj: d.get(Dense::HcFfnFn(l))?,
                base: d.get(Dense::HcFfnBase(l))?,
                scale: d.get(Dense::HcFfnScale(l))?,
            },
        ]),
        None => None,
    };
    Ok(LayerWeights {
        mixer_norm: d.get(Dense::AttnNorm(l))?,
        mixer,
        ffn_norm: d.get(Dense::FfnNorm(l))?,
        ffn,
        post_norms,
        hyper,
    })
}

impl ModelWeights {
    /// Resolves every tensor `spec` needs, with its shape checked.
    pub fn resolve(dense: &DenseWeights, spec: &ModelSpec) -> Result<Self> {
        let d = &Listed::check(dense, spec)?;
        let embed = d.get(Dense::Embed)?;
        let head = if spec.tie_embeddings { embed } else { d.get(Dense::LmHead)? };
        let layers = spec
            .layers
            .iter()
            .enumerate()
            .map(|(l, s)| layer(d, spec, l, s))
            .collect::<Result<_>>()?;
        let hyper_head = match spec.hyper {
            Some(_) => Some(HyperWeights {
                proj: d.get(Dense::HcHeadFn)?,
                base: d.get(Dense::HcHeadBase)?,
                scale: d.get(Dense::HcHeadScale)?,
            }),
            None => None,
        };
        let final_norm = d.get(Dense::FinalNorm)?;
        d.finish()?;
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
    d: &Listed,
    l: usize,
    a: &crate::model::spec::SharedKvSpec,
) -> Result<SharedKvWeights> {
    let compressor = match a.compressor {
        Some(_) => Some(CompressorWeights {
            kv: d.get(Dense::CmpKv(l))?,
            gate: d.get(Dense::CmpGate(l))?,
            ape: d.get(Dense::CmpApe(l))?,
            norm: d.get(Dense::CmpNorm(l))?,
        }),
        None => None,
    };
    let indexer = match a.compressor.and_then(|c| c.indexer) {
        Some(_) => Some(EntryIndexerWeights {
            q: d.get(Dense::IdxQ(l))?,
            weights: d.get(Dense::IdxWeights(l))?,
            compressor: CompressorWeights {
                kv: d.get(Dense::IdxCmpKv(l))?,
                gate: d.get(Dense::IdxCmpGate(l))?,
                ape: d.get(Dense::IdxCmpApe(l))?,
                norm: d.get(Dense::IdxCmpNorm(l))?,
            },
        }),
        None => None,
    };
    Ok(SharedKvWeights {
        q_a: d.get(Dense::MlaQA(l))?,
        q_a_norm: d.get(Dense::MlaQANorm(l))?,
        q_b: d.get(Dense::MlaQB(l))?,
        kv: d.get(Dense::Kv(l))?,
        kv_norm: d.get(Dense::MlaKVANorm(l))?,
        sinks: d.get(Dense::AttnSinks(l))?,
        o_a: d.get(Dense::OA(l))?,
        o_b: d.get(Dense::OB(l))?,
        compressor,
        indexer,
    })
}
