//! Validation of everything a model file says about itself, once, at open: `floe.json`, a
//! `config.json`, GGUF metadata. Each check names the field, the value found and the limit, in
//! one error type ([`FieldError`]), so no impossible value reaches the forward pass, a `u16`
//! expert key, an offset sum or a slice.

use floe_kernels::DType;

use super::config::ModelConfig;
use super::format::{Manifest, SlabLayout, SlabPart, SLAB_ALIGN, TENSOR_ALIGN};

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

type Check = Result<(), FieldError>;

fn bad(field: impl Into<String>, value: impl ToString, limit: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), value: value.to_string(), limit: limit.into() }
}

/// `lo <= v <= hi`.
fn range(field: &str, v: usize, lo: usize, hi: usize) -> Check {
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
    if let Some(&id) = c.eos_token_ids.iter().find(|&&id| id as usize >= c.vocab) {
        return Err(bad("eos_token_ids", id, format!("must be below vocab ({})", c.vocab)));
    }
    Ok(())
}

fn dtype_of(field: &str, name: &str) -> Result<DType, FieldError> {
    name.parse().map_err(|_| bad(field, format!("{name:?}"), "must be a dtype floe knows"))
}

/// Bytes of `rows` rows of `cols` values of `dtype`, or why that is impossible.
fn matrix_bytes(field: &str, dtype: DType, rows: usize, cols: usize) -> Result<usize, FieldError> {
    let rb =
        dtype.row_bytes(cols).map_err(|e| bad(format!("{field}.cols"), cols, e.to_string()))?;
    rb.checked_mul(rows).ok_or_else(|| bad(format!("{field}.rows"), rows, "overflows a size"))
}

fn check_part(field: &str, p: &SlabPart, main: DType, slab_bytes: usize) -> Check {
    let dtype = match &p.dtype {
        Some(t) => dtype_of(&format!("{field}.dtype"), t)?,
        None => main,
    };
    range(&format!("{field}.rows"), p.rows, 1, MAX_WIDTH)?;
    range(&format!("{field}.cols"), p.cols, 1, MAX_WIDTH)?;
    let need = matrix_bytes(field, dtype, p.rows, p.cols)?;
    if p.bytes != need {
        return Err(bad(
            format!("{field}.bytes"),
            p.bytes,
            format!("must be {need} for {}x{} {dtype}", p.rows, p.cols),
        ));
    }
    if !p.offset.is_multiple_of(TENSOR_ALIGN) {
        return Err(bad(
            format!("{field}.offset"),
            p.offset,
            format!("must be a multiple of {TENSOR_ALIGN}"),
        ));
    }
    match p.offset.checked_add(p.bytes) {
        Some(end) if end <= slab_bytes => Ok(()),
        _ => Err(bad(
            format!("{field}.offset"),
            p.offset,
            format!("offset + {} bytes must fit the {slab_bytes}-byte slab", p.bytes),
        )),
    }
}

fn check_layout(field: &str, s: &SlabLayout, hidden: usize, ffn: usize) -> Check {
    let main = dtype_of(&format!("{field}.dtype"), &s.dtype)?;
    if s.slab_bytes == 0 || !s.slab_bytes.is_multiple_of(SLAB_ALIGN) || s.slab_bytes > 1 << 30 {
        return Err(bad(
            format!("{field}.slab_bytes"),
            s.slab_bytes,
            format!("must be a positive multiple of {SLAB_ALIGN}, at most 1 GiB"),
        ));
    }
    for (name, p, rows, cols) in
        [("gate", &s.gate, ffn, hidden), ("up", &s.up, ffn, hidden), ("down", &s.down, hidden, ffn)]
    {
        let f = format!("{field}.{name}");
        if (p.rows, p.cols) != (rows, cols) {
            return Err(bad(
                &f,
                format!("{}x{}", p.rows, p.cols),
                format!("must be {rows}x{cols} (config hidden and expert_ffn)"),
            ));
        }
        check_part(&f, p, main, s.slab_bytes)?;
    }
    Ok(())
}

