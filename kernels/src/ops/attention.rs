//! Causal attention of one query (or a chunk of queries) over a KV cache with grouped-query
//! heads: query head h reads key/value head `h / (heads / kv_heads)`.
//!
//! Flash-attention style: for each token, the query heads that share a KV head walk its keys
//! together (up to [`MAX_HEAD_GROUP`] at once: each cached row is decoded once for all of them)
//! in tiles of [`KEY_TILE`] with an online softmax per head (running maximum and sum, the
//! output rescaled when the maximum moves), so memory is one tile of scores per head whatever
//! the context. The (token, head group) units are spread over the kernel pool; each is computed
//! the same way whichever thread takes it.

use std::cell::RefCell;

use crate::kv::{KvFormat, RowReader};
use crate::pool::KernelPool;

pub use crate::kv::KvDType;

/// Keys scored at once before their values are summed.
pub const KEY_TILE: usize = 64;
/// Most query heads that walk a KV head's positions together (each cached row is decoded once
/// for all of them).
pub const MAX_HEAD_GROUP: usize = 8;

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
    let visible = first_pos + n;
    check(shape, q, kv, visible, n, out);
    assert!(sinks.is_none_or(|s| s.len() == heads), "attention: one sink per query head");
    run_units(shape, (n, kv.v_format.dim()), out, pool, &|t, first_head, sub, o| {
        let qs = &q[(t * heads + first_head) * d..][..sub * d];
        let end = first_pos + t + 1;
        let start = shape.window.map_or(0, |w| end.saturating_sub(w.max(1)));
        let sinks = sinks.map(|s| &s[first_head..first_head + sub]);
        head_group(
            shape,
            qs,
            kv,
            first_head / (heads / kv_heads),
            Rows::Span(start..end),
            sinks,
            o,
        );
    });
}

/// Attention of one token's query heads (`q`, `heads x head_dim`) over the cached `positions`
/// only, in that order: sparse attention, where an indexer picks which positions a query reads
/// (DeepSeek's DSA). `out` is `heads x v_dim`. The same tiled online softmax as [`attention`]:
/// `positions` `0..=p` in order give [`attention`]'s result for a query at `p`, bit for bit.
pub fn attention_at(
    shape: AttentionShape,
    q: &[f32],
    kv: KvView,
    positions: &[usize],
    out: &mut [f32],
    pool: Option<&KernelPool>,
) {
    let AttentionShape { heads, kv_heads, head_dim: d, .. } = shape;
    assert!(shape.window.is_none(), "attention_at: a selection has no window");
    assert!(!positions.is_empty(), "attention_at: no position to read");
    let visible = positions.iter().max().map_or(0, |&p| p + 1);
    check(shape, q, kv, visible, 1, out);
    run_units(shape, (1, kv.v_format.dim()), out, pool, &|_, first_head, sub, o| {
        let qs = &q[first_head * d..][..sub * d];
        let kvh = first_head / (heads / kv_heads);
        head_group(shape, qs, kv, kvh, Rows::List(positions), None, o);
    });
}

/// The shape checks both entry points make: `n` queries, `visible` cached positions.
fn check(shape: AttentionShape, q: &[f32], kv: KvView, visible: usize, n: usize, out: &[f32]) {
    let AttentionShape { heads, kv_heads, head_dim: d, .. } = shape;
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "heads {heads} not a multiple of kv heads {kv_heads}"
    );
    let vd = kv.v_format.dim();
    assert!(kv.k_format.dim() == d && kv.v_format.parts().len() == 1, "attention: KV formats");
    let (kneed, vneed) = (visible * kv_heads * kv.k_stride, visible * kv_heads * kv.v_stride);
    assert!(kv.k.len() >= kneed && kv.v.len() >= vneed, "KV cache too short");
    assert!(q.len() == n * heads * d && out.len() == n * heads * vd, "attention: q/out length");
}

/// One (token, first query head, heads in the group, output) unit of attention.
type HeadGroupUnit<'a> = dyn Fn(usize, usize, usize, &mut [f32]) + Sync + 'a;

/// Runs `unit(token, first_head, sub, out)` for every (token, group of `sub` query heads
/// sharing a KV head) of `n` tokens with values `vd` wide, spread over the pool's threads.
fn run_units(
    shape: AttentionShape,
    (n, vd): (usize, usize),
    out: &mut [f32],
    pool: Option<&KernelPool>,
    unit: &HeadGroupUnit<'_>,
) {
    let AttentionShape { heads, kv_heads, .. } = shape;
    // Query heads sharing a KV head walk its positions together, in groups of `sub`.
    let group = heads / kv_heads;
    let sub = (1..=group.min(MAX_HEAD_GROUP)).rev().find(|s| group.is_multiple_of(*s)).unwrap_or(1);
    let units_per_token = heads / sub;
    let unit = |i: usize, o: &mut [f32]| {
        unit(i / units_per_token, (i % units_per_token) * sub, sub, o);
    };
    match pool {
        Some(p) if p.threads() > 1 && n * units_per_token > 1 => {
            p.for_each_chunk(out, sub * vd, &unit)
        }
        _ => out.chunks_mut(sub * vd).enumerate().for_each(|(i, o)| unit(i, o)),
    }
}

