//! Model configuration: read from a Hugging Face `config.json` in either spelling (transformers
//! v5 `rope_parameters` / `dtype`, hub `rope_theta` / `rope_scaling` / `torch_dtype`,
//! `num_experts` / `num_local_experts`), normalised into what the forward pass needs, and stored
//! as such in `floe.json`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The architectures floe runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Qwen3-MoE: per-head q/k RMSNorm, explicit head_dim, softmax router, optional renorm.
    Qwen3Moe,
    /// Qwen1.5/Qwen2-MoE: q/k/v bias, shared expert with a sigmoid gate.
    Qwen2Moe,
    /// Mixtral: router always renormalised over the top-k.
    Mixtral,
    /// OLMoE: q/k RMSNorm over the whole projection.
    Olmoe,
    /// Qwen3.5/3.6-MoE: Gated DeltaNet layers with a gated full-attention layer every few,
    /// partial RoPE, shared expert with a sigmoid gate.
    #[serde(rename = "qwen3_5_moe")]
    Qwen35Moe,
    /// GLM-4.5/4.6/4.7: sigmoid router with a correction bias, an ungated shared expert, leading
    /// dense layers, q/k/v bias, partial RoPE.
    Glm4Moe,
    /// DeepSeek-V2 (and V2-Lite): multi-head latent attention, softmax greedy top-k, shared
    /// experts, leading dense layers.
    DeepseekV2,
    /// DeepSeek-V3/R1 and Kimi-K2: MLA with a q LoRA, the sigmoid group-limited router.
    DeepseekV3,
    /// gpt-oss: attention sinks, alternating sliding windows, biases everywhere, YaRN RoPE, a
    /// top-k-then-softmax router, clamped SwiGLU experts with biases.
    GptOss,
    /// Qwen3-Next: Qwen3.5's hybrid with fused, per-key-head grouped DeltaNet projections
    /// (`in_proj_qkvz`, `in_proj_ba`).
    Qwen3Next,
    /// MiniMax-M2: q/k RMSNorm over the whole projection, partial RoPE, a sigmoid router with a
    /// correction bias, no shared expert.
    MinimaxM2,
    /// Gemma 4's MoE text model: a dense GeGLU MLP and a routed MoE side by side in every
    /// layer, sandwich norms, sliding and full attention layers of different shapes.
    Gemma4,
    /// GLM-5 (`glm_moe_dsa`): GLM's MoE on MLA with DeepSeek sparse attention (a lightning
    /// indexer picks the positions each query attends to).
    GlmMoeDsa,
    /// DeepSeek-V4: hyper-connection residual streams, shared-KV attention with a sliding
    /// window and per layer a compressed branch (sparse, through a lightning indexer, or
    /// heavily compressed), sqrt-softplus routing with hash-routed first layers.
    DeepseekV4,
}

impl Arch {
    /// The `model_type` of config.json.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen3Moe => "qwen3_moe",
            Arch::Qwen2Moe => "qwen2_moe",
            Arch::Mixtral => "mixtral",
            Arch::Olmoe => "olmoe",
            Arch::Qwen35Moe => "qwen3_5_moe",
            Arch::Glm4Moe => "glm4_moe",
            Arch::DeepseekV2 => "deepseek_v2",
            Arch::DeepseekV3 => "deepseek_v3",
            Arch::GptOss => "gpt_oss",
            Arch::Qwen3Next => "qwen3_next",
            Arch::MinimaxM2 => "minimax_m2",
            Arch::Gemma4 => "gemma4_text",
            Arch::GlmMoeDsa => "glm_moe_dsa",
            Arch::DeepseekV4 => "deepseek_v4",
        }
    }

    /// Whether the shared expert is scaled by a sigmoid gate of the input.
    pub fn gated_shared_expert(self) -> bool {
        matches!(self, Arch::Qwen2Moe | Arch::Qwen35Moe | Arch::Qwen3Next)
    }

    /// The Qwen3.5 lineage: Gated DeltaNet layers, gated attention, `(1 + w)` RMSNorms.
    pub fn is_qwen_hybrid(self) -> bool {
        matches!(self, Arch::Qwen35Moe | Arch::Qwen3Next)
    }

    /// What this architecture's layers add to the common one (its configuration files do not
    /// spell these out; the architecture fixes them).
    pub fn layer_extras(self) -> LayerExtras {
        match self {
            Arch::GptOss => LayerExtras {
                attn_sinks: true,
                o_bias: true,
                expert_biases: true,
                top_k_then_softmax: true,
            },
            _ => LayerExtras::default(),
        }
    }

    /// Whether full-attention layers gate their output with a sigmoid of a second half of q.
    pub fn attention_output_gate(self) -> bool {
        self.is_qwen_hybrid()
    }

    fn from_model_type(t: &str) -> Result<Self> {
        Ok(match t {
            "qwen3_moe" => Arch::Qwen3Moe,
            "qwen2_moe" => Arch::Qwen2Moe,
            "mixtral" => Arch::Mixtral,
            "olmoe" => Arch::Olmoe,
            "qwen3_5_moe" | "qwen3_5_moe_text" => Arch::Qwen35Moe,
            "glm4_moe" => Arch::Glm4Moe,
            "deepseek_v2" => Arch::DeepseekV2,
            "deepseek_v3" | "kimi_k2" => Arch::DeepseekV3,
            "gpt_oss" => Arch::GptOss,
            "qwen3_next" => Arch::Qwen3Next,
            "minimax_m2" => Arch::MinimaxM2,
            "gemma4_text" | "gemma4" => Arch::Gemma4,
            "glm_moe_dsa" => Arch::GlmMoeDsa,
            "deepseek_v4" => Arch::DeepseekV4,
            other => {
                return Err(Error::Unsupported(format!(
                    "architecture {other:?} (floe runs qwen3_moe, qwen2_moe, mixtral, olmoe, \
                     qwen3_5_moe, qwen3_next, glm4_moe, deepseek_v2, deepseek_v3, kimi_k2, \
                     gpt_oss, minimax_m2, gemma4_text, glm_moe_dsa, deepseek_v4)"
                )))
            }
        })
    }
}

