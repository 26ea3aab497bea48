//! The architectures floe reads from GGUF, in llama.cpp's terms ([`gguf_arch`] lists them:
//! every family floe runs, `llama` with expert tensors being Mixtral). Hyperparameters come from
//! the `{arch}.*` keys, tensor names are llama.cpp's. llama.cpp's converter permutes the rows of a
//! `llama` model's Q and K weights so that its "normal" (interleaved-pair) RoPE applies; floe
//! runs the rotate-half (NeoX) RoPE of the Hugging Face checkpoints, so those rows are put back.

use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::model::arch::Dense;
use crate::model::config::{
    Arch, ClampedSwiglu, LinearAttention, Mla, ModelConfig, QkNorm, SigmoidRouter, Yarn,
};

/// llama.cpp's architecture name for floe's.
pub fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Qwen3Moe => "qwen3moe",
        Arch::Qwen2Moe => "qwen2moe",
        Arch::Olmoe => "olmoe",
        Arch::Mixtral => "llama",
        Arch::Qwen35Moe => "qwen35moe",
        Arch::Glm4Moe => "glm4moe",
        Arch::DeepseekV2 | Arch::DeepseekV3 => "deepseek2",
        Arch::GptOss => "gpt-oss",
        Arch::Qwen3Next => "qwen3next",
        Arch::MinimaxM2 => "minimax-m2",
        Arch::Gemma4 => "gemma4",
        Arch::GlmMoeDsa => "glm-dsa",
        Arch::DeepseekV4 => "deepseek4",
    }
}

/// gpt-oss's SwiGLU clamp (alpha, limit): llama.cpp hard-codes it, GGUF carries no key.
pub const GPT_OSS_SWIGLU: (f32, f32) = (1.702, 7.0);

/// llama.cpp's `expert_gating_func` value of a sigmoid router.
pub const GATING_SIGMOID: u64 = 2;

fn meta_u(g: &GgufFile, key: &str) -> Result<usize> {
    g.get(key).and_then(|v| v.as_u64()).map(|x| x as usize).ok_or_else(|| {
        Error::Invalid(format!("{}: missing metadata key {key}", g.path().display()))
    })
}

fn meta_f(g: &GgufFile, key: &str, default: f64) -> f32 {
    g.get(key).and_then(|v| v.as_f64()).unwrap_or(default) as f32
}