/// The cached positions a group of query heads reads.
#[derive(Clone)]
enum Rows<'a> {
    /// A causal span (with its window applied).
    Span(std::ops::Range<usize>),
    /// An indexer's selection.
    List(&'a [usize]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Span(r) => r.len(),
            Rows::List(l) => l.len(),
        }
    }

    /// The `i`-th position read.
    #[inline]
    fn at(&self, i: usize) -> usize {
        match self {
            Rows::Span(r) => r.start + i,
            Rows::List(l) => l[i],
        }
    }
}

thread_local! {
    /// Per-thread buffers of `head_group`: sized by the first call of each shape, then reused
    /// (attention allocates nothing in steady state).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A group of query heads (`qs`, `sub x head_dim`) over the `rows` of KV head `kvh` (and
/// their sinks, if any), into `o` (`sub x v_dim`). Each key and value row is decoded once into
/// f32 in its format's (rotated, padded) space and used by every head of the group; values are
/// summed in that space and rotated back once at the end.
fn head_group(
    shape: AttentionShape,
    qs: &[f32],
    kv: KvView,
    kvh: usize,
    rows: Rows,
    sinks: Option<&[f32]>,
    o: &mut [f32],
) {
    let (keys, values) = (RowReader::new(kv.k_format), RowReader::new(kv.v_format));
    let (kp, vp, d, vd) =
        (keys.padded_dim(), values.padded_dim(), shape.head_dim, kv.v_format.dim());
    let sub = qs.len() / d;
    let (k_row, v_row) = (shape.kv_heads * kv.k_stride, shape.kv_heads * kv.v_stride);
    let (k_bytes, v_bytes) = (kv.k_format.bytes(), kv.v_format.bytes());
    let key = |p: usize| &kv.k[p * k_row + kvh * kv.k_stride..][..k_bytes];
    let value = |p: usize| &kv.v[p * v_row + kvh * kv.v_stride..][..v_bytes];
    let dots = crate::dot::kernels();
    SCRATCH.with_borrow_mut(|scratch| {
        let need = sub * (kp + vp + KEY_TILE) + kp + vp;
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (q, rest) = scratch.split_at_mut(sub * kp);
        let (acc, rest) = rest.split_at_mut(sub * vp);
        let (scores, rest) = rest.split_at_mut(sub * KEY_TILE);
        let (kbuf, rest) = rest.split_at_mut(kp);
        let vbuf = &mut rest[..vp];
        for (h, qh) in q.chunks_exact_mut(kp).enumerate() {
            keys.prepare_query(&qs[h * d..(h + 1) * d], qh);
        }
        acc.fill(0.0);
        // A sink is a score whose value is zero: it starts the running maximum and sum.
        let mut max = [f32::NEG_INFINITY; MAX_HEAD_GROUP];
        let mut sum = [0.0f32; MAX_HEAD_GROUP];
        if let Some(s) = sinks {
            for h in 0..sub {
                (max[h], sum[h]) = (s[h], 1.0);
            }
        }
        let (mut start, len) = (0, rows.len());
        while start < len {
            let tile = (len - start).min(KEY_TILE);
            for j in 0..tile {
                let row = keys.decode(key(rows.at(start + j)), kbuf);
                for (h, qh) in q.chunks_exact(kp).enumerate() {
                    scores[h * KEY_TILE + j] = (dots.f32)(row, qh) * shape.scale;
                }
            }
            for h in 0..sub {
                let s = &scores[h * KEY_TILE..][..tile];
                let tile_max = s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                if tile_max > max[h] {
                    // Rescale what has been summed so far to the new maximum.
                    let factor = (max[h] - tile_max).exp();
                    sum[h] *= factor;
                    acc[h * vp..(h + 1) * vp].iter_mut().for_each(|v| *v *= factor);
                    max[h] = tile_max;
                }
            }
            for j in 0..tile {
                let row = values.decode(value(rows.at(start + j)), vbuf);
                for (h, ah) in acc.chunks_exact_mut(vp).enumerate() {
                    let w = (scores[h * KEY_TILE + j] - max[h]).exp();
                    sum[h] += w;
                    (dots.axpy_f32)(w, row, ah);
                }
            }
            start += tile;
        }
        for (h, (ah, oh)) in acc.chunks_exact_mut(vp).zip(o.chunks_exact_mut(vd)).enumerate() {
            values.unrotate(ah);
            values.unpad(ah, oh);
            let inv = 1.0 / sum[h];
            oh.iter_mut().for_each(|v| *v *= inv);
        }
    });
}
