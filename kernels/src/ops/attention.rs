//! Causal attention of one query (or a chunk of queries) over a KV cache with grouped-query
//! heads: query head h reads key/value head `h / (heads / kv_heads)`.
//!
//! Flash-attention style: each (token, head) pair walks its keys in tiles of [`KEY_TILE`] with
//! an online softmax (running maximum and sum, the output rescaled when the maximum moves), so
//! memory is one tile of scores per thread whatever the context. The pairs are spread over the
//! kernel pool; each is computed the same way whichever thread takes it.

use half::f16;

use crate::dot::kernels;
use crate::pool::KernelPool;
use crate::quant::{quantize_q8_0_activations, BlockQ8_0, QK};

/// Keys scored at once before their values are summed.
pub const KEY_TILE: usize = 64;
/// The largest head a Q8_0 cache takes (its query is quantised into a stack buffer).
pub const MAX_Q8_HEAD_DIM: usize = 512;

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
    /// Sliding window: a query sees only its last `window` positions (itself included).
    pub window: Option<usize>,
}

/// How the KV cache stores its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDType {
    /// 4 bytes per value: exact.
    F32,
    /// 2 bytes per value (llama.cpp's default cache type, and floe's command line's).
    F16,
    /// Q8_0 blocks, 34 bytes per 32 values; the head size must be a multiple of 32.
    Q8_0,
}

impl KvDType {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KvDType::F32 => "f32",
            KvDType::F16 => "f16",
            KvDType::Q8_0 => "q8_0",
        }
    }

    /// Parses a command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        [KvDType::F32, KvDType::F16, KvDType::Q8_0].into_iter().find(|d| d.name() == name)
    }

    /// Bytes one head of `head_dim` values takes, or None if this type cannot hold it.
    pub fn head_bytes(self, head_dim: usize) -> Option<usize> {
        match self {
            KvDType::F32 => head_dim.checked_mul(4),
            KvDType::F16 => head_dim.checked_mul(2),
            KvDType::Q8_0 if head_dim.is_multiple_of(QK) && head_dim <= MAX_Q8_HEAD_DIM => {
                Some(head_dim / QK * std::mem::size_of::<BlockQ8_0>())
            }
            KvDType::Q8_0 => None,
        }
    }

    /// Stores one head `x` into `out` (`head_bytes(x.len())` bytes).
    pub fn store(self, x: &[f32], out: &mut [u8]) {
        match self {
            KvDType::F32 => out.copy_from_slice(bytemuck::cast_slice(x)),
            KvDType::F16 => {
                for (o, v) in out.chunks_exact_mut(2).zip(x) {
                    o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            KvDType::Q8_0 => {
                let mut blocks = [BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; MAX_Q8_HEAD_DIM / QK];
                let blocks = &mut blocks[..x.len() / QK];
                quantize_q8_0_activations(x, blocks);
                out.copy_from_slice(bytemuck::cast_slice(blocks));
            }
        }
    }
}

/// One layer's cache as attention reads it: `positions x kv_heads` heads of `dtype`, keys and
/// values, each head `dtype.head_bytes(head_dim)` bytes, positions consecutive.
#[derive(Debug, Clone, Copy)]
pub struct KvView<'a> {
    /// Storage type.
    pub dtype: KvDType,
    /// Keys.
    pub k: &'a [u8],
    /// Values.
    pub v: &'a [u8],
}