/// What a layer adds to the common one, as data: read by the layer spec and the tensor list,
/// set where a configuration is read (from the architecture, [`Arch::layer_extras`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerExtras {
    /// A learned sink logit per query head joins each attention softmax.
    pub attn_sinks: bool,
    /// The attention output projection has a bias.
    pub o_bias: bool,
    /// The router's logits and every expert's gate, up and down have biases.
    pub expert_biases: bool,
    /// Routing takes the top-k logits, then a softmax over those k (else a softmax over all
    /// experts, then the top k).
    pub top_k_then_softmax: bool,
}

impl LayerExtras {
    /// None of them.
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

/// How queries and keys are normalised before RoPE, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QkNorm {
    /// None.
    None,
    /// RMSNorm over each head (weight of `head_dim`), Qwen3.
    PerHead,
    /// RMSNorm over the whole q (and k) projection, OLMoE.
    Full,
}

/// A sigmoid router choosing within the best groups of experts (DeepSeek-V3, GLM-4.5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SigmoidRouter {
    /// Expert groups (`n_group`).
    pub groups: usize,
    /// Groups a token chooses from (`topk_group`).
    pub top_groups: usize,
    /// Factor on the routed experts' weights (`routed_scaling_factor`).
    pub routed_scale: f32,
}

/// The shape of the Gated DeltaNet (linear attention) layers (Qwen3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinearAttention {
    /// Key (and query) heads.
    pub key_heads: usize,
    /// Value heads (a multiple of the key heads).
    pub value_heads: usize,
    /// Channels per key head.
    pub key_dim: usize,
    /// Channels per value head.
    pub value_dim: usize,
    /// Width of the causal convolution.
    pub conv_kernel: usize,
    /// Value heads grouped per key head (value head `j` reads key head `j / (value_heads /
    /// key_heads)`) and beta/alpha one projection (Qwen3-Next); else the value heads are
    /// tiled over the key heads (Qwen3.5 as llama.cpp stores it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grouped: bool,
}

impl LinearAttention {
    /// Channels of the q/k/v projection (and of the convolution).
    pub fn qkv_dim(&self) -> usize {
        2 * self.key_heads * self.key_dim + self.value_heads * self.value_dim
    }
    /// Channels of the value (and output gate) projection.
    pub fn value_total(&self) -> usize {
        self.value_heads * self.value_dim
    }
}

/// YaRN RoPE scaling (transformers' `rope_type: yarn`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Yarn {
    /// Context extension factor.
    pub factor: f32,
    /// The context the model was trained at before extension.
    pub original_max_positions: usize,
    /// Rotations above which frequencies are kept (extrapolated).
    pub beta_fast: f32,
    /// Rotations below which frequencies are interpolated.
    pub beta_slow: f32,
    /// Round the correction range to whole dimensions.
    pub truncate: bool,
    /// DeepSeek's `mscale` (None: the plain 0.1 ln(factor) + 1 attention factor).
    pub mscale: Option<f32>,
    /// DeepSeek's `mscale_all_dim`: also scales the attention scores by its mscale squared.
    pub mscale_all_dim: Option<f32>,
    /// The factor on cos and sin when the config gives it (transformers' `attention_factor`),
    /// instead of one from `mscale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_factor: Option<f32>,
}

fn yarn_mscale(factor: f32, mscale: f32) -> f32 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}