/// The model configuration a GGUF file describes.
pub fn config_of(g: &GgufFile) -> Result<ModelConfig> {
    let name = g.architecture().unwrap_or("(none)");
    if name == "gemma4" {
        return super::gemma::config_of(g);
    }
    if name == "deepseek4" {
        return super::deepseek_v4::config_of(g);
    }
    let arch = match name {
        "qwen3moe" => Arch::Qwen3Moe,
        "qwen2moe" => Arch::Qwen2Moe,
        "olmoe" => Arch::Olmoe,
        "qwen35moe" => Arch::Qwen35Moe,
        "glm4moe" => Arch::Glm4Moe,
        "gpt-oss" => Arch::GptOss,
        "qwen3next" => Arch::Qwen3Next,
        "minimax-m2" => Arch::MinimaxM2,
        "glm-dsa" => Arch::GlmMoeDsa,
        // V3's sigmoid router has a selection bias; V2's softmax one has none.
        "deepseek2" => {
            let biased = (0..64).any(|l| g.tensor(&format!("blk.{l}.exp_probs_b.bias")).is_some());
            if biased {
                Arch::DeepseekV3
            } else {
                Arch::DeepseekV2
            }
        }
        "llama" | "mixtral" if g.get("llama.expert_count").and_then(|v| v.as_u64()).unwrap_or(0) > 0 => {
            Arch::Mixtral
        }
        "llama" => {
            return Err(Error::Unsupported(format!(
                "{}: a dense llama model (no llama.expert_count); floe runs mixture-of-experts models",
                g.path().display()
            )))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{}: GGUF architecture {other:?} (floe reads qwen3moe, qwen2moe, olmoe, qwen35moe, qwen3next, glm4moe, deepseek2, gpt-oss, minimax-m2, gemma4, glm-dsa, deepseek4 and llama with experts)",
                g.path().display()
            )))
        }
    };
    let p = |k: &str| format!("{name}.{k}");
    let hidden = meta_u(g, &p("embedding_length"))?;
    // Multi-token-prediction layers follow the decoder layers in block_count; floe does not
    // run them.
    let nextn = meta_u(g, &p("nextn_predict_layers")).unwrap_or(0);
    let layers = meta_u(g, &p("block_count"))?.saturating_sub(nextn);
    // Checked before the per-layer work below (found by fuzzing: a header claiming 134 million
    // layers kept the tensor lookups busy for minutes before validation could refuse it).
    if layers > crate::model::validate::MAX_KEYED {
        return Err(Error::Field {
            origin: format!("GGUF metadata ({name})"),
            error: crate::model::validate::FieldError {
                field: "layers".into(),
                value: layers.to_string(),
                limit: format!("must be in 1..={}", crate::model::validate::MAX_KEYED),
            },
        });
    }
    let heads = meta_u(g, &p("attention.head_count"))?;
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
    let moe_layers =
        (0..layers).map(|l| g.tensor(&format!("blk.{l}.ffn_gate_inp.weight")).is_some()).collect();
    // llama (Mixtral) and OLMoE give the expert width as feed_forward_length.
    let ffn = meta_u(g, &p("feed_forward_length")).unwrap_or(0);
    let expert_ffn = match arch {
        Arch::Mixtral | Arch::Olmoe | Arch::GptOss | Arch::MinimaxM2 => {
            meta_u(g, &p("expert_feed_forward_length")).unwrap_or(ffn)
        }
        _ => meta_u(g, &p("expert_feed_forward_length"))?,
    };
    let norm_default = matches!(
        arch,
        Arch::Qwen3Moe | Arch::Mixtral | Arch::Qwen35Moe | Arch::Qwen3Next | Arch::MinimaxM2
    );
    let head_dim = meta_u(g, &p("attention.key_length")).unwrap_or(hidden / heads.max(1));
    let sigmoid_router = match arch {
        Arch::Glm4Moe | Arch::DeepseekV3 | Arch::MinimaxM2 | Arch::GlmMoeDsa => {
            let gating = meta_u(g, &p("expert_gating_func")).unwrap_or(GATING_SIGMOID as usize);
            if gating as u64 != GATING_SIGMOID {
                return Err(Error::Unsupported(format!(
                    "{}: {name}.expert_gating_func {gating} (floe runs glm4moe's sigmoid router, {GATING_SIGMOID})",
                    g.path().display()
                )));
            }
            Some(SigmoidRouter {
                groups: meta_u(g, &p("expert_group_count")).unwrap_or(1),
                top_groups: meta_u(g, &p("expert_group_used_count")).unwrap_or(1),
                routed_scale: meta_f(g, &p("expert_weights_scale"), 1.0),
            })
        }
        _ => None,
    };
    let (linear, linear_layers) = match arch {
        Arch::Qwen35Moe | Arch::Qwen3Next => {
            let value_heads = meta_u(g, &p("ssm.time_step_rank"))?;
            let lin = LinearAttention {
                key_heads: meta_u(g, &p("ssm.group_count"))?,
                value_heads,
                key_dim: meta_u(g, &p("ssm.state_size"))?,
                value_dim: meta_u(g, &p("ssm.inner_size"))? / value_heads.max(1),
                conv_kernel: meta_u(g, &p("ssm.conv_kernel"))?,
                grouped: arch == Arch::Qwen3Next,
            };
            let types: Vec<bool> = match g.get(&p("attention.recurrent_layers")) {
                Some(GgufValue::Array(a)) => {
                    a.iter().take(layers).map(|v| matches!(v, GgufValue::Bool(true))).collect()
                }
                _ => {
                    let every = meta_u(g, &p("full_attention_interval")).unwrap_or(4).max(1);
                    (0..layers).map(|i| (i + 1) % every != 0).collect()
                }
            };
            (Some(lin), types)
        }
        _ => (None, Vec::new()),
    };
    let mla = match arch {
        Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::GlmMoeDsa => {
            let rope = meta_u(g, &p("rope.dimension_count"))?;
            let qk = meta_u(g, &p("attention.key_length_mla"))?;
            Some(Mla {
                q_lora_rank: meta_u(g, &p("attention.q_lora_rank")).unwrap_or(0),
                kv_lora_rank: meta_u(g, &p("attention.kv_lora_rank"))?,
                qk_nope_dim: qk.checked_sub(rope).ok_or_else(|| {
                    Error::Invalid(format!(
                        "{}: {name}.attention.key_length_mla {qk} is below rope.dimension_count {rope}",
                        g.path().display()
                    ))
                })?,
                qk_rope_dim: rope,
                v_head_dim: meta_u(g, &p("attention.value_length_mla"))?,
            })
        }
        _ => None,
    };
    // MLA keeps every head's width in its own fields (see ModelConfig::from_hf_json).
    let (kv_heads, head_dim) = match mla {
        Some(m) => (heads, m.v_head_dim),
        None => (meta_u(g, &p("attention.head_count_kv")).unwrap_or(heads), head_dim),
    };
    let mscale_all_dim = g
        .get(&p("rope.scaling.yarn_mscale_all_dim"))
        .and_then(|v| v.as_f64())
        .or_else(|| {
            g.get(&p("rope.scaling.yarn_log_multiplier")).and_then(|v| v.as_f64()).map(|x| x / 0.1)
        })
        .map(|x| x as f32);
    let yarn = match g.get(&p("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some("yarn") => Some(Yarn {
            factor: meta_f(g, &p("rope.scaling.factor"), 1.0),
            original_max_positions: meta_u(g, &p("rope.scaling.original_context_length"))?,
            beta_fast: meta_f(g, &p("rope.scaling.yarn_beta_fast"), 32.0),
            beta_slow: meta_f(g, &p("rope.scaling.yarn_beta_slow"), 1.0),
            // transformers' gpt-oss configuration does not round the correction range.
            truncate: arch != Arch::GptOss,
            // llama.cpp keeps DeepSeek's mscale_all_dim as 0.1 x it (its mscale is the same
            // in every DeepSeek config); floe's own files also keep the value itself.
            mscale: mscale_all_dim,
            mscale_all_dim,
            attention_factor: None,
        }),
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{}: RoPE scaling {other:?} (floe supports plain RoPE and yarn)",
                g.path().display()
            )))
        }
    };
    // llama.cpp's gpt-oss: every even layer attends within the window.
    let (sliding_window, window_layers) = match arch {
        Arch::GptOss => (
            Some(meta_u(g, &p("attention.sliding_window"))?),
            (0..layers).map(|l| l % 2 == 0).collect(),
        ),
        _ => (None, Vec::new()),
    };
    let rope_dims = match mla {
        Some(_) => None,
        None => meta_u(g, &p("rope.dimension_count")).ok().filter(|&d| d < head_dim),
    };
    let norm_topk_prob = match g.get(&p("expert_weights_norm")) {
        Some(GgufValue::Bool(b)) => *b,
        _ => norm_default,
    };
    let cfg = ModelConfig {
        arch,
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        vocab: *embd.dims.get(1).unwrap_or(&0) as usize,
        rms_eps: meta_f(g, &p("attention.layer_norm_rms_epsilon"), 1e-6),
        rope_theta: meta_f(g, &p("rope.freq_base"), 10000.0),
        experts: meta_u(g, &p("expert_count"))?,
        top_k: meta_u(g, &p("expert_used_count"))?,
        expert_ffn,
        dense_ffn: if matches!(arch, Arch::Mixtral | Arch::Olmoe | Arch::GptOss | Arch::MinimaxM2) {
            0
        } else {
            ffn
        },
        shared_ffn: match arch {
            Arch::Qwen2Moe | Arch::Qwen35Moe | Arch::Qwen3Next => {
                meta_u(g, &p("expert_shared_feed_forward_length")).unwrap_or(0)
            }
            Arch::Glm4Moe | Arch::DeepseekV2 | Arch::DeepseekV3 | Arch::GlmMoeDsa => {
                expert_ffn * meta_u(g, &p("expert_shared_count")).unwrap_or(0)
            }
            _ => 0,
        },
        norm_topk_prob,
        moe_layers,
        qkv_bias: (0..layers).any(|l| g.tensor(&format!("blk.{l}.attn_q.bias")).is_some()),
        qk_norm: match arch {
            Arch::Qwen3Moe | Arch::Qwen35Moe | Arch::Qwen3Next => QkNorm::PerHead,
            Arch::Olmoe => QkNorm::Full,
            Arch::MinimaxM2
                if (0..layers)
                    .any(|l| g.tensor(&format!("blk.{l}.attn_q_norm.weight")).is_some()) =>
            {
                QkNorm::Full
            }
            Arch::Glm4Moe
                if (0..layers)
                    .any(|l| g.tensor(&format!("blk.{l}.attn_q_norm.weight")).is_some()) =>
            {
                QkNorm::PerHead
            }
            _ => QkNorm::None,
        },
        clip_qkv: g.get(&p("attention.clamp_kqv")).and_then(|v| v.as_f64()).map(|x| x as f32),
        tie_embeddings: g.tensor("output.weight").is_none(),
        eos_token_ids: g
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|x| vec![crate::model::config::id_u32(x)])
            .unwrap_or_default(),
        max_positions: meta_u(g, &p("context_length")).unwrap_or(4096),
        rope_dims,
        sigmoid_router,
        linear,
        linear_layers,
        mla,
        yarn,
        sliding_window,
        window_layers,
        clamped_swiglu: (arch == Arch::GptOss)
            .then_some(ClampedSwiglu { alpha: GPT_OSS_SWIGLU.0, limit: GPT_OSS_SWIGLU.1 }),
        extras: arch.layer_extras(),
        gemma: None,
        dsa: match arch {
            Arch::GlmMoeDsa => Some(crate::model::config::Dsa {
                heads: meta_u(g, &p("attention.indexer.head_count"))?,
                head_dim: meta_u(g, &p("attention.indexer.key_length"))?,
                topk: meta_u(g, &p("attention.indexer.top_k"))?,
                full_layers: match g.get(&p("attention.indexer.types")) {
                    Some(GgufValue::Array(a)) => {
                        a.iter().take(layers).map(|v| matches!(v, GgufValue::Bool(true))).collect()
                    }
                    _ => vec![true; layers],
                },
            }),
            _ => None,
        },
        v4: None,
    };
    cfg.validate_as(&format!("GGUF metadata ({name})"))?;
    Ok(cfg)
}

