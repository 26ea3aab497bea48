//! Causal attention of one query (or a chunk of queries) over a KV cache with grouped-query
//! heads: query head h reads key/value head `h / (heads / kv_heads)`.

use super::softmax;
use crate::dot::kernels;

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Factor applied to the scores (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
}

/// Attention for `n` queries at positions `first_pos .. first_pos + n` (query `i` sees keys
/// `0 ..= first_pos + i`). `q` is `n x heads x head_dim`; `k_cache` and `v_cache` are
/// `positions x kv_heads x head_dim` and hold at least `first_pos + n` positions; `out` is
/// `n x heads x head_dim`.
pub fn attention(
    shape: AttentionShape,
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    first_pos: usize,
    n: usize,
    out: &mut [f32],
) {
    let AttentionShape { heads, kv_heads, head_dim: d, scale } = shape;
    assert!(
        kv_heads > 0 && heads % kv_heads == 0,
        "heads {heads} not a multiple of kv heads {kv_heads}"
    );
    let kv_stride = kv_heads * d;
    let visible = first_pos + n;
    assert!(
        k_cache.len() >= visible * kv_stride && v_cache.len() >= visible * kv_stride,
        "KV cache too short"
    );
    assert!(q.len() == n * heads * d && out.len() == n * heads * d, "attention: q/out length");
    let group = heads / kv_heads;
    let dot = kernels().f32;
    let mut scores = vec![0.0f32; visible];
    for t in 0..n {
        let len = first_pos + t + 1;
        for h in 0..heads {
            let kvh = h / group;
            let qh = &q[(t * heads + h) * d..][..d];
            for (p, s) in scores[..len].iter_mut().enumerate() {
                *s = dot(qh, &k_cache[p * kv_stride + kvh * d..][..d]) * scale;
            }
            softmax(&mut scores[..len]);
            let o = &mut out[(t * heads + h) * d..][..d];
            o.fill(0.0);
            for (p, &w) in scores[..len].iter().enumerate() {
                let v = &v_cache[p * kv_stride + kvh * d..][..d];
                for (oi, &vi) in o.iter_mut().zip(v) {
                    *oi += w * vi;
                }
            }
        }
    }
}