impl Yarn {
    /// From a transformers RoPE object (`rope_parameters`, `rope_scaling`, or one of
    /// DeepSeek-V4's per-kind entries): None for default RoPE, an error for a type floe does
    /// not run or a YaRN without its factor.
    pub fn from_hf(r: &Value) -> Result<Option<Self>> {
        let f = |k: &str| r.get(k).and_then(Value::as_f64);
        let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str);
        match kind.unwrap_or("default") {
            "default" => Ok(None),
            "yarn" => Ok(Some(Yarn {
                factor: f("factor").ok_or_else(|| {
                    Error::Invalid("config.json: rope_type \"yarn\" without a factor".into())
                })? as f32,
                original_max_positions: r
                    .get("original_max_position_embeddings")
                    .and_then(Value::as_u64)
                    .unwrap_or(4096) as usize,
                beta_fast: f("beta_fast").unwrap_or(32.0) as f32,
                beta_slow: f("beta_slow").unwrap_or(1.0) as f32,
                truncate: r.get("truncate").and_then(Value::as_bool).unwrap_or(true),
                mscale: f("mscale").map(|x| x as f32),
                mscale_all_dim: f("mscale_all_dim").map(|x| x as f32),
                attention_factor: f("attention_factor").map(|x| x as f32),
            })),
            other => Err(Error::Unsupported(format!(
                "rope_type {other:?} (floe supports default and yarn RoPE)"
            ))),
        }
    }

    /// The factor on cos and sin (so on q.k, squared, where every channel rotates).
    pub fn attention_factor(&self) -> f32 {
        if let Some(f) = self.attention_factor {
            return f;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                yarn_mscale(self.factor, m) / yarn_mscale(self.factor, all)
            }
            _ => yarn_mscale(self.factor, 1.0),
        }
    }

    /// DeepSeek's extra factor on the softmax scale (1 without `mscale_all_dim`).
    pub fn score_factor(&self) -> f32 {
        match self.mscale_all_dim {
            Some(all) if all != 0.0 => yarn_mscale(self.factor, all).powi(2),
            _ => 1.0,
        }
    }
}

/// gpt-oss's clamped SwiGLU: `(clamp(up, ±limit) + 1) * g * sigmoid(alpha * g)` with
/// `g = min(gate, limit)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClampedSwiglu {
    /// The sigmoid's slope.
    pub alpha: f32,
    /// The clamp.
    pub limit: f32,
}

/// Multi-head latent attention's shape (DeepSeek-V2/V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mla {
    /// Rank of the query LoRA (0: a plain q projection, V2-Lite).
    pub q_lora_rank: usize,
    /// Rank of the compressed key/value latent.
    pub kv_lora_rank: usize,
    /// Per-head query/key channels without RoPE.
    pub qk_nope_dim: usize,
    /// Per-head query/key channels with RoPE (the key's are shared by all heads).
    pub qk_rope_dim: usize,
    /// Per-head value channels.
    pub v_head_dim: usize,
}

/// Everything the forward pass needs to know about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Residual width.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base.
    pub rope_theta: f32,
    /// Routed experts per MoE layer.
    pub experts: usize,
    /// Experts per token.
    pub top_k: usize,
    /// Hidden width of one routed expert.
    pub expert_ffn: usize,
    /// Hidden width of the dense MLP layers (0 if none).
    pub dense_ffn: usize,
    /// Hidden width of the shared expert (0 if none).
    pub shared_ffn: usize,
    /// Whether the top-k router weights are renormalised to sum to 1.
    pub norm_topk_prob: bool,
    /// Which layers have a routed MoE block (the others a dense MLP).
    pub moe_layers: Vec<bool>,
    /// q/k/v projections have biases.
    pub qkv_bias: bool,
    /// q/k normalisation.
    pub qk_norm: QkNorm,
    /// Clamp q/k/v to +-this (OLMoE `clip_qkv`), if set.
    pub clip_qkv: Option<f32>,
    /// lm_head shares the embedding matrix.
    pub tie_embeddings: bool,
    /// End-of-sequence token ids.
    pub eos_token_ids: Vec<u32>,
    /// Longest context the model was trained for.
    pub max_positions: usize,
    /// Channels of each head RoPE rotates (partial RoPE), if fewer than the head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_dims: Option<usize>,
    /// The sigmoid group-limited router, if the model routes that way (else softmax top-k).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigmoid_router: Option<SigmoidRouter>,
    /// The Gated DeltaNet layers' shape, if the model has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linear: Option<LinearAttention>,
    /// Per layer: Gated DeltaNet instead of full attention (empty: every layer attends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub linear_layers: Vec<bool>,
    /// Multi-head latent attention in every layer, if the model uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mla: Option<Mla>,
    /// YaRN RoPE scaling, if configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yarn: Option<Yarn>,
    /// The sliding window (positions a query sees, itself included) of the layers that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Per layer: attention within `sliding_window` only (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub window_layers: Vec<bool>,
    /// gpt-oss's clamped SwiGLU experts, if the model has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamped_swiglu: Option<ClampedSwiglu>,
    /// Sinks and biases the layers add ([`LayerExtras`]). A `floe.json` written before this
    /// field existed gets its architecture's ([`ModelConfig::fill_legacy`]).
    #[serde(default, skip_serializing_if = "LayerExtras::is_none")]
    pub extras: LayerExtras,
    /// Gemma 4: the full-attention layers' shape and the soft-cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemma: Option<crate::model::gemma::GemmaLayout>,
    /// DeepSeek sparse attention's indexer (GLM-5), if the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dsa: Option<Dsa>,
    /// DeepSeek-V4's layout (hyper-connections, compressed attention, hash routing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v4: Option<crate::model::deepseek_v4::V4Layout>,
}

