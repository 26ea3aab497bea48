//! Gemma 4 from llama.cpp's `gemma4` GGUF: per-layer KV head counts (`head_count_kv` is an
//! array), the full and sliding layers' own key lengths, RoPE bases and dimensions (`*_swa`),
//! `sliding_window_pattern`, the soft-cap, and the proportional RoPE of the full layers as
//! `rope_freqs` (1 for a rotated pair, a huge factor for one left as it is).

use crate::error::{Error, Result};
use crate::formats::gguf::{GgufFile, GgufValue};
use crate::model::config::{Arch, ModelConfig, QkNorm};
use crate::model::gemma::GemmaLayout;

pub(super) fn missing(g: &GgufFile, key: &str) -> Error {
    Error::Invalid(format!("{}: missing metadata key {key}", g.path().display()))
}

pub(super) fn u(g: &GgufFile, key: &str) -> Result<usize> {
    g.get(key).and_then(|v| v.as_u64()).map(|x| x as usize).ok_or_else(|| missing(g, key))
}

pub(super) fn f(g: &GgufFile, key: &str) -> Result<f32> {
    g.get(key).and_then(|v| v.as_f64()).map(|x| x as f32).ok_or_else(|| missing(g, key))
}

fn bools(g: &GgufFile, key: &str) -> Result<Vec<bool>> {
    match g.get(key) {
        Some(GgufValue::Array(a)) => {
            Ok(a.iter().map(|v| matches!(v, GgufValue::Bool(true))).collect())
        }
        _ => Err(missing(g, key)),
    }
}

/// The configuration of a `gemma4` GGUF.
pub fn config_of(g: &GgufFile) -> Result<ModelConfig> {
    let p = |k: &str| format!("gemma4.{k}");
    let layers = u(g, &p("block_count"))?;
    if layers > crate::model::validate::MAX_KEYED {
        return Err(Error::Invalid(format!("{}: {layers} layers", g.path().display())));
    }
    if u(g, &p("embedding_length_per_layer_input")).unwrap_or(0) > 0
        || u(g, &p("attention.shared_kv_layers")).unwrap_or(0) > 0
    {
        return Err(Error::Unsupported(format!(
            "{}: Gemma 4 with per-layer embeddings or shared KV layers (E2B/E4B)",
            g.path().display()
        )));
    }
    let sliding = bools(g, &p("attention.sliding_window_pattern"))?;
    if sliding.len() < layers {
        return Err(Error::Invalid(format!(
            "{}: sliding_window_pattern has {} entries for {layers} layers",
            g.path().display(),
            sliding.len()
        )));
    }
    let heads = u(g, &p("attention.head_count"))?;
    let kv = |swa: bool| -> Result<usize> {
        match g.get(&p("attention.head_count_kv")) {
            Some(GgufValue::Array(a)) => (0..layers)
                .find(|&l| sliding[l] == swa)
                .and_then(|l| a.get(l))
                .and_then(|v| v.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| missing(g, &p("attention.head_count_kv"))),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| missing(g, "head_count_kv")),
            None => Ok(heads),
        }
    };
    let head_dim = u(g, &p("attention.key_length_swa"))?;
    let global_head_dim = u(g, &p("attention.key_length"))?;
    let full = (0..layers).find(|&l| !sliding[l]);
    // The full layers' rotated pairs: `rope_freqs` marks the others with a huge factor.
    let global_rope_pairs = match g.tensor("rope_freqs.weight") {
        Some(t) if t.ggml_type == crate::formats::gguf::GgmlType::F32 => g
            .data(t)
            .chunks_exact(4)
            .filter(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) < 1e10)
            .count(),
        Some(t) => {
            return Err(Error::Invalid(format!("{}: rope_freqs is not F32", t.name)));
        }
        None => global_head_dim / 2,
    };
    let k_eq_v = full.is_some_and(|l| g.tensor(&format!("blk.{l}.attn_v.weight")).is_none());
    let gemma = GemmaLayout {
        global_head_dim,
        global_kv_heads: kv(false).unwrap_or(heads),
        k_eq_v,
        global_rope_theta: f(g, &p("rope.freq_base"))?,
        global_rope_pairs,
        logit_softcap: f(g, &p("final_logit_softcapping")).ok().filter(|&c| c > 0.0),
    };
    let embd = g
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
    let rope_swa = u(g, &p("rope.dimension_count_swa")).unwrap_or(head_dim);
    let cfg = ModelConfig {
        arch: Arch::Gemma4,
        hidden: u(g, &p("embedding_length"))?,
        layers,
        heads,
        kv_heads: kv(true)?,
        head_dim,
        vocab: *embd.dims.get(1).unwrap_or(&0) as usize,
        rms_eps: f(g, &p("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: f(g, &p("rope.freq_base_swa"))?,
        experts: u(g, &p("expert_count"))?,
        top_k: u(g, &p("expert_used_count"))?,
        expert_ffn: u(g, &p("expert_feed_forward_length"))?,
        dense_ffn: u(g, &p("feed_forward_length"))?,
        shared_ffn: 0,
        norm_topk_prob: true,
        moe_layers: vec![true; layers],
        qkv_bias: false,
        qk_norm: QkNorm::PerHead,
        clip_qkv: None,
        tie_embeddings: g.tensor("output.weight").is_none(),
        eos_token_ids: g
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|x| vec![crate::model::config::id_u32(x)])
            .unwrap_or_default(),
        max_positions: u(g, &p("context_length")).unwrap_or(4096),
        rope_dims: (rope_swa < head_dim).then_some(rope_swa),
        sigmoid_router: None,
        linear: None,
        linear_layers: Vec::new(),
        mla: None,
        yarn: None,
        sliding_window: Some(u(g, &p("attention.sliding_window"))?),
        window_layers: sliding[..layers].to_vec(),
        clamped_swiglu: None,
        extras: Arch::Gemma4.layer_extras(),
        gemma: Some(gemma),
        dsa: None,
        v4: None,
    };
    cfg.validate_as("GGUF metadata (gemma4)")?;
    Ok(cfg)
}