/// llama.cpp's name of a dense tensor of a model of `cfg`.
pub fn gguf_name(role: Dense, cfg: &ModelConfig) -> String {
    use Dense::*;
    // A MoE layer's shared expert is `*_shexp`; a dense-MLP layer's MLP is plain `ffn_*`.
    let sh = |l: usize| {
        // Gemma 4's dense MLP sits beside its MoE under the plain names.
        if cfg.moe_layers.get(l).copied().unwrap_or(false) && cfg.gemma.is_none() {
            "_shexp"
        } else {
            ""
        }
    };
    match role {
        Embed => "token_embd.weight".into(),
        LmHead => "output.weight".into(),
        FinalNorm => "output_norm.weight".into(),
        AttnNorm(l) => format!("blk.{l}.attn_norm.weight"),
        Q(l) => format!("blk.{l}.attn_q.weight"),
        K(l) => format!("blk.{l}.attn_k.weight"),
        V(l) => format!("blk.{l}.attn_v.weight"),
        O(l) => format!("blk.{l}.attn_output.weight"),
        QBias(l) => format!("blk.{l}.attn_q.bias"),
        KBias(l) => format!("blk.{l}.attn_k.bias"),
        VBias(l) => format!("blk.{l}.attn_v.bias"),
        QNorm(l) => format!("blk.{l}.attn_q_norm.weight"),
        KNorm(l) => format!("blk.{l}.attn_k_norm.weight"),
        // llama.cpp's qwen35moe, qwen3next, glm4moe and gpt-oss call the norm before the MoE block
        // ATTN_POST_NORM.
        FfnNorm(l)
            if matches!(
                cfg.arch,
                Arch::Qwen35Moe | Arch::Qwen3Next | Arch::Glm4Moe | Arch::GptOss
            ) =>
        {
            format!("blk.{l}.post_attention_norm.weight")
        }
        FfnNorm(l) => format!("blk.{l}.ffn_norm.weight"),
        Router(l) => format!("blk.{l}.ffn_gate_inp.weight"),
        SharedGate(l) => format!("blk.{l}.ffn_gate{}.weight", sh(l)),
        SharedUp(l) => format!("blk.{l}.ffn_up{}.weight", sh(l)),
        SharedDown(l) => format!("blk.{l}.ffn_down{}.weight", sh(l)),
        SharedExpertGate(l) => format!("blk.{l}.ffn_gate_inp_shexp.weight"),
        RouterBias(l) => format!("blk.{l}.exp_probs_b.bias"),
        AttnSinks(l) => format!("blk.{l}.attn_sinks.weight"),
        LinQkv(l) => format!("blk.{l}.attn_qkv.weight"),
        LinGate(l) => format!("blk.{l}.attn_gate.weight"),
        LinBeta(l) => format!("blk.{l}.ssm_beta.weight"),
        LinAlpha(l) => format!("blk.{l}.ssm_alpha.weight"),
        LinBetaAlpha(l) => format!("blk.{l}.ssm_ba.weight"),
        LinConv(l) => format!("blk.{l}.ssm_conv1d.weight"),
        LinA(l) => format!("blk.{l}.ssm_a"),
        LinDtBias(l) => format!("blk.{l}.ssm_dt.bias"),
        LinNorm(l) => format!("blk.{l}.ssm_norm.weight"),
        LinOut(l) => format!("blk.{l}.ssm_out.weight"),
        MlaQA(l) => format!("blk.{l}.attn_q_a.weight"),
        MlaQANorm(l) => format!("blk.{l}.attn_q_a_norm.weight"),
        MlaQB(l) => format!("blk.{l}.attn_q_b.weight"),
        MlaKVA(l) => format!("blk.{l}.attn_kv_a_mqa.weight"),
        MlaKVANorm(l) => format!("blk.{l}.attn_kv_a_norm.weight"),
        MlaKB(l) => format!("blk.{l}.attn_k_b.weight"),
        MlaVB(l) => format!("blk.{l}.attn_v_b.weight"),
        OBias(l) => format!("blk.{l}.attn_output.bias"),
        RouterLogitBias(l) => format!("blk.{l}.ffn_gate_inp.bias"),
        ExpGateBias(l) => format!("blk.{l}.ffn_gate_exps.bias"),
        ExpUpBias(l) => format!("blk.{l}.ffn_up_exps.bias"),
        ExpDownBias(l) => format!("blk.{l}.ffn_down_exps.bias"),
        PostAttnNorm(l) => format!("blk.{l}.post_attention_norm.weight"),
        PostFfnNorm(l) => format!("blk.{l}.post_ffw_norm.weight"),
        PostFfnNorm1(l) => format!("blk.{l}.post_ffw_norm_1.weight"),
        PreFfnNorm2(l) => format!("blk.{l}.pre_ffw_norm_2.weight"),
        PostFfnNorm2(l) => format!("blk.{l}.post_ffw_norm_2.weight"),
        LayerScalar(l) => format!("blk.{l}.layer_output_scale.weight"),
        RouterScale(l) => format!("blk.{l}.ffn_gate_inp.scale"),
        ExpertScale(l) => format!("blk.{l}.ffn_down_exps.scale"),
        IdxQ(l) => format!("blk.{l}.indexer.attn_q_b.weight"),
        IdxK(l) => format!("blk.{l}.indexer.attn_k.weight"),
        IdxKNorm(l) => format!("blk.{l}.indexer.k_norm.weight"),
        IdxKNormBias(l) => format!("blk.{l}.indexer.k_norm.bias"),
        IdxWeights(l) => format!("blk.{l}.indexer.proj.weight"),
        HcHeadFn => "output_hc_fn.weight".into(),
        HcHeadBase => "output_hc_base.weight".into(),
        HcHeadScale => "output_hc_scale.weight".into(),
        Kv(l) => format!("blk.{l}.attn_kv.weight"),
        OA(l) => format!("blk.{l}.attn_output_a.weight"),
        OB(l) => format!("blk.{l}.attn_output_b.weight"),
        CmpKv(l) => format!("blk.{l}.attn_compressor_kv.weight"),
        CmpGate(l) => format!("blk.{l}.attn_compressor_gate.weight"),
        CmpApe(l) => format!("blk.{l}.attn_compressor_ape.weight"),
        CmpNorm(l) => format!("blk.{l}.attn_compressor_norm.weight"),
        IdxCmpKv(l) => format!("blk.{l}.indexer_compressor_kv.weight"),
        IdxCmpGate(l) => format!("blk.{l}.indexer_compressor_gate.weight"),
        IdxCmpApe(l) => format!("blk.{l}.indexer_compressor_ape.weight"),
        IdxCmpNorm(l) => format!("blk.{l}.indexer_compressor_norm.weight"),
        HcAttnFn(l) => format!("blk.{l}.hc_attn_fn.weight"),
        HcAttnBase(l) => format!("blk.{l}.hc_attn_base.weight"),
        HcAttnScale(l) => format!("blk.{l}.hc_attn_scale.weight"),
        HcFfnFn(l) => format!("blk.{l}.hc_ffn_fn.weight"),
        HcFfnBase(l) => format!("blk.{l}.hc_ffn_base.weight"),
        HcFfnScale(l) => format!("blk.{l}.hc_ffn_scale.weight"),
        HashTable(l) => format!("blk.{l}.ffn_gate_tid2eid.weight"),
    }
}