/// DeepSeek sparse attention's lightning indexer (GLM-5): per query, `heads` ReLU'd scores
/// against a `head_dim` key per past position, weighted per head and summed, pick the `topk`
/// positions the MLA attention reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsa {
    /// Indexer heads.
    pub heads: usize,
    /// Channels per indexer head (its first `qk_rope_dim` rotated).
    pub head_dim: usize,
    /// Positions each query attends to.
    pub topk: usize,
    /// Per layer: it computes its own selection (else it reuses the previous layer's).
    pub full_layers: Vec<bool>,
}

fn get<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| v.get(*k).filter(|x| !x.is_null()))
}

fn usize_of(v: &Value, keys: &[&str]) -> Result<usize> {
    get(v, keys).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(|| {
        Error::Invalid(format!("config.json: missing or non-integer {}", keys.join(" / ")))
    })
}

/// A token id from a file, saturated (an id past `u32` fails validation, never wraps).
pub(crate) fn id_u32(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

/// GLM-5's indexer keys: `index_n_heads`, `index_head_dim`, `index_topk`, `indexer_types`
/// (`full` or `shared`; absent: every layer full).
fn dsa_of(v: &Value, layers: usize) -> Result<Dsa> {
    let full_layers = match get(v, &["indexer_types"]).and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .map(|t| match t.as_str() {
                Some("full") => Ok(true),
                Some("shared") => Ok(false),
                other => Err(Error::Unsupported(format!(
                    "config.json: indexer type {other:?} (floe runs full and shared)"
                ))),
            })
            .collect::<Result<Vec<bool>>>()?,
        None => vec![true; layers],
    };
    if full_layers.len() != layers || full_layers.first() == Some(&false) {
        return Err(Error::Invalid(format!(
            "config.json: indexer_types has {} entries for {layers} layers, or starts shared \
             (a shared layer reuses an earlier full one's selection)",
            full_layers.len()
        )));
    }
    Ok(Dsa {
        heads: usize_of(v, &["index_n_heads"])?,
        head_dim: usize_of(v, &["index_head_dim"])?,
        topk: usize_of(v, &["index_topk"])?,
        full_layers,
    })
}

impl ModelConfig {
    /// A configuration stored before [`LayerExtras`] were written out says none: it gets its
    /// architecture's (the only way such a file could have been meant).
    pub fn fill_legacy(&mut self) {
        if self.extras.is_none() {
            self.extras = self.arch.layer_extras();
        }
    }

