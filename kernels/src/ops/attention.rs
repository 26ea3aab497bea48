//! Causal attention of one query (or a chunk of queries) over a KV cache with grouped-query
//! heads: query head h reads key/value head `h / (heads / kv_heads)`.
//!
//! Flash-attention style: each (token, head) pair walks its keys in tiles of [`KEY_TILE`] with
//! an online softmax (running maximum and sum, the output rescaled when the maximum moves), so
//! memory is one tile of scores per thread whatever the context. The pairs are spread over the
//! kernel pool; each is computed the same way whichever thread takes it.

use crate::kv::{rotation, KvFormat, PreparedQuery, ValueReader, MAX_KV_DIM};
use crate::pool::KernelPool;

pub use crate::kv::KvDType;

/// Keys scored at once before their values are summed.
pub const KEY_TILE: usize = 64;

/// Head layout of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Channels per query and key head.
    pub head_dim: usize,
    /// Factor applied to the scores (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Sliding window: a query sees only its last `window` positions (itself included).
    pub window: Option<usize>,
}

/// One layer's cache as attention reads it. Position `p`'s key of KV head `h` is the
/// `k_format.bytes()` bytes at `(p * kv_heads + h) * k_stride` of `k`, its value likewise in
/// `v`. A shared cache (MLA) passes the same bytes as both, its value format the row's first
/// part.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    /// How a key row is stored.
    pub k_format: KvFormat,
    /// How a value row is stored (one part).
    pub v_format: KvFormat,
    /// Keys.
    pub k: &'a [u8],
    /// Values.
    pub v: &'a [u8],
    /// Bytes from one key head to the next.
    pub k_stride: usize,
    /// Bytes from one value head to the next.
    pub v_stride: usize,
}

/// Attention for `n` queries at positions `first_pos .. first_pos + n` (query `i` sees keys
/// `0 ..= first_pos + i`, or the last `window` of them). `q` is `n x heads x head_dim`; the cache
/// holds at least `first_pos + n` positions; `out` is `n x heads x v_dim` (the value format's
/// width). `sinks` (one logit
/// per query head, gpt-oss) join each softmax's denominator without a value. With a pool, the
/// (token, head) pairs are spread over its threads.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    shape: AttentionShape,
    q: &[f32],
    kv: KvView,
    first_pos: usize,
    n: usize,
    out: &mut [f32],
    sinks: Option<&[f32]>,
    pool: Option<&KernelPool>,
) {
    let AttentionShape { heads, kv_heads, head_dim: d, .. } = shape;
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "heads {heads} not a multiple of kv heads {kv_heads}"
    );
    let vd = kv.v_format.dim();
    assert!(kv.k_format.dim() == d && kv.v_format.parts().len() == 1, "attention: KV formats");
    let visible = first_pos + n;
    let (kneed, vneed) = (visible * kv_heads * kv.k_stride, visible * kv_heads * kv.v_stride);
    assert!(kv.k.len() >= kneed && kv.v.len() >= vneed, "KV cache too short");
    assert!(q.len() == n * heads * d && out.len() == n * heads * vd, "attention: q/out length");
    assert!(sinks.is_none_or(|s| s.len() == heads), "attention: one sink per query head");
    let unit = |i: usize, o: &mut [f32]| {
        let (t, h) = (i / heads, i % heads);
        let kvh = h / (heads / kv_heads);
        let qh = &q[i * d..(i + 1) * d];
        let end = first_pos + t + 1;
        let start = shape.window.map_or(0, |w| end.saturating_sub(w.max(1)));
        head(shape, qh, kv, kvh, start..end, sinks.map(|s| s[h]), o);
    };
    match pool {
        Some(p) if p.threads() > 1 && n * heads > 1 => p.for_each_chunk(out, vd, &unit),
        _ => out.chunks_mut(vd).enumerate().for_each(|(i, o)| unit(i, o)),
    }
}

/// One query head over `positions` of KV head `kvh` (and its sink, if any), into `o`. Values
/// are summed in the value format's (rotated, padded) space and rotated back once at the end.
fn head(
    shape: AttentionShape,
    qh: &[f32],
    kv: KvView,
    kvh: usize,
    positions: std::ops::Range<usize>,
    sink: Option<f32>,
    o: &mut [f32],
) {
    let query = PreparedQuery::new(kv.k_format, qh);
    let (k_row, v_row) = (shape.kv_heads * kv.k_stride, shape.kv_heads * kv.v_stride);
    let (k_bytes, v_bytes) = (kv.k_format.bytes(), kv.v_format.bytes());
    let key = |p: usize| &kv.k[p * k_row + kvh * kv.k_stride..][..k_bytes];
    let value = |p: usize| &kv.v[p * v_row + kvh * kv.v_stride..][..v_bytes];
    let vpart = kv.v_format.parts()[0];
    let values = ValueReader::new(vpart);
    let mut acc = [0.0f32; MAX_KV_DIM];
    let acc = &mut acc[..kv.v_format.padded_dim()];
    let mut scores = [0.0f32; KEY_TILE];
    // A sink is a score whose value is zero: it starts the running maximum and sum.
    let (mut max, mut sum) = match sink {
        Some(s) => (s, 1.0f32),
        None => (f32::NEG_INFINITY, 0.0f32),
    };
    let (mut start, len) = (positions.start, positions.end);
    while start < len {
        let tile = (len - start).min(KEY_TILE);
        let s = &mut scores[..tile];
        for (j, sj) in s.iter_mut().enumerate() {
            *sj = query.dot(key(start + j)) * shape.scale;
        }
        let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        if tile_max > max {
            // Rescale what has been summed so far to the new maximum.
            let factor = (max - tile_max).exp();
            sum *= factor;
            acc.iter_mut().for_each(|v| *v *= factor);
            max = tile_max;
        }
        for (j, &sj) in s.iter().enumerate() {
            let w = (sj - max).exp();
            sum += w;
            values.accumulate(w, value(start + j), acc);
        }
        start += tile;
    }
    if vpart.dtype.rotated() {
        rotation::unrotate(acc);
    }
    let inv = 1.0 / sum;
    o.iter_mut().zip(acc.iter()).for_each(|(y, v)| *y = v * inv);
}
