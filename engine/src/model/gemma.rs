//! Gemma 4's MoE text model (`gemma4_text`; the 26B-A4B shape) as configuration: sliding and
//! full attention layers of different shapes, and what every layer has besides (parallel dense
//! MLP and MoE, sandwich norms, a layer scalar), read from its config.json.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// The full-attention layers' shape and Gemma 4's fixed parts. The configuration's `head_dim`,
/// `kv_heads` and `rope_theta` are the sliding layers' (`window_layers`); these are the others'.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GemmaLayout {
    /// Channels per head of the full-attention layers.
    pub global_head_dim: usize,
    /// Key/value heads of the full-attention layers.
    pub global_kv_heads: usize,
    /// Full-attention layers have no v projection: the value is the key before its norm.
    pub k_eq_v: bool,
    /// RoPE base of the full-attention layers.
    pub global_rope_theta: f32,
    /// Pairs of the full-attention heads RoPE rotates ("proportional": their frequencies as if
    /// every pair rotated, the other pairs left as they are).
    pub global_rope_pairs: usize,
    /// Final logits become `cap * tanh(logits / cap)`, if set.
    pub logit_softcap: Option<f32>,
}

fn bad(what: String) -> Error {
    Error::Unsupported(format!("config.json (gemma4_text): {what}"))
}

impl GemmaLayout {
    /// From a `gemma4_text` config (`v`), refusing what floe does not run by name: per-layer
    /// embeddings (E2B/E4B), shared KV layers, the double-wide MLP, a model without MoE
    /// blocks, attention biases, another activation or RoPE type.
    pub fn from_hf(v: &Value, head_dim: usize) -> Result<Self> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
        let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        if u("hidden_size_per_layer_input") > 0 {
            return Err(bad("per-layer embeddings (hidden_size_per_layer_input)".into()));
        }
        if u("num_kv_shared_layers") > 0 {
            return Err(bad("shared KV layers (num_kv_shared_layers)".into()));
        }
        if b("use_double_wide_mlp") || b("attention_bias") {
            return Err(bad("use_double_wide_mlp or attention_bias".into()));
        }
        if !b("enable_moe_block") {
            return Err(bad("no MoE block (enable_moe_block false): floe runs MoE models".into()));
        }
        let act = v.get("hidden_activation").and_then(Value::as_str).unwrap_or("");
        if act != "gelu_pytorch_tanh" {
            return Err(bad(format!("hidden_activation {act:?} (floe runs gelu_pytorch_tanh)")));
        }
        let rope = |t: &str| v.get("rope_parameters").and_then(|r| r.get(t));
        let kind = |t: &str| {
            rope(t).and_then(|r| r.get("rope_type")).and_then(Value::as_str).unwrap_or("default")
        };
        if kind("sliding_attention") != "default"
            || !matches!(kind("full_attention"), "proportional" | "default")
        {
            return Err(bad(format!(
                "rope types {:?} / {:?} (floe runs default sliding and proportional full RoPE)",
                kind("sliding_attention"),
                kind("full_attention")
            )));
        }
        let global_head_dim = match u("global_head_dim") {
            0 => head_dim,
            d => d,
        };
        let proportion = rope("full_attention")
            .and_then(|r| r.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .unwrap_or(1.0);
        if !(proportion > 0.0 && proportion <= 1.0) {
            return Err(bad(format!("full_attention partial_rotary_factor {proportion}")));
        }
        Ok(Self {
            global_head_dim,
            global_kv_heads: match u("num_global_key_value_heads") {
                0 => u("num_key_value_heads").max(1),
                n => n,
            },
            k_eq_v: b("attention_k_eq_v"),
            global_rope_theta: rope("full_attention")
                .and_then(|r| r.get("rope_theta"))
                .and_then(Value::as_f64)
                .unwrap_or(1e6) as f32,
            global_rope_pairs: (proportion * global_head_dim as f64 / 2.0) as usize,
            logit_softcap: v
                .get("final_logit_softcapping")
                .and_then(Value::as_f64)
                .map(|c| c as f32),
        })
    }

    /// The sliding layers' RoPE base from `v`.
    pub fn sliding_rope_theta(v: &Value) -> f32 {
        v.get("rope_parameters")
            .and_then(|r| r.get("sliding_attention"))
            .and_then(|r| r.get("rope_theta"))
            .and_then(Value::as_f64)
            .unwrap_or(1e4) as f32
    }
}

#[cfg(test)]
mod tests {
    use crate::model::config::{Arch, ModelConfig};

    /// The golden's config reads as Gemma 4 with both layer kinds; what floe does not run is
    /// refused by name.
    #[test]
    fn gemma4_config_and_what_is_refused() {
        let Some(dir) = floe_cache::fixtures::shared_fixture("golden/gemma4_moe") else { return };
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let c = ModelConfig::from_hf_json(&text).unwrap();
        let g = c.gemma.unwrap();
        assert_eq!(c.arch, Arch::Gemma4);
        assert_eq!((c.head_dim, c.kv_heads, c.rope_theta), (16, 2, 1e4));
        assert_eq!((g.global_head_dim, g.global_kv_heads, g.k_eq_v), (32, 1, true));
        assert_eq!((g.global_rope_pairs, g.logit_softcap), (4, Some(5.0)));
        assert_eq!(c.window_layers, [true, true, false, true, true, false]);
        assert_eq!((c.layer_head_dim(2), c.layer_kv_heads(2), c.layer_k_eq_v(2)), (32, 1, true));
        assert_eq!((c.layer_head_dim(0), c.layer_kv_heads(0), c.layer_k_eq_v(0)), (16, 2, false));
        for (from, to, says) in [
            (
                "\"hidden_size_per_layer_input\": 0",
                "\"hidden_size_per_layer_input\": 256",
                "per-layer",
            ),
            ("\"num_kv_shared_layers\": 0", "\"num_kv_shared_layers\": 2", "shared KV"),
            ("\"enable_moe_block\": true", "\"enable_moe_block\": false", "MoE"),
            ("\"gelu_pytorch_tanh\"", "\"silu\"", "hidden_activation"),
            ("\"proportional\"", "\"yarn\"", "rope types"),
        ] {
            assert!(text.contains(from), "{from}");
            let e = ModelConfig::from_hf_json(&text.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(says), "{to}: {e}");
        }
    }
}