/// The keys a `gemma4` GGUF of `c` needs beyond (or instead of) the generic ones: per-layer
/// KV heads, both layer kinds' key lengths, RoPE bases and dimensions, the window pattern.
pub fn metadata(c: &ModelConfig, g: &GemmaLayout) -> Vec<(String, GgufValue)> {
    use GgufValue::*;
    let k = |s: &str| format!("gemma4.{s}");
    let kv: Vec<GgufValue> = (0..c.layers).map(|l| U32(c.layer_kv_heads(l) as u32)).collect();
    let swa: Vec<GgufValue> = (0..c.layers).map(|l| Bool(c.window(l).is_some())).collect();
    let mut m = vec![
        (k("attention.head_count_kv"), Array(kv)),
        (k("attention.key_length"), U32(g.global_head_dim as u32)),
        (k("attention.value_length"), U32(g.global_head_dim as u32)),
        (k("attention.key_length_swa"), U32(c.head_dim as u32)),
        (k("attention.value_length_swa"), U32(c.head_dim as u32)),
        (k("attention.sliding_window_pattern"), Array(swa)),
        (k("attention.shared_kv_layers"), U32(0)),
        (k("embedding_length_per_layer_input"), U32(0)),
        (k("rope.freq_base"), F32(g.global_rope_theta)),
        (k("rope.freq_base_swa"), F32(c.rope_theta)),
        (k("rope.dimension_count"), U32(g.global_head_dim as u32)),
        (k("rope.dimension_count_swa"), U32(c.rotary_dims() as u32)),
    ];
    if let Some(cap) = g.logit_softcap {
        m.push((k("final_logit_softcapping"), F32(cap)));
    }
    m
}

/// llama.cpp's `rope_freqs` of the full layers: 1 for each rotated pair, a factor that stops
/// the others (as its converter writes it).
pub fn rope_freqs(g: &GemmaLayout) -> Vec<u8> {
    (0..g.global_head_dim / 2)
        .map(|i| if i < g.global_rope_pairs { 1.0f32 } else { 1e30 })
        .flat_map(|x| x.to_le_bytes())
        .collect()
}