/// Attention for `n` queries at positions `first_pos .. first_pos + n` (query `i` sees keys
/// `0 ..= first_pos + i`, or the last `window` of them). `q` is `n x heads x head_dim`; the cache
/// holds at least `first_pos + n` positions; `out` is `n x heads x head_dim`. `sinks` (one logit
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
    let head_bytes = kv.dtype.head_bytes(d).expect("the KV type holds this head size");
    let visible = first_pos + n;
    let need = visible * kv_heads * head_bytes;
    assert!(kv.k.len() >= need && kv.v.len() >= need, "KV cache too short");
    assert!(q.len() == n * heads * d && out.len() == n * heads * d, "attention: q/out length");
    assert!(sinks.is_none_or(|s| s.len() == heads), "attention: one sink per query head");
    let unit = |i: usize, o: &mut [f32]| {
        let (t, h) = (i / heads, i % heads);
        let kvh = h / (heads / kv_heads);
        let qh = &q[i * d..(i + 1) * d];
        let end = first_pos + t + 1;
        let start = shape.window.map_or(0, |w| end.saturating_sub(w.max(1)));
        head(shape, qh, kv, kvh, head_bytes, start..end, sinks.map(|s| s[h]), o);
    };
    match pool {
        Some(p) if p.threads() > 1 && n * heads > 1 => p.for_each_chunk(out, d, &unit),
        _ => out.chunks_mut(d).enumerate().for_each(|(i, o)| unit(i, o)),
    }
}

/// One query head over `positions` of KV head `kvh` (and its sink, if any), into `o`.
#[allow(clippy::too_many_arguments)]
fn head(
    shape: AttentionShape,
    qh: &[f32],
    kv: KvView,
    kvh: usize,
    head_bytes: usize,
    positions: std::ops::Range<usize>,
    sink: Option<f32>,
    o: &mut [f32],
) {
    let k = kernels();
    let stride = shape.kv_heads * head_bytes;
    fn at(cache: &[u8], stride: usize, offset: usize, len: usize, p: usize) -> &[u8] {
        &cache[p * stride + offset..][..len]
    }
    let at = |cache, p| at(cache, stride, kvh * head_bytes, head_bytes, p);
    let mut q8 = [BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; MAX_Q8_HEAD_DIM / QK];
    let q8 = &mut q8[..if kv.dtype == KvDType::Q8_0 { shape.head_dim / QK } else { 0 }];
    if kv.dtype == KvDType::Q8_0 {
        quantize_q8_0_activations(qh, q8);
    }
    let score = |p: usize| -> f32 {
        let key = at(kv.k, p);
        let s = match kv.dtype {
            KvDType::F32 => (k.f32)(bytemuck::cast_slice(key), qh),
            KvDType::F16 => (k.f16)(bytemuck::cast_slice(key), qh),
            KvDType::Q8_0 => (k.q8_0)(bytemuck::cast_slice(key), q8),
        };
        s * shape.scale
    };
    let mut scores = [0.0f32; KEY_TILE];
    // A sink is a score whose value is zero: it starts the running maximum and sum.
    let (mut max, mut sum) = match sink {
        Some(s) => (s, 1.0f32),
        None => (f32::NEG_INFINITY, 0.0f32),
    };
    o.fill(0.0);
    let (mut start, len) = (positions.start, positions.end);
    while start < len {
        let tile = (len - start).min(KEY_TILE);
        let s = &mut scores[..tile];
        for (j, sj) in s.iter_mut().enumerate() {
            *sj = score(start + j);
        }
        let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        if tile_max > max {
            // Rescale what has been summed so far to the new maximum.
            let factor = (max - tile_max).exp();
            sum *= factor;
            o.iter_mut().for_each(|v| *v *= factor);
            max = tile_max;
        }
        for (j, &sj) in s.iter().enumerate() {
            let w = (sj - max).exp();
            sum += w;
            let value = at(kv.v, start + j);
            match kv.dtype {
                KvDType::F32 => (k.axpy_f32)(w, bytemuck::cast_slice(value), o),
                KvDType::F16 => (k.axpy_f16)(w, bytemuck::cast_slice(value), o),
                KvDType::Q8_0 => {
                    let blocks: &[BlockQ8_0] = bytemuck::cast_slice(value);
                    for (b, ob) in blocks.iter().zip(o.chunks_exact_mut(QK)) {
                        let a = w * b.d.to_f32();
                        ob.iter_mut().zip(&b.qs).for_each(|(y, &q)| *y = a.mul_add(q as f32, *y));
                    }
                }
            }
        }
        start += tile;
    }
    let inv = 1.0 / sum;
    o.iter_mut().for_each(|v| *v *= inv);
}