/// Everything in a `floe.json`: the config, every dense entry, the slab layouts and the slab
/// table (each MoE layer once, one checksum per expert, offsets that add up without wrapping).
pub fn check_manifest(m: &Manifest) -> Check {
    let c = &m.config;
    check_config(c).map_err(|e| FieldError { field: format!("config.{}", e.field), ..e })?;
    for (i, d) in m.dense.iter().enumerate() {
        let f = format!("dense[{i}] ({})", d.name);
        let dtype = dtype_of(&format!("{f}.dtype"), &d.dtype)?;
        range(&format!("{f}.rows"), d.rows, 1, MAX_VOCAB.max(MAX_WIDTH))?;
        range(&format!("{f}.cols"), d.cols, 1, MAX_VOCAB.max(MAX_WIDTH))?;
        let need = matrix_bytes(&f, dtype, d.rows, d.cols)?;
        if d.bytes != need as u64 {
            return Err(bad(format!("{f}.bytes"), d.bytes, format!("must be {need}")));
        }
        if !d.offset.is_multiple_of(TENSOR_ALIGN as u64) || d.offset.checked_add(d.bytes).is_none()
        {
            return Err(bad(
                format!("{f}.offset"),
                d.offset,
                format!("must be a multiple of {TENSOR_ALIGN} with offset + bytes in range"),
            ));
        }
    }
    let moe = c.moe_layer_count();
    if moe == 0 {
        return Ok(());
    }
    check_layout("slab", &m.slab, c.hidden, c.expert_ffn)?;
    let mut seen = vec![false; c.layers];
    for (i, l) in m.expert_layers.iter().enumerate() {
        let f = format!("expert_layers[{i}]");
        if l.layer >= c.layers || !c.moe_layers[l.layer] || seen[l.layer] {
            return Err(bad(
                format!("{f}.layer"),
                l.layer,
                "must be an MoE layer of the config, listed once",
            ));
        }
        seen[l.layer] = true;
        let layout = match &l.layout {
            Some(own) => {
                check_layout(&format!("{f}.layout"), own, c.hidden, c.expert_ffn)?;
                if own.slab_bytes > m.slab.slab_bytes {
                    return Err(bad(
                        format!("{f}.layout.slab_bytes"),
                        own.slab_bytes,
                        format!("must be at most slab.slab_bytes ({})", m.slab.slab_bytes),
                    ));
                }
                own
            }
            None => &m.slab,
        };
        if l.xxh3.len() != c.experts {
            return Err(bad(
                format!("{f}.xxh3"),
                format!("a list of {}", l.xxh3.len()),
                format!("must have one checksum per expert ({})", c.experts),
            ));
        }
        let end = (layout.slab_bytes as u64)
            .checked_mul(c.experts as u64)
            .and_then(|b| l.base.checked_add(b));
        if !l.base.is_multiple_of(SLAB_ALIGN as u64) || end.is_none() {
            return Err(bad(
                format!("{f}.base"),
                l.base,
                format!("must be a multiple of {SLAB_ALIGN} with all slabs in range"),
            ));
        }
    }
    if let Some(l) = (0..c.layers).find(|&l| c.moe_layers[l] && !seen[l]) {
        return Err(bad(
            "expert_layers",
            format!("no entry for layer {l}"),
            "every MoE layer needs its slabs",
        ));
    }
    Ok(())
}

/// The dense tensors present against the shapes the configuration implies (the forward pass
/// slices by those): a norm of the wrong width or a projection of the wrong shape is an error
/// at load, not a panic in the first token. Absent tensors are reported where they are needed.
pub fn check_dense(c: &ModelConfig, dense: &super::format::DenseWeights) -> Check {
    for (t, rows, cols) in super::pack::dense_plan(c) {
        let key = t.key();
        let Some((dtype, r, k)) = dense.shape(&key) else { continue };
        if (r, k) != (rows, cols) {
            return Err(bad(
                format!("tensor {key}"),
                format!("{r}x{k}"),
                format!("must be {rows}x{cols} for this config"),
            ));
        }
        if rows == 1 && dtype != DType::F32 {
            return Err(bad(format!("tensor {key}.dtype"), dtype, "vectors are stored f32"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        let shape = crate::model::synth::SynthShape::preset("tiny").unwrap();
        shape.config()
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
