//! Validation of a model's configuration, once, at open, wherever it came from (`floe.json`, a
//! `config.json`, GGUF metadata). Each check names the field, the value found and the limit, in
//! one error type ([`FieldError`]), so no impossible value reaches the forward pass, a `u16`
//! expert key, an offset sum or a slice. The file-level checks (slab tables, dense entries) are
//! in [`crate::formats::validate`].

use crate::model::config::ModelConfig;

/// A value floe cannot run with: which field, what it was, what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {limit}")]
pub struct FieldError {
    /// The field, with its path (`config.head_dim`, `dense[3].offset`).
    pub field: String,
    /// The value found.
    pub value: String,
    /// What it must be.
    pub limit: String,
}

/// The result of one check.
pub type Check = Result<(), FieldError>;

/// A [`FieldError`].
pub fn bad(field: impl Into<String>, value: impl ToString, limit: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), value: value.to_string(), limit: limit.into() }
}

/// `lo <= v <= hi`.
pub fn range(field: &str, v: usize, lo: usize, hi: usize) -> Check {
    if v < lo || v > hi {
        return Err(bad(field, v, format!("must be in {lo}..={hi}")));
    }
    Ok(())
}

fn positive_finite(field: &str, v: f32, hi: f32) -> Check {
    if !(v.is_finite() && v > 0.0 && v <= hi) {
        return Err(bad(field, v, format!("must be finite, above 0 and at most {hi}")));
    }
    Ok(())
}

/// Most layers or experts: keys are `u16` (`ExpertKey`).
pub const MAX_KEYED: usize = u16::MAX as usize;
/// Widest residual stream, head count, projection or FFN floe accepts (far above any model).
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest vocabulary (token ids are `u32`; 2^24 is far above any model).
pub const MAX_VOCAB: usize = 1 << 24;
/// Longest context.
pub const MAX_POSITIONS: usize = 1 << 24;

