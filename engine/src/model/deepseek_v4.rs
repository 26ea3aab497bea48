//! DeepSeek-V4's text model (`deepseek_v4`) as configuration: what its layers have besides a
//! MoE (hyper-connection streams, shared-KV attention with a sliding window and per layer a
//! compressed branch, hash-routed first layers, a clamped SwiGLU), read from its config.json.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::config::Yarn;

/// DeepSeek-V4's fixed parts. The configuration's `head_dim`, `rope_dims` and `rope_theta` are
/// the attention's (one KV head, `rope_dims` trailing channels rotated); these are the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct V4Layout {
    /// Residual streams (hyper-connections).
    pub hc_mult: usize,
    /// Sinkhorn-Knopp iterations projecting a stream-mixing matrix.
    pub hc_sinkhorn_iters: usize,
    /// The hyper-connections' epsilon.
    pub hc_eps: f32,
    /// Positions the sliding branch of every layer sees, itself included.
    pub window: usize,
    /// Per layer: positions pooled into one compressed entry (0: the sliding branch only).
    pub compress_ratios: Vec<usize>,
    /// Per layer: a lightning indexer picks the compressed entries each query reads.
    pub indexed: Vec<bool>,
    /// RoPE base of the compressed layers (their queries, keys and compressed entries).
    pub compress_rope_theta: f32,
    /// Their YaRN scaling, if any.
    pub compress_yarn: Option<Yarn>,
    /// Rank of the query LoRA.
    pub q_lora_rank: usize,
    /// Groups of heads of the grouped output projection.
    pub o_groups: usize,
    /// Each group's rank in it.
    pub o_lora_rank: usize,
    /// Indexer heads.
    pub index_heads: usize,
    /// Channels of an indexer head and key.
    pub index_head_dim: usize,
    /// Compressed entries each query of an indexed layer reads.
    pub index_topk: usize,
    /// The first this many layers choose experts by token id (`tid2eid`).
    pub hash_layers: usize,
    /// SwiGLU's clamp: gate at most this, up within +-this.
    pub swiglu_limit: f32,
}

fn bad(what: String) -> Error {
    Error::Unsupported(format!("config.json (deepseek_v4): {what}"))
}

fn bad_type(t: &Value) -> Error {
    bad(format!(
        "mlp layer type {t} after the hash-routed layers (floe runs hash_moe layers first, then moe)"
    ))
}

fn invalid(what: String) -> Error {
    Error::Invalid(format!("config.json (deepseek_v4): {what}"))
}

