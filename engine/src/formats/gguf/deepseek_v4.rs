//! DeepSeek-V4 from llama.cpp's `deepseek4` GGUF: the per-layer compression ratios (an indexer
//! on the 4:1 layers, as llama.cpp builds it), the compressed layers' own RoPE base with the
//! file's YaRN (the main RoPE has none), the hyper-connection and hash-routing keys, and the
//! SwiGLU clamp.

use super::gemma::{f, missing, u};
use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::model::config::{Arch, ModelConfig, QkNorm, SigmoidRouter, Yarn};
use crate::model::deepseek_v4::V4Layout;

/// llama.cpp's `expert_gating_func` of sqrt-softplus scoring.
pub const GATING_SQRT_SOFTPLUS: u64 = 4;

/// The ratio of a layer whose compressed branch has a lightning indexer.
const INDEXED_RATIO: usize = 4;

fn array_u(g: &GgufFile, key: &str) -> Result<Vec<usize>> {
    match g.get(key) {
        Some(GgufValue::Array(a)) => {
            Ok(a.iter().map(|v| v.as_u64().unwrap_or(u64::MAX) as usize).collect())
        }
        _ => Err(missing(g, key)),
    }
}

fn first_f(g: &GgufFile, key: &str) -> Option<f32> {
    match g.get(key) {
        Some(GgufValue::Array(a)) => a.first().and_then(|v| v.as_f64()).map(|x| x as f32),
        Some(v) => v.as_f64().map(|x| x as f32),
        None => None,
    }
}