/// Every field of a model configuration, with its limits.
pub fn check_config(c: &ModelConfig) -> Check {
    range("hidden", c.hidden, 1, MAX_WIDTH)?;
    range("layers", c.layers, 1, MAX_KEYED)?;
    range("heads", c.heads, 1, 1 << 14)?;
    range("kv_heads", c.kv_heads, 1, c.heads)?;
    if !c.heads.is_multiple_of(c.kv_heads) {
        return Err(bad("kv_heads", c.kv_heads, format!("must divide heads ({})", c.heads)));
    }
    range("head_dim", c.head_dim, 2, 1 << 14)?;
    if !c.head_dim.is_multiple_of(2) {
        return Err(bad("head_dim", c.head_dim, "must be even (RoPE rotates pairs)"));
    }
    range("heads x head_dim", c.heads * c.head_dim, 1, MAX_WIDTH)?;
    range("vocab", c.vocab, 1, MAX_VOCAB)?;
    positive_finite("rms_eps", c.rms_eps, 1.0)?;
    positive_finite("rope_theta", c.rope_theta, 1e12)?;
    if let Some(clip) = c.clip_qkv {
        positive_finite("clip_qkv", clip, f32::MAX)?;
    }
    if c.moe_layers.len() != c.layers {
        return Err(bad(
            "moe_layers",
            format!("a list of {}", c.moe_layers.len()),
            format!("must have one entry per layer ({})", c.layers),
        ));
    }
    if c.moe_layer_count() > 0 {
        range("experts", c.experts, 1, MAX_KEYED)?;
        range("top_k", c.top_k, 1, c.experts)?;
        range("expert_ffn", c.expert_ffn, 1, MAX_WIDTH)?;
    }
    if c.moe_layer_count() < c.layers {
        range("dense_ffn (the model has dense layers)", c.dense_ffn, 1, MAX_WIDTH)?;
    }
    range("shared_ffn", c.shared_ffn, 0, MAX_WIDTH)?;
    range("max_positions", c.max_positions, 1, MAX_POSITIONS)?;
    if let Some(v4) = &c.v4 {
        let rope = c.rope_dims.unwrap_or(c.head_dim);
        v4.check(c.heads, c.head_dim, rope, c.layers)
            .map_err(|why| bad("deepseek_v4 layout", "these values", why))?;
    }
    if let Some(d) = &c.dsa {
        range("dsa.heads", d.heads, 1, 1 << 12)?;
        range("dsa.head_dim", d.head_dim, 2, 1 << 12)?;
        range("dsa.topk", d.topk, 1, MAX_POSITIONS)?;
        if let Some(m) = c.mla {
            range(
                "dsa.head_dim (its rotated part is qk_rope_dim)",
                d.head_dim,
                m.qk_rope_dim,
                1 << 12,
            )?;
        }
        if d.full_layers.len() != c.layers || d.full_layers.first() == Some(&false) {
            return Err(bad(
                "dsa.full_layers",
                d.full_layers.len(),
                "one per layer, the first full",
            ));
        }
    }
    if let Some(g) = c.gemma {
        range("gemma.global_head_dim", g.global_head_dim, 2, 1 << 14)?;
        range("gemma.global_kv_heads", g.global_kv_heads, 1, c.heads)?;
        if !c.heads.is_multiple_of(g.global_kv_heads) {
            return Err(bad(
                "gemma.global_kv_heads",
                g.global_kv_heads,
                format!("must divide heads ({})", c.heads),
            ));
        }
        range("gemma.global_rope_pairs", g.global_rope_pairs, 0, g.global_head_dim / 2)?;
        positive_finite("gemma.global_rope_theta", g.global_rope_theta, 1e12)?;
        if let Some(cap) = g.logit_softcap {
            positive_finite("gemma.logit_softcap", cap, 1e6)?;
        }
    }
    if let Some(d) = c.rope_dims {
        range("rope_dims", d, 2, c.head_dim)?;
        if !d.is_multiple_of(2) {
            return Err(bad("rope_dims", d, "must be even (RoPE rotates pairs)"));
        }
    }
    if let Some(w) = c.sliding_window {
        range("sliding_window", w, 1, MAX_POSITIONS)?;
    }
    if !c.window_layers.is_empty() && c.window_layers.len() != c.layers {
        return Err(bad(
            "window_layers",
            format!("a list of {}", c.window_layers.len()),
            format!("must be empty or have one entry per layer ({})", c.layers),
        ));
    }
    if let Some(y) = c.yarn {
        positive_finite("yarn.factor", y.factor, 1e6)?;
        range("yarn.original_max_positions", y.original_max_positions, 1, MAX_POSITIONS)?;
        positive_finite("yarn.beta_fast", y.beta_fast, 1e6)?;
        positive_finite("yarn.beta_slow", y.beta_slow, 1e6)?;
    }
    if let Some(sw) = c.clamped_swiglu {
        positive_finite("clamped_swiglu.alpha", sw.alpha, 1e6)?;
        positive_finite("clamped_swiglu.limit", sw.limit, 1e6)?;
    }
    if let Some(m) = c.mla {
        range("mla.q_lora_rank", m.q_lora_rank, 0, MAX_WIDTH)?;
        range("mla.kv_lora_rank", m.kv_lora_rank, 1, MAX_WIDTH)?;
        range("mla.qk_nope_dim", m.qk_nope_dim, 1, 1 << 12)?;
        range("mla.qk_rope_dim", m.qk_rope_dim, 2, 1 << 12)?;
        if !m.qk_rope_dim.is_multiple_of(2) {
            return Err(bad("mla.qk_rope_dim", m.qk_rope_dim, "must be even (RoPE rotates pairs)"));
        }
        range("mla.v_head_dim", m.v_head_dim, 1, 1 << 12)?;
    }
    if let Some(r) = c.sigmoid_router {
        range("sigmoid_router.groups", r.groups, 1, c.experts.max(1))?;
        if !c.experts.is_multiple_of(r.groups) {
            return Err(bad(
                "sigmoid_router.groups",
                r.groups,
                format!("must divide experts ({})", c.experts),
            ));
        }
        range("sigmoid_router.top_groups", r.top_groups, 1, r.groups)?;
        if r.top_groups * (c.experts / r.groups) < c.top_k {
            return Err(bad(
                "sigmoid_router.top_groups",
                r.top_groups,
                format!("its groups must hold at least top_k ({}) experts", c.top_k),
            ));
        }
        positive_finite("sigmoid_router.routed_scale", r.routed_scale, 1e6)?;
    }
    if !c.linear_layers.is_empty() && c.linear_layers.len() != c.layers {
        return Err(bad(
            "linear_layers",
            format!("a list of {}", c.linear_layers.len()),
            format!("must be empty or have one entry per layer ({})", c.layers),
        ));
    }
    match c.linear {
        Some(lin) => {
            range("linear.key_heads", lin.key_heads, 1, 1 << 12)?;
            range("linear.value_heads", lin.value_heads, lin.key_heads, 1 << 12)?;
            if !lin.value_heads.is_multiple_of(lin.key_heads) {
                return Err(bad(
                    "linear.value_heads",
                    lin.value_heads,
                    format!("must be a multiple of linear.key_heads ({})", lin.key_heads),
                ));
            }
            range("linear.key_dim", lin.key_dim, 1, 1 << 12)?;
            range("linear.value_dim", lin.value_dim, 1, 1 << 12)?;
            range("linear.conv_kernel", lin.conv_kernel, 1, 64)?;
        }
        None if c.linear_layers.iter().any(|&x| x) => {
            return Err(bad("linear", "none", "linear-attention layers need their shape"));
        }
        None => {}
    }
    if let Some(&id) = c.eos_token_ids.iter().find(|&&id| id as usize >= c.vocab) {
        return Err(bad("eos_token_ids", id, format!("must be below vocab ({})", c.vocab)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig::from_hf_json(
            r#"{"model_type":"qwen3_moe","hidden_size":64,"num_hidden_layers":4,"num_attention_heads":4,
            "num_key_value_heads":2,"head_dim":16,"vocab_size":257,"num_experts":16,"num_experts_per_tok":4,
            "moe_intermediate_size":64,"intermediate_size":64,"rope_theta":1e6,"eos_token_id":256}"#,
        )
        .unwrap()
    }

    #[test]
    fn every_impossible_config_value_names_its_field_and_limit() {
        assert_eq!(check_config(&cfg()), Ok(()));
        type Edit = Box<dyn Fn(&mut ModelConfig)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("head_dim", Box::new(|c| c.head_dim = 0)),
            ("head_dim", Box::new(|c| c.head_dim = 15)),
            ("moe_layers", Box::new(|c| c.moe_layers.truncate(1))),
            ("layers", Box::new(|c| c.layers = 70_000)),
            ("experts", Box::new(|c| c.experts = 65_536)),
            ("rope_theta", Box::new(|c| c.rope_theta = -1.0)),
            ("rope_theta", Box::new(|c| c.rope_theta = f32::NAN)),
            ("rms_eps", Box::new(|c| c.rms_eps = -1e-6)),
            ("rms_eps", Box::new(|c| c.rms_eps = 0.0)),
            ("max_positions", Box::new(|c| c.max_positions = 0)),
            ("top_k", Box::new(|c| c.top_k = c.experts + 1)),
            ("kv_heads", Box::new(|c| c.kv_heads = 3)),
            ("vocab", Box::new(|c| c.vocab = 0)),
            ("eos_token_ids", Box::new(|c| c.eos_token_ids = vec![c.vocab as u32])),
            ("clip_qkv", Box::new(|c| c.clip_qkv = Some(0.0))),
            ("rope_dims", Box::new(|c| c.rope_dims = Some(7))),
            ("rope_dims", Box::new(|c| c.rope_dims = Some(c.head_dim + 2))),
            ("linear_layers", Box::new(|c| c.linear_layers = vec![true])),
            ("linear", Box::new(|c| c.linear_layers = vec![true; c.layers])),
            (
                "sigmoid_router.groups",
                Box::new(|c| {
                    c.sigmoid_router = Some(crate::model::config::SigmoidRouter {
                        groups: 3,
                        top_groups: 1,
                        routed_scale: 1.0,
                    })
                }),
            ),
            (
                "sigmoid_router.top_groups",
                Box::new(|c| {
                    c.sigmoid_router = Some(crate::model::config::SigmoidRouter {
                        groups: 8,
                        top_groups: 1,
                        routed_scale: 1.0,
                    })
                }),
            ),
            (
                "linear.value_heads",
                Box::new(|c| {
                    c.linear_layers = vec![true; c.layers];
                    c.linear = Some(crate::model::config::LinearAttention {
                        key_heads: 2,
                        value_heads: 3,
                        key_dim: 16,
                        value_dim: 16,
                        conv_kernel: 4,
                        grouped: false,
                    })
                }),
            ),
        ];
        for (field, edit) in cases {
            let mut c = cfg();
            edit(&mut c);
            let e = check_config(&c).unwrap_err();
            assert!(e.field.starts_with(field), "{field}: got {e}");
            assert!(!e.limit.is_empty() && !e.value.is_empty(), "{e}");
        }
    }
}