    /// Parses a Hugging Face `config.json` (of a multimodal checkpoint: its `text_config`).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let mut v: Value =
            serde_json::from_str(text).map_err(|e| Error::Invalid(format!("config.json: {e}")))?;
        if let Some(text_config) = v.get("text_config").filter(|t| t.is_object()).cloned() {
            v = text_config;
        }
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Invalid("config.json: no model_type".into()))?;
        let arch = Arch::from_model_type(model_type)?;
        let hidden = usize_of(&v, &["hidden_size"])?;
        let layers = usize_of(&v, &["num_hidden_layers"])?;
        let heads = usize_of(&v, &["num_attention_heads"])?;
        let kv_heads = usize_of(&v, &["num_key_value_heads"]).unwrap_or(heads);
        let head_dim = usize_of(&v, &["head_dim"]).unwrap_or(hidden / heads.max(1));
        let vocab = usize_of(&v, &["vocab_size"])?;
        let experts = usize_of(&v, &["num_experts", "num_local_experts", "n_routed_experts"])?;
        let top_k = usize_of(&v, &["num_experts_per_tok", "top_k_experts"])?;
        let rms_eps = get(&v, &["rms_norm_eps"]).and_then(Value::as_f64).unwrap_or(1e-6) as f32;

        // RoPE: v5 `rope_parameters`, else hub `rope_theta` + `rope_scaling`.
        let rope = get(&v, &["rope_parameters"]).or_else(|| get(&v, &["rope_scaling"]));
        let yarn = rope.map(Yarn::from_hf).transpose()?.flatten();
        let partial = rope
            .and_then(|r| r.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .or_else(|| get(&v, &["partial_rotary_factor"]).and_then(Value::as_f64))
            .unwrap_or(1.0);
        if !(partial > 0.0 && partial <= 1.0) {
            return Err(Error::Invalid(format!(
                "config.json: partial_rotary_factor {partial} must be in (0, 1]"
            )));
        }
        // MiniMax-M2's hub config gives the rotated channels as `rotary_dim` instead.
        let rope_dims = match usize_of(&v, &["rotary_dim"]) {
            Ok(d) if partial == 1.0 && d < head_dim => Some(d),
            _ => (partial < 1.0).then(|| (head_dim as f64 * partial).round() as usize),
        };
        let rope_theta = rope
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| get(&v, &["rope_theta"]).and_then(Value::as_f64))
            .unwrap_or(10000.0) as f32;
        let gemma = match arch {
            Arch::Gemma4 => Some(crate::model::gemma::GemmaLayout::from_hf(&v, head_dim)?),
            _ => None,
        };
        let rope_theta = match gemma {
            Some(_) => crate::model::gemma::GemmaLayout::sliding_rope_theta(&v),
            None => rope_theta,
        };
        let v4 = match arch {
            Arch::DeepseekV4 => Some(crate::model::deepseek_v4::V4Layout::from_hf(&v, layers)?),
            _ => None,
        };
        let (rope_theta, rope_dims) = match &v4 {
            Some((_, main_theta)) => {
                // `qk_rope_head_dim` (hub), else the head times `partial_rotary_factor`
                // (transformers' default: 64 of 512).
                let dims = usize_of(&v, &["qk_rope_head_dim"]).unwrap_or_else(|_| {
                    let f = get(&v, &["partial_rotary_factor"]).and_then(Value::as_f64);
                    (head_dim as f64 * f.unwrap_or(0.125)).round() as usize
                });
                (*main_theta, Some(dims))
            }
            None => (rope_theta, rope_dims),
        };
        let v4 = v4.map(|(layout, _)| layout);

        let dtype = get(&v, &["dtype", "torch_dtype"]).and_then(Value::as_str).unwrap_or("float32");
        if !matches!(dtype, "float32" | "bfloat16" | "float16") {
            return Err(Error::Unsupported(format!("checkpoint dtype {dtype:?}")));
        }
        if arch != Arch::GptOss
            && get(&v, &["use_sliding_window"]).and_then(Value::as_bool) == Some(true)
        {
            return Err(Error::Unsupported(
                "use_sliding_window = true (floe runs gpt-oss's sliding windows only)".into(),
            ));
        }
        let (sliding_window, window_layers) = match arch {
            Arch::GptOss | Arch::Gemma4 => {
                let window = usize_of(&v, &["sliding_window"])?;
                let types: Vec<bool> = match get(&v, &["layer_types"]).and_then(Value::as_array) {
                    Some(a) => a.iter().map(|t| t.as_str() == Some("sliding_attention")).collect(),
                    None => (0..layers).map(|l| l % 2 == 0).collect(),
                };
                (Some(window), types)
            }
            _ => (None, Vec::new()),
        };
        let clamped_swiglu = (arch == Arch::GptOss).then(|| ClampedSwiglu {
            alpha: get(&v, &["swiglu_alpha"]).and_then(Value::as_f64).unwrap_or(1.702) as f32,
            limit: get(&v, &["swiglu_limit"]).and_then(Value::as_f64).unwrap_or(7.0) as f32,
        });

        let (expert_ffn, dense_ffn) = match arch {
            Arch::Mixtral | Arch::Olmoe | Arch::GptOss | Arch::MinimaxM2 => {
                (usize_of(&v, &["intermediate_size"])?, 0)
            }
            Arch::Qwen3Moe
            | Arch::Qwen2Moe
            | Arch::Qwen35Moe
            | Arch::Qwen3Next
            | Arch::Gemma4
            | Arch::GlmMoeDsa
            | Arch::DeepseekV4
            | Arch::Glm4Moe
            | Arch::DeepseekV2
            | Arch::DeepseekV3 => (
                usize_of(&v, &["moe_intermediate_size"])?,
                usize_of(&v, &["intermediate_size"]).unwrap_or(0),
            ),
        };
        let shared_ffn = match arch {
            Arch::Qwen2Moe | Arch::Qwen35Moe | Arch::Qwen3Next => {
                usize_of(&v, &["shared_expert_intermediate_size"]).unwrap_or(0)
            }
            Arch::Glm4Moe
            | Arch::DeepseekV2
            | Arch::DeepseekV3
            | Arch::GlmMoeDsa
            | Arch::DeepseekV4 => expert_ffn * usize_of(&v, &["n_shared_experts"]).unwrap_or(0),
            _ => 0,
        };
        let norm_topk_prob = match arch {
            Arch::Mixtral | Arch::MinimaxM2 | Arch::Gemma4 => true,
            Arch::Qwen35Moe | Arch::Qwen3Next => {
                get(&v, &["norm_topk_prob"]).and_then(Value::as_bool).unwrap_or(true)
            }
            Arch::DeepseekV4 => {
                get(&v, &["norm_topk_prob"]).and_then(Value::as_bool).unwrap_or(true)
            }
            _ => get(&v, &["norm_topk_prob"]).and_then(Value::as_bool).unwrap_or(false),
        };
        let first_dense = usize_of(&v, &["first_k_dense_replace"]).unwrap_or(0);
        let sigmoid_router = match arch {
            Arch::Glm4Moe
            | Arch::DeepseekV3
            | Arch::MinimaxM2
            | Arch::GlmMoeDsa
            | Arch::DeepseekV4 => Some(SigmoidRouter {
                groups: usize_of(&v, &["n_group"]).unwrap_or(1),
                top_groups: usize_of(&v, &["topk_group"]).unwrap_or(1),
                routed_scale: get(&v, &["routed_scaling_factor"])
                    .and_then(Value::as_f64)
                    .unwrap_or(1.0) as f32,
            }),
            _ => None,
        };
        if arch == Arch::MinimaxM2 {
            let scoring = get(&v, &["scoring_func"]).and_then(Value::as_str).unwrap_or("sigmoid");
            let biased = get(&v, &["use_routing_bias"]).and_then(Value::as_bool).unwrap_or(true);
            let qk = get(&v, &["qk_norm_type"]).and_then(Value::as_str).unwrap_or("per_layer");
            if scoring != "sigmoid" || !biased || qk != "per_layer" {
                return Err(Error::Unsupported(format!(
                    "config.json: MiniMax-M2 with scoring_func {scoring:?}, use_routing_bias \
                     {biased}, qk_norm_type {qk:?} (floe runs sigmoid routing with its bias and \
                     per_layer q/k norms)"
                )));
            }
        }
        if arch == Arch::DeepseekV2 {
            let method = get(&v, &["topk_method"]).and_then(Value::as_str).unwrap_or("greedy");
            if method != "greedy" {
                return Err(Error::Unsupported(format!(
                    "config.json: topk_method {method:?} (floe runs DeepSeek-V2's greedy top-k)"
                )));
            }
            let scale = get(&v, &["routed_scaling_factor"]).and_then(Value::as_f64).unwrap_or(1.0);
            if scale != 1.0 && !norm_topk_prob {
                return Err(Error::Unsupported(format!(
                    "config.json: routed_scaling_factor {scale} on a softmax router"
                )));
            }
        }
        let mla = match arch {
            Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::GlmMoeDsa => Some(Mla {
                q_lora_rank: usize_of(&v, &["q_lora_rank"]).unwrap_or(0),
                kv_lora_rank: usize_of(&v, &["kv_lora_rank"])?,
                qk_nope_dim: usize_of(&v, &["qk_nope_head_dim"])?,
                qk_rope_dim: usize_of(&v, &["qk_rope_head_dim"])?,
                v_head_dim: usize_of(&v, &["v_head_dim"])?,
            }),
            _ => None,
        };
        let (linear, linear_layers) = match arch {
            Arch::Qwen35Moe | Arch::Qwen3Next => {
                let types: Vec<bool> = match get(&v, &["layer_types"]).and_then(Value::as_array) {
                    Some(a) => a
                        .iter()
                        .map(|t| match t.as_str() {
                            Some("linear_attention") => Ok(true),
                            Some("full_attention") => Ok(false),
                            other => Err(Error::Unsupported(format!(
                                "config.json: layer type {other:?} (floe runs linear_attention \
                                 and full_attention)"
                            ))),
                        })
                        .collect::<Result<_>>()?,
                    None => {
                        let every = usize_of(&v, &["full_attention_interval"]).unwrap_or(4).max(1);
                        (0..layers).map(|i| (i + 1) % every != 0).collect()
                    }
                };
                let lin = LinearAttention {
                    key_heads: usize_of(&v, &["linear_num_key_heads"])?,
                    value_heads: usize_of(&v, &["linear_num_value_heads"])?,
                    key_dim: usize_of(&v, &["linear_key_head_dim"])?,
                    value_dim: usize_of(&v, &["linear_value_head_dim"])?,
                    conv_kernel: usize_of(&v, &["linear_conv_kernel_dim"]).unwrap_or(4),
                    grouped: arch == Arch::Qwen3Next,
                };
                (Some(lin), types)
            }
            _ => (None, Vec::new()),
        };
        let step = usize_of(&v, &["decoder_sparse_step"]).unwrap_or(1).max(1);
        let mlp_only: Vec<usize> = get(&v, &["mlp_only_layers"])
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_u64).map(|x| x as usize).collect())
            .unwrap_or_default();
        let moe_layers = (0..layers)
            .map(|i| match arch {
                Arch::Qwen3Moe | Arch::Qwen2Moe | Arch::Qwen35Moe | Arch::Qwen3Next => {
                    !mlp_only.contains(&i) && experts > 0 && (i + 1) % step == 0
                }
                Arch::GlmMoeDsa => match get(&v, &["mlp_layer_types"]).and_then(Value::as_array) {
                    Some(a) => a.get(i).and_then(Value::as_str) == Some("sparse"),
                    None => i >= first_dense,
                },
                Arch::Glm4Moe | Arch::DeepseekV2 | Arch::DeepseekV3 => i >= first_dense,
                _ => true,
            })
            .collect();
        let qkv_bias = match arch {
            Arch::GptOss => true,
            Arch::Qwen2Moe => get(&v, &["qkv_bias"]).and_then(Value::as_bool).unwrap_or(true),
            _ => get(&v, &["attention_bias"]).and_then(Value::as_bool).unwrap_or(false),
        };
        let qk_norm = match arch {
            Arch::Qwen3Moe | Arch::Qwen35Moe | Arch::Qwen3Next | Arch::Gemma4 => QkNorm::PerHead,
            Arch::Olmoe => QkNorm::Full,
            Arch::MinimaxM2 => {
                if get(&v, &["use_qk_norm"]).and_then(Value::as_bool).unwrap_or(true) {
                    QkNorm::Full
                } else {
                    QkNorm::None
                }
            }
            Arch::Glm4Moe if get(&v, &["use_qk_norm"]).and_then(Value::as_bool) == Some(true) => {
                QkNorm::PerHead
            }
            _ => QkNorm::None,
        };
        let clip_qkv = get(&v, &["clip_qkv"]).and_then(Value::as_f64).map(|x| x as f32);
        let tie_embeddings =
            get(&v, &["tie_word_embeddings"]).and_then(Value::as_bool).unwrap_or(false);
        let eos_token_ids = match get(&v, &["eos_token_id"]) {
            // An id past u32 becomes u32::MAX, which validation rejects as outside the vocabulary.
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(id_u32).collect(),
            Some(x) => x.as_u64().map(|x| vec![id_u32(x)]).unwrap_or_default(),
            None => Vec::new(),
        };
        let max_positions = usize_of(&v, &["max_position_embeddings"]).unwrap_or(4096);
        let cfg = Self {
            arch,
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim,
            vocab,
            rms_eps,
            rope_theta,
            experts,
            top_k,
            expert_ffn,
            dense_ffn,
            shared_ffn,
            norm_topk_prob,
            moe_layers,
            qkv_bias,
            qk_norm,
            clip_qkv,
            tie_embeddings,
            eos_token_ids,
            max_positions,
            rope_dims,
            sigmoid_router,
            linear,
            linear_layers,
            mla,
            yarn,
            sliding_window,
            window_layers,
            clamped_swiglu,
            extras: arch.layer_extras(),
            gemma,
            dsa: match arch {
                Arch::GlmMoeDsa => Some(dsa_of(&v, layers)?),
                _ => None,
            },
            v4,
        };
        // MLA has no per-head key/value width of its own: keep the attention fields consistent
        // (every head its own "kv head", head_dim the value width) for the generic checks.
        let cfg = match mla {
            Some(m) => Self { kv_heads: heads, head_dim: m.v_head_dim, rope_dims: None, ..cfg },
            None => cfg,
        };
        cfg.validate_as("config.json")?;
        Ok(cfg)
    }

    /// Checks every field against its limit ([`check_config`](crate::model::validate::check_config)).
    pub fn validate(&self) -> Result<()> {
        self.validate_as("config")
    }

    /// [`validate`](Self::validate), with `origin` (the file or metadata the values came
    /// from) named in the error.
    pub fn validate_as(&self, origin: &str) -> Result<()> {
        crate::model::validate::check_config(self)
            .map_err(|error| Error::Field { origin: origin.to_string(), error })
    }

    /// Width of the q projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Channels per head of layer `l` (Gemma 4's full-attention layers have their own).
    pub fn layer_head_dim(&self, l: usize) -> usize {
        match self.gemma {
            Some(g) if self.window(l).is_none() => g.global_head_dim,
            _ => self.head_dim,
        }
    }

    /// Key/value heads of layer `l`.
    pub fn layer_kv_heads(&self, l: usize) -> usize {
        match self.gemma {
            Some(g) if self.window(l).is_none() => g.global_kv_heads,
            _ => self.kv_heads,
        }
    }

    /// Whether layer `l` computes no values of its own (its keys before their norm serve).
    pub fn layer_k_eq_v(&self, l: usize) -> bool {
        self.gemma.is_some_and(|g| g.k_eq_v) && self.window(l).is_none()
    }

    /// Width of the k and v projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The sliding window of layer `l`, if it has one.
    pub fn window(&self, l: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.window_layers.get(l).copied().unwrap_or(false))
    }

    /// Whether layer `l` is a Gated DeltaNet layer.
    pub fn is_linear(&self, l: usize) -> bool {
        self.linear_layers.get(l).copied().unwrap_or(false)
    }

    /// Channels of each head RoPE rotates.
    pub fn rotary_dims(&self) -> usize {
        self.rope_dims.unwrap_or(self.head_dim)
    }

    /// Rows of the q projection: the queries, and with an output gate as many gate values.
    pub fn q_rows(&self) -> usize {
        if self.arch.attention_output_gate() {
            2 * self.q_dim()
        } else {
            self.q_dim()
        }
    }

    /// Number of MoE layers.
    pub fn moe_layer_count(&self) -> usize {
        self.moe_layers.iter().filter(|m| **m).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gpt-oss's sinks and biases are in its configuration, and a stored configuration from
    /// before the field existed gets them back when read.
    #[test]
    fn layer_extras_are_data_and_old_files_get_their_architectures() {
        let cfg = crate::formats::synth::SynthShape::preset("tiny-gpt-oss").unwrap().config();
        assert_eq!(cfg.extras, Arch::GptOss.layer_extras());
        assert!(cfg.extras.attn_sinks && cfg.extras.expert_biases);
        let mut json = serde_json::to_value(&cfg).unwrap();
        assert!(json.as_object_mut().unwrap().remove("extras").is_some(), "written out");
        let mut old: ModelConfig = serde_json::from_value(json).unwrap();
        assert!(old.extras.is_none());
        old.fill_legacy();
        assert_eq!(old.extras, cfg.extras);
        let qwen = crate::formats::synth::SynthShape::preset("tiny").unwrap().config();
        assert!(qwen.extras.is_none());
        assert!(!serde_json::to_string(&qwen).unwrap().contains("extras"), "none: not written");
    }

    #[test]
    fn both_spellings_and_errors() {
        let v5 = r#"{"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":32,"vocab_size":100,"num_experts":8,"num_experts_per_tok":2,
            "moe_intermediate_size":16,"intermediate_size":32,"rope_parameters":{"rope_theta":5000.0,"rope_type":"default"},
            "dtype":"bfloat16","mlp_only_layers":[1],"norm_topk_prob":true,"eos_token_id":[1,2]}"#;
        let c = ModelConfig::from_hf_json(v5).unwrap();
        assert_eq!(
            (c.rope_theta, c.moe_layers.clone(), c.eos_token_ids.clone()),
            (5000.0, vec![true, false], vec![1, 2])
        );
        let hub = r#"{"model_type":"mixtral","hidden_size":64,"num_hidden_layers":1,"num_attention_heads":4,
            "vocab_size":100,"num_local_experts":8,"num_experts_per_tok":2,"intermediate_size":96,
            "rope_theta":1e6,"rope_scaling":null,"torch_dtype":"float32"}"#;
        let c = ModelConfig::from_hf_json(hub).unwrap();
        assert_eq!((c.head_dim, c.kv_heads, c.rope_theta, c.norm_topk_prob), (16, 4, 1e6, true));
        let e =
            ModelConfig::from_hf_json(&hub.replace("mixtral", "llama4")).unwrap_err().to_string();
        assert!(e.contains("llama4"), "{e}");
        let e = ModelConfig::from_hf_json(
            &hub.replace("\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"yarn\"}"),
        );
        assert!(e.unwrap_err().to_string().contains("yarn"), "yarn needs its factor");
        let e = ModelConfig::from_hf_json(
            &hub.replace("\"rope_scaling\":null", "\"rope_scaling\":{\"type\":\"longrope\"}"),
        );
        assert!(e.unwrap_err().to_string().contains("longrope"));
        let yarn = ModelConfig::from_hf_json(&hub.replace(
            "\"rope_scaling\":null",
            "\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4.0}",
        ))
        .unwrap();
        assert_eq!(yarn.yarn.map(|y| y.factor), Some(4.0));
    }

    /// The two families' own keys: Qwen3-Next's DeltaNet is grouped; MiniMax-M2's hub
    /// `rotary_dim` sets the rotated channels, and routing floe does not run is refused by name.
    #[test]
    fn qwen3_next_and_minimax_m2_keys() {
        let read = |f: &str| floe_cache::fixtures::shared_fixture(&format!("golden/{f}"));
        let (Some(next), Some(mm)) = (read("qwen3_next"), read("minimax_m2")) else { return };
        let dir = |p: std::path::PathBuf| std::fs::read_to_string(p.join("config.json")).unwrap();
        let next = ModelConfig::from_hf_json(&dir(next)).unwrap();
        assert_eq!(next.arch, Arch::Qwen3Next);
        assert!(next.linear.unwrap().grouped);
        assert_eq!(next.linear_layers, vec![true, true, false, true, true, false]);
        let mm = dir(mm);
        let c = ModelConfig::from_hf_json(&mm).unwrap();
        assert_eq!((c.qk_norm, c.rope_dims, c.expert_ffn), (QkNorm::Full, Some(16), 32));
        let hub = mm.replace("\"partial_rotary_factor\": 0.5,", "");
        assert_eq!(ModelConfig::from_hf_json(&hub).unwrap().rope_dims, Some(16), "rotary_dim");
        for (from, to) in [
            ("\"scoring_func\": \"sigmoid\"", "\"scoring_func\": \"softmax\""),
            ("\"use_routing_bias\": true", "\"use_routing_bias\": false"),
            ("\"qk_norm_type\": \"per_layer\"", "\"qk_norm_type\": \"per_head\""),
        ] {
            assert!(mm.contains(from), "{from}");
            let e = ModelConfig::from_hf_json(&mm.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains("MiniMax-M2"), "{e}");
        }
    }

    #[test]
    fn config_json_values_are_validated_with_field_value_and_limit() {
        let base = r#"{"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":32,"vocab_size":100,"num_experts":8,"num_experts_per_tok":2,
            "moe_intermediate_size":16,"intermediate_size":32,"rope_theta":5000.0,"rms_norm_eps":1e-6,
            "max_position_embeddings":128,"eos_token_id":7}"#;
        ModelConfig::from_hf_json(base).unwrap();
        for (from, to, field) in [
            (r#""head_dim":32"#, r#""head_dim":0"#, "head_dim"),
            (r#""rope_theta":5000.0"#, r#""rope_theta":-5000.0"#, "rope_theta"),
            (r#""rms_norm_eps":1e-6"#, r#""rms_norm_eps":-1e-6"#, "rms_eps"),
            (r#""num_experts":8"#, r#""num_experts":70000"#, "experts"),
            (r#""num_hidden_layers":2"#, r#""num_hidden_layers":70000"#, "layers"),
            (r#""max_position_embeddings":128"#, r#""max_position_embeddings":0"#, "max_positions"),
            (r#""eos_token_id":7"#, r#""eos_token_id":4294967297"#, "eos_token_ids"),
        ] {
            let e = ModelConfig::from_hf_json(&base.replace(from, to)).unwrap_err();
            match &e {
                Error::Field { origin, error } => {
                    assert_eq!(origin, "config.json");
                    assert_eq!(error.field, field, "{e}");
                }
                other => panic!("{to}: {other}"),
            }
        }
    }
}