/// llama.cpp's dims of a tensor floe stores as `rows x cols`, where they are not `[cols, rows]`:
/// MLA's per-head `k_b` and `v_b` are 3-D, `[cols, rows / heads, heads]`.
pub fn gguf_dims(role: Dense, cfg: &ModelConfig, rows: usize, cols: usize) -> Vec<u64> {
    match role {
        Dense::MlaKB(_) | Dense::MlaVB(_) => {
            vec![cols as u64, (rows / cfg.heads.max(1)) as u64, cfg.heads as u64]
        }
        _ if rows == 1 => vec![cols as u64],
        _ => vec![cols as u64, rows as u64],
    }
}

/// The heads whose rows llama.cpp permuted in a tensor of `role`, for `llama` models: Q by the
/// query heads, K by the key/value heads. None for every other tensor and architecture.
pub fn permuted_heads(role: Dense, cfg: &ModelConfig) -> Option<usize> {
    match (cfg.arch, role) {
        (Arch::Mixtral, Dense::Q(_)) => Some(cfg.heads),
        (Arch::Mixtral, Dense::K(_)) => Some(cfg.kv_heads),
        _ => None,
    }
}

/// Reorders whole rows (`row_bytes` each) of a `heads`-head projection between llama.cpp's
/// interleaved-pair order and the rotate-half order. Within each head of `d` rows, llama.cpp row
/// `2i + j` is Hugging Face row `j * d/2 + i` (convert_hf_to_gguf.py's `permute`). With
/// `to_gguf` false this undoes it. Rows are moved whole, so it works for any storage type.
pub fn unpermute_rows(data: &[u8], heads: usize, row_bytes: usize, to_gguf: bool) -> Vec<u8> {
    let rows = data.len() / row_bytes;
    let d = rows / heads;
    let mut out = vec![0u8; data.len()];
    for h in 0..heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let gguf_row = h * d + 2 * i + j;
                let hf_row = h * d + j * (d / 2) + i;
                let (src, dst) = if to_gguf { (hf_row, gguf_row) } else { (gguf_row, hf_row) };
                out[dst * row_bytes..(dst + 1) * row_bytes]
                    .copy_from_slice(&data[src * row_bytes..(src + 1) * row_bytes]);
            }
        }
    }
    out
}
