//! Validation of what a packed model's files say about themselves: the `floe.json` slab tables
//! and dense entries, checked with checked arithmetic, and the dense tensors' shapes against the
//! configuration. Errors are the model's [`FieldError`]s.

use floe_kernels::DType;

use crate::formats::dense::DenseWeights;
use crate::formats::packed::{Manifest, SlabLayout, SlabPart, SLAB_ALIGN, TENSOR_ALIGN};
use crate::model::config::ModelConfig;
use crate::model::validate::{bad, check_config, range, Check, FieldError, MAX_VOCAB, MAX_WIDTH};

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
pub fn check_dense(c: &ModelConfig, dense: &DenseWeights) -> Check {
    let spec = crate::model::spec::ModelSpec::from_config(c)
        .map_err(|e| bad("config", e, "does not describe a model"))?;
    for crate::model::tensors::TensorSpec { role: t, rows, cols } in spec.tensors() {
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
