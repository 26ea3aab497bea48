//! From a Hugging Face checkpoint's tensors to floe's stored form, where the two differ. floe
//! stores what llama.cpp's GGUF stores, so a GGUF runs in place with no conversion and one
//! runtime serves both: for Qwen3.5 the `(1 + w)` RMSNorm weights are stored as `1 + w`,
//! `A_log` as `A = -exp(A_log)`, the conv1d as `[channels, kernel]`, and the DeltaNet value
//! heads tiled over the key heads (value head `r * key_heads + k` is the checkpoint's
//! `k * (value_heads / key_heads) + r`), as `convert_hf_to_gguf.py` writes them.

use crate::model::arch::Dense;
use crate::model::config::{Arch, LinearAttention, ModelConfig};

/// The permutation of `heads` groups of `width` values that takes the checkpoint's grouped
/// value-head order to the tiled order: `out[tiled] = in[grouped]`.
fn tile_heads(x: &[f32], key_heads: usize, per_key: usize, width: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for k in 0..key_heads {
        for r in 0..per_key {
            let (src, dst) = ((k * per_key + r) * width, (r * key_heads + k) * width);
            out[dst..dst + width].copy_from_slice(&x[src..src + width]);
        }
    }
    out
}

/// Tiles the value heads of `rows` rows of `cols` values (`rows_per_head` rows per head),
/// starting at row `first`.
fn tile_rows(
    values: &mut [f32],
    lin: &LinearAttention,
    first: usize,
    rows_per_head: usize,
    cols: usize,
) {
    let per_key = lin.value_heads / lin.key_heads;
    let part = &mut values[first * cols..];
    let tiled = tile_heads(part, lin.key_heads, per_key, rows_per_head * cols);
    part.copy_from_slice(&tiled);
}

/// Rewrites `values` (a `rows x cols` tensor of `role`, as read from the checkpoint) into
/// floe's stored form for `cfg`.
pub fn hf_to_stored(cfg: &ModelConfig, role: Dense, values: &mut [f32], cols: usize) {
    if cfg.arch != Arch::Qwen35Moe {
        return;
    }
    use Dense::*;
    match role {
        FinalNorm | AttnNorm(_) | FfnNorm(_) | QNorm(_) | KNorm(_) => {
            values.iter_mut().for_each(|w| *w += 1.0)
        }
        _ => {}
    }
    let Some(lin) = cfg.linear else { return };
    if lin.value_heads == lin.key_heads {
        if let LinA(_) = role {
            values.iter_mut().for_each(|a| *a = -a.exp());
        }
        return;
    }
    let (vd, qk) = (lin.value_dim, 2 * lin.key_heads * lin.key_dim);
    match role {
        LinQkv(_) | LinConv(_) => tile_rows(values, &lin, qk, vd, cols),
        LinGate(_) => tile_rows(values, &lin, 0, vd, cols),
        LinBeta(_) | LinAlpha(_) => tile_rows(values, &lin, 0, 1, cols),
        // Vectors: one value per head.
        LinDtBias(_) => tile_rows(values, &lin, 0, 1, 1),
        LinA(_) => {
            tile_rows(values, &lin, 0, 1, 1);
            values.iter_mut().for_each(|a| *a = -a.exp());
        }
        LinOut(_) => {
            let per_key = lin.value_heads / lin.key_heads;
            for row in values.chunks_exact_mut(cols) {
                let tiled = tile_heads(row, lin.key_heads, per_key, vd);
                row.copy_from_slice(&tiled);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The converter's `_reorder_v_heads`: reshape to (key_heads, per_key, width), swap the
    /// first two axes.
    #[test]
    fn value_heads_tile_as_the_converter_reorders_them() {
        let (k, r, w) = (2, 3, 2);
        let x: Vec<f32> = (0..(k * r * w)).map(|i| i as f32).collect();
        let got = tile_heads(&x, k, r, w);
        let mut want = Vec::new();
        for ri in 0..r {
            for ki in 0..k {
                want.extend_from_slice(&x[(ki * r + ri) * w..][..w]);
            }
        }
        assert_eq!(got, want);
        assert_eq!(&got[..4], &[0.0, 1.0, 6.0, 7.0]);
    }
}
