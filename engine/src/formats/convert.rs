//! From a Hugging Face checkpoint's tensors to floe's stored form, where the two differ. floe
//! stores what llama.cpp's GGUF stores, so a GGUF runs in place with no conversion and one
//! runtime serves both: for Qwen3.5 the `(1 + w)` RMSNorm weights are stored as `1 + w`,
//! `A_log` as `A = -exp(A_log)`, the conv1d as `[channels, kernel]`, and the DeltaNet value
//! heads tiled over the key heads (value head `r * key_heads + k` is the checkpoint's
//! `k * (value_heads / key_heads) + r`), as `convert_hf_to_gguf.py` writes them. For MLA,
//! `kv_b_proj` is split as llama.cpp splits it: per head, the key half transposed (`k_b`,
//! `kv_rank x nope`) and the value half (`v_b`, `v x kv_rank`). Qwen3-Next's `in_proj_qkvz`
//! (per key head its q, k, v and z rows) is split into q/k/v (all q heads, all k heads, all v
//! heads) and z as its converter splits it; its value heads stay grouped.

use crate::model::arch::Dense;
use crate::model::config::{LinearAttention, ModelConfig};

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

/// The checkpoint's shape of a tensor floe stores in another shape (rows, cols), if any.
pub fn hf_shape(cfg: &ModelConfig, role: Dense) -> Option<(usize, usize)> {
    match (role, cfg.mla) {
        (Dense::MlaKB(_) | Dense::MlaVB(_), Some(m)) => {
            Some((cfg.heads * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank))
        }
        (Dense::ExpGateBias(_) | Dense::ExpUpBias(_), _) => Some((cfg.experts, 2 * cfg.expert_ffn)),
        (Dense::LinQkv(_) | Dense::LinGate(_), _) => match cfg.linear {
            Some(lin) if lin.grouped => Some((lin.qkv_dim() + lin.value_total(), cfg.hidden)),
            _ => None,
        },
        _ => None,
    }
}

/// `kv_b_proj` (`heads x (nope + v)` rows of `kv_rank`) to `k_b` (per head its `nope` key rows,
/// transposed) or `v_b` (per head its `v` value rows).
fn split_kv_b(values: &[f32], heads: usize, m: &crate::model::config::Mla, key: bool) -> Vec<f32> {
    let (nope, vd, rank) = (m.qk_nope_dim, m.v_head_dim, m.kv_lora_rank);
    let mut out = Vec::with_capacity(heads * rank * if key { nope } else { vd });
    for h in 0..heads {
        let head = &values[h * (nope + vd) * rank..(h + 1) * (nope + vd) * rank];
        if key {
            for r in 0..rank {
                out.extend((0..nope).map(|i| head[i * rank + r]));
            }
        } else {
            out.extend_from_slice(&head[nope * rank..]);
        }
    }
    out
}

/// The rows of a fused `in_proj_qkvz` (llama.cpp's older `ssm_in`: per key head, `key_dim` q
/// rows, `key_dim` k rows, then its value heads' v rows and z rows) that make the q/k/v
/// projection (every q row, every k row, every v row, in key-head order) or, with `gate`, the
/// z rows, in order.
pub fn qkvz_rows(lin: &LinearAttention, gate: bool) -> Vec<usize> {
    let (dk, vr) = (lin.key_dim, lin.value_total() / lin.key_heads.max(1));
    let group = 2 * dk + 2 * vr;
    let rows = |first: usize, n: usize| {
        (0..lin.key_heads).flat_map(move |g| g * group + first..g * group + first + n)
    };
    if gate {
        rows(2 * dk + vr, vr).collect()
    } else {
        rows(0, dk).chain(rows(dk, dk)).chain(rows(2 * dk, vr)).collect()
    }
}

fn split_qkvz(values: &[f32], lin: &LinearAttention, cols: usize, gate: bool) -> Vec<f32> {
    qkvz_rows(lin, gate)
        .into_iter()
        .flat_map(|r| values[r * cols..(r + 1) * cols].iter().copied())
        .collect()
}

/// Rewrites `values` (a tensor of `role` as read from the checkpoint, `cols` wide) into floe's
/// stored form for `cfg`.
pub fn hf_to_stored(cfg: &ModelConfig, role: Dense, values: &mut Vec<f32>, cols: usize) {
    if let (Dense::MlaKB(_) | Dense::MlaVB(_), Some(m)) = (role, cfg.mla) {
        *values = split_kv_b(values, cfg.heads, &m, matches!(role, Dense::MlaKB(_)));
        return;
    }
    // gpt-oss's gate_up_proj_bias: gate in the even columns, up in the odd ones.
    if let Dense::ExpGateBias(_) | Dense::ExpUpBias(_) = role {
        let first = usize::from(matches!(role, Dense::ExpUpBias(_)));
        *values = values.iter().skip(first).step_by(2).copied().collect();
        return;
    }
    if !cfg.arch.is_qwen_hybrid() {
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
    if lin.grouped {
        match role {
            LinQkv(_) | LinGate(_) => {
                *values = split_qkvz(values, &lin, cols, matches!(role, LinGate(_)));
            }
            LinA(_) => values.iter_mut().for_each(|a| *a = -a.exp()),
            _ => {}
        }
        return;
    }
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

    /// llama.cpp's split: `k_b[h][r][i] = kv_b[h * (nope + v) + i][r]`,
    /// `v_b[h][j][r] = kv_b[h * (nope + v) + nope + j][r]`.
    #[test]
    fn kv_b_splits_as_llama_cpp_does() {
        let m = crate::model::config::Mla {
            q_lora_rank: 0,
            kv_lora_rank: 3,
            qk_nope_dim: 2,
            qk_rope_dim: 2,
            v_head_dim: 4,
        };
        let heads = 2;
        let kv_b: Vec<f32> = (0..heads * 6 * 3).map(|i| i as f32).collect();
        let at = |row: usize, r: usize| kv_b[row * 3 + r];
        let k = split_kv_b(&kv_b, heads, &m, true);
        let v = split_kv_b(&kv_b, heads, &m, false);
        for h in 0..heads {
            for r in 0..3 {
                for i in 0..2 {
                    assert_eq!(k[(h * 3 + r) * 2 + i], at(h * 6 + i, r));
                }
                for j in 0..4 {
                    assert_eq!(v[(h * 4 + j) * 3 + r], at(h * 6 + 2 + j, r));
                }
            }
        }
    }
}