/// The configuration of a `deepseek4` GGUF.
pub fn config_of(g: &GgufFile) -> Result<ModelConfig> {
    let p = |k: &str| format!("deepseek4.{k}");
    // The MTP layers come last in `block_count` (llama.cpp probes their `nextn` tensors);
    // floe skips them, as it does every family's.
    let blocks = u(g, &p("block_count"))?;
    let nextn = u(g, &p("nextn_predict_layers")).unwrap_or(0).min(blocks);
    let probe = format!("blk.{}.nextn.eh_proj.weight", blocks - nextn);
    let layers = if nextn > 0 && g.tensor(&probe).is_some() { blocks - nextn } else { blocks };
    if layers > crate::model::validate::MAX_KEYED {
        return Err(Error::Invalid(format!("{}: {layers} layers", g.path().display())));
    }
    let gating = u(g, &p("expert_gating_func"))? as u64;
    if gating != GATING_SQRT_SOFTPLUS {
        return Err(Error::Unsupported(format!(
            "{}: deepseek4 expert_gating_func {gating} (floe runs sqrt-softplus, {GATING_SQRT_SOFTPLUS})",
            g.path().display()
        )));
    }
    let ratios = array_u(g, &p("attention.compress_ratios"))?;
    if ratios.len() < layers {
        return Err(Error::Invalid(format!(
            "{}: {} compress ratios for {layers} layers",
            g.path().display(),
            ratios.len()
        )));
    }
    let ratios = ratios[..layers].to_vec();
    let yarn = match g.get(&p("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some("yarn") => Some(Yarn {
            factor: f(g, &p("rope.scaling.factor"))?,
            original_max_positions: u(g, &p("rope.scaling.original_context_length"))?,
            beta_fast: f(g, &p("rope.scaling.yarn_beta_fast")).unwrap_or(32.0),
            beta_slow: f(g, &p("rope.scaling.yarn_beta_slow")).unwrap_or(1.0),
            truncate: true,
            mscale: None,
            mscale_all_dim: None,
            // llama.cpp divides ggml's YaRN magnitude back out: cos and sin keep their size.
            attention_factor: Some(1.0),
        }),
        Some(other) => {
            return Err(Error::Unsupported(format!(
                "{}: RoPE scaling {other:?} (floe supports plain RoPE and yarn)",
                g.path().display()
            )))
        }
    };
    let limit = first_f(g, &p("swiglu_clamp_exp")).unwrap_or(0.0);
    let v4 = V4Layout {
        hc_mult: u(g, &p("hyper_connection.count"))?,
        hc_sinkhorn_iters: u(g, &p("hyper_connection.sinkhorn_iterations"))?,
        hc_eps: f(g, &p("hyper_connection.epsilon")).unwrap_or(1e-6),
        window: u(g, &p("attention.sliding_window"))?,
        indexed: ratios.iter().map(|&r| r == INDEXED_RATIO).collect(),
        compress_ratios: ratios,
        compress_rope_theta: f(g, &p("attention.compress_rope_freq_base"))?,
        compress_yarn: yarn,
        q_lora_rank: u(g, &p("attention.q_lora_rank"))?,
        o_groups: u(g, &p("attention.output_group_count"))?,
        o_lora_rank: u(g, &p("attention.output_lora_rank"))?,
        index_heads: u(g, &p("attention.indexer.head_count")).unwrap_or(0),
        index_head_dim: u(g, &p("attention.indexer.key_length")).unwrap_or(0),
        index_topk: u(g, &p("attention.indexer.top_k")).unwrap_or(0),
        hash_layers: u(g, &p("hash_layer_count")).unwrap_or(0),
        swiglu_limit: limit,
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
    let head_dim = u(g, &p("attention.key_length"))?;
    let expert_ffn = u(g, &p("expert_feed_forward_length"))?;
    let cfg = ModelConfig {
        arch: Arch::DeepseekV4,
        hidden: u(g, &p("embedding_length"))?,
        layers,
        heads: u(g, &p("attention.head_count"))?,
        kv_heads: u(g, &p("attention.head_count_kv")).unwrap_or(1),
        head_dim,
        vocab: *embd.dims.get(1).unwrap_or(&0) as usize,
        rms_eps: f(g, &p("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: f(g, &p("rope.freq_base"))?,
        experts: u(g, &p("expert_count"))?,
        top_k: u(g, &p("expert_used_count"))?,
        expert_ffn,
        dense_ffn: 0,
        shared_ffn: expert_ffn * u(g, &p("expert_shared_count")).unwrap_or(0),
        norm_topk_prob: matches!(g.get(&p("expert_weights_norm")), Some(GgufValue::Bool(true))),
        moe_layers: vec![true; layers],
        qkv_bias: false,
        qk_norm: QkNorm::None,
        clip_qkv: None,
        tie_embeddings: false,
        eos_token_ids: g
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|x| vec![crate::model::config::id_u32(x)])
            .unwrap_or_default(),
        max_positions: u(g, &p("context_length")).unwrap_or(4096),
        rope_dims: Some(u(g, &p("rope.dimension_count"))?),
        sigmoid_router: Some(SigmoidRouter {
            groups: 1,
            top_groups: 1,
            routed_scale: f(g, &p("expert_weights_scale")).unwrap_or(1.0),
        }),
        linear: None,
        linear_layers: Vec::new(),
        mla: None,
        yarn: None,
        sliding_window: None,
        window_layers: Vec::new(),
        clamped_swiglu: None,
        extras: Arch::DeepseekV4.layer_extras(),
        gemma: None,
        dsa: None,
        v4: Some(v4),
    };
    cfg.validate_as("GGUF metadata (deepseek4)")?;
    Ok(cfg)
}

/// The keys a `deepseek4` GGUF of `c` needs beyond (or instead of) the generic ones.
pub fn metadata(c: &ModelConfig, v: &V4Layout) -> Vec<(String, GgufValue)> {
    use GgufValue::*;
    let k = |s: &str| format!("deepseek4.{s}");
    let mut m = vec![
        (k("expert_gating_func"), U32(GATING_SQRT_SOFTPLUS as u32)),
        (k("expert_weights_norm"), Bool(c.norm_topk_prob)),
        (k("attention.key_length"), U32(c.head_dim as u32)),
        (k("attention.value_length"), U32(c.head_dim as u32)),
        (k("attention.q_lora_rank"), U32(v.q_lora_rank as u32)),
        (k("attention.sliding_window"), U32(v.window as u32)),
        (k("attention.output_group_count"), U32(v.o_groups as u32)),
        (k("attention.output_lora_rank"), U32(v.o_lora_rank as u32)),
        (
            k("attention.compress_ratios"),
            Array(v.compress_ratios.iter().map(|&r| U32(r as u32)).collect()),
        ),
        (k("attention.compress_rope_freq_base"), F32(v.compress_rope_theta)),
        (k("attention.indexer.head_count"), U32(v.index_heads as u32)),
        (k("attention.indexer.key_length"), U32(v.index_head_dim as u32)),
        (k("attention.indexer.top_k"), U32(v.index_topk as u32)),
        (k("hyper_connection.count"), U32(v.hc_mult as u32)),
        (k("hyper_connection.sinkhorn_iterations"), U32(v.hc_sinkhorn_iters as u32)),
        (k("hyper_connection.epsilon"), F32(v.hc_eps)),
        (k("hash_layer_count"), U32(v.hash_layers as u32)),
        (k("embedding_length_out"), U32((v.hc_mult * c.hidden) as u32)),
        (k("swiglu_clamp_exp"), Array(vec![F32(v.swiglu_limit); c.layers])),
        (k("swiglu_clamp_shexp"), Array(vec![F32(v.swiglu_limit); c.layers])),
        (k("rope.dimension_count"), U32(c.rotary_dims() as u32)),
    ];
    if let Some(y) = v.compress_yarn {
        m.extend(super::write::yarn_keys(&k, &y));
    }
    m
}