impl V4Layout {
    /// From a `deepseek_v4` config (`v`) of `layers` layers; returns the layout and the main
    /// RoPE's base. Refuses by name what floe does not run, and shapes that cannot work.
    pub fn from_hf(v: &Value, layers: usize) -> Result<(Self, f32)> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).map(|x| x as usize);
        let need = |k: &str| u(k).ok_or_else(|| invalid(format!("no {k}")));
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let scoring = v.get("scoring_func").and_then(Value::as_str).unwrap_or("sqrtsoftplus");
        if scoring != "sqrtsoftplus" {
            return Err(bad(format!("scoring_func {scoring:?} (floe runs sqrtsoftplus)")));
        }
        let act = v.get("hidden_act").and_then(Value::as_str).unwrap_or("silu");
        if act != "silu" {
            return Err(bad(format!("hidden_act {act:?} (floe runs silu)")));
        }
        let kv_heads = u("num_key_value_heads").unwrap_or(1);
        if kv_heads != 1 {
            return Err(bad(format!("{kv_heads} key/value heads (V4 attention has one)")));
        }
        let rates = v.get("compress_rates");
        let rate = |name: &str, default: usize| {
            rates.and_then(|r| r.get(name)).and_then(Value::as_u64).map_or(default, |x| x as usize)
        };
        let (csa, hca) =
            (rate("compressed_sparse_attention", 4), rate("heavily_compressed_attention", 128));
        let (compress_ratios, indexed): (Vec<usize>, Vec<bool>) =
            match v.get("layer_types").and_then(Value::as_array) {
                Some(types) => types
                    .iter()
                    .map(|t| match t.as_str() {
                        Some("sliding_attention") => Ok((0, false)),
                        Some("compressed_sparse_attention") => Ok((csa, true)),
                        Some("heavily_compressed_attention") => Ok((hca, false)),
                        other => Err(bad(format!("layer type {other:?}"))),
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .unzip(),
                None => match v.get("compress_ratios").and_then(Value::as_array) {
                    Some(r) => r
                        .iter()
                        .map(|x| {
                            let x = x.as_u64().unwrap_or(u64::MAX) as usize;
                            (x, x != 0 && x == csa)
                        })
                        .unzip(),
                    // transformers' default: two heavily compressed layers, then sparse and
                    // heavily compressed in turn.
                    None => (0..layers)
                        .map(|l| if l >= 2 && l % 2 == 1 { (csa, true) } else { (hca, false) })
                        .unzip(),
                },
            };
        if compress_ratios.len() < layers {
            return Err(invalid(format!(
                "{} layer types for {layers} layers",
                compress_ratios.len()
            )));
        }
        let rope = v.get("rope_parameters");
        let entry = |name: &str| rope.and_then(|r| r.get(name)).filter(|e| e.is_object());
        let main_theta = entry("main")
            .and_then(|m| m.get("rope_theta"))
            .and_then(Value::as_f64)
            .or_else(|| f("rope_theta"))
            .unwrap_or(10000.0) as f32;
        if let Some(m) = entry("main") {
            if Yarn::from_hf(m)?.is_some() {
                return Err(bad("YaRN on the sliding layers' RoPE".into()));
            }
        }
        let (compress_rope_theta, compress_yarn) = match entry("compress") {
            Some(c) => (
                c.get("rope_theta").and_then(Value::as_f64).or_else(|| f("compress_rope_theta")),
                Yarn::from_hf(c)?,
            ),
            None => (
                f("compress_rope_theta"),
                v.get("rope_scaling")
                    .filter(|r| r.is_object())
                    .map(Yarn::from_hf)
                    .transpose()?
                    .flatten(),
            ),
        };
        let hash_layers = match v.get("mlp_layer_types").and_then(Value::as_array) {
            Some(t) => {
                let n = t.iter().take_while(|x| x.as_str() == Some("hash_moe")).count();
                if let Some(bad) = t.iter().skip(n).find(|x| x.as_str() != Some("moe")) {
                    return Err(bad_type(bad));
                }
                n
            }
            // transformers' default.
            None => u("num_hash_layers").unwrap_or(3).min(layers),
        };
        // The V4 reference does not scale cos and sin by YaRN's magnitude: transformers sets
        // `attention_factor` 1 where the config leaves it out.
        let compress_yarn = compress_yarn
            .map(|y| Yarn { attention_factor: Some(y.attention_factor.unwrap_or(1.0)), ..y });
        let layout = Self {
            hc_mult: need("hc_mult")?,
            hc_sinkhorn_iters: u("hc_sinkhorn_iters").unwrap_or(20),
            hc_eps: f("hc_eps").unwrap_or(1e-6) as f32,
            window: need("sliding_window")?,
            compress_ratios: compress_ratios[..layers].to_vec(),
            indexed: indexed[..layers].to_vec(),
            compress_rope_theta: compress_rope_theta.unwrap_or(main_theta as f64) as f32,
            compress_yarn,
            q_lora_rank: need("q_lora_rank")?,
            o_groups: need("o_groups")?,
            o_lora_rank: need("o_lora_rank")?,
            index_heads: u("index_n_heads").unwrap_or(0),
            index_head_dim: u("index_head_dim").unwrap_or(0),
            index_topk: u("index_topk").unwrap_or(0),
            hash_layers,
            swiglu_limit: f("swiglu_limit").unwrap_or(0.0) as f32,
        };
        Ok((layout, main_theta))
    }

    /// Checks the shapes against the model's (`heads` query heads of `head_dim`, `rope_dims`
    /// of them rotated, `layers` layers, `experts` experts).
    pub fn check(
        &self,
        heads: usize,
        head_dim: usize,
        rope_dims: usize,
        layers: usize,
    ) -> std::result::Result<(), String> {
        if self.hc_mult == 0 {
            return Err("hc_mult 0: the residual needs at least one stream".into());
        }
        if self.hc_mult > 16 {
            return Err(format!("hc_mult {} (at most 16)", self.hc_mult));
        }
        if self.window == 0 {
            return Err("sliding_window 0".into());
        }
        if self.compress_ratios.len() != layers || self.indexed.len() != layers {
            return Err(format!(
                "{} compress ratios for {layers} layers",
                self.compress_ratios.len()
            ));
        }
        if rope_dims == 0 || rope_dims > head_dim || !rope_dims.is_multiple_of(2) {
            return Err(format!("{rope_dims} rotated channels of a {head_dim}-channel head"));
        }
        for (l, (&r, &ix)) in self.compress_ratios.iter().zip(&self.indexed).enumerate() {
            if r > 1 << 16 || r == 1 {
                return Err(format!("layer {l}: compression ratio {r}"));
            }
            if ix && r == 0 {
                return Err(format!("layer {l}: an indexer without a compressed branch"));
            }
        }
        if self.indexed.iter().any(|&x| x) {
            let d = self.index_head_dim;
            if self.index_heads == 0 || d < rope_dims || d > 4096 {
                return Err(format!(
                    "indexer of {} heads of {d} channels ({rope_dims} rotated)",
                    self.index_heads
                ));
            }
            if self.index_topk == 0 {
                return Err("index_topk 0: an indexed layer would read no compressed entry".into());
            }
        }
        if self.o_groups == 0 || !heads.is_multiple_of(self.o_groups) || self.o_lora_rank == 0 {
            return Err(format!(
                "o_groups {} / o_lora_rank {} for {heads} heads",
                self.o_groups, self.o_lora_rank
            ));
        }
        if self.q_lora_rank == 0 {
            return Err("q_lora_rank 0".into());
        }
        if self.hash_layers > layers {
            return Err(format!("{} hash-routed layers of {layers}", self.hash_layers));
        }
        if self.swiglu_limit.is_nan()
            || self.swiglu_limit < 0.0
            || !self.hc_eps.is_finite()
            || self.hc_sinkhorn_iters == 0
        {
            return Err("swiglu_limit, hc_eps or hc_sinkhorn_iters out of range".into());
        }
        Ok(())
    }
}
