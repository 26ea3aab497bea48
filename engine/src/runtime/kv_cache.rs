//! The KV cache of one attention layer, and the types a session stores its parts in: keys and
//! values apart (keys are the sensitive side), and for MLA's shared row its latent and its
//! RoPE key. A layer's spec says what it caches ([`KvRows`]); this file turns that and the
//! chosen types into row formats and holds the bytes.

use floe_kernels::ops::{KvDType, KvFormat, KvPart, KvView};

use crate::error::{Error, Result};
use crate::model::spec::{KvRows, ModelSpec};

/// The cache types of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvTypes {
    /// Keys of grouped-query attention.
    pub k: KvDType,
    /// Values of grouped-query attention.
    pub v: KvDType,
    /// MLA's latent part (scored as key, summed as value): the key type unless set.
    pub latent: Option<KvDType>,
    /// MLA's RoPE key part: the key type unless set.
    pub rope: Option<KvDType>,
}

impl KvTypes {
    /// One type for every part.
    pub const fn all(t: KvDType) -> Self {
        Self { k: t, v: t, latent: None, rope: None }
    }

    /// Keys and values apart (MLA's parts follow the key type).
    pub const fn split(k: KvDType, v: KvDType) -> Self {
        Self { k, v, latent: None, rope: None }
    }

    /// MLA's latent type.
    pub fn latent(&self) -> KvDType {
        self.latent.unwrap_or(self.k)
    }

    /// MLA's RoPE key type.
    pub fn rope(&self) -> KvDType {
        self.rope.unwrap_or(self.k)
    }

    /// `k=f16 v=q4_0`, with MLA's parts when set apart.
    pub fn describe(&self) -> String {
        let mut s = format!("k={} v={}", self.k.name(), self.v.name());
        if let Some(t) = self.latent {
            s += &format!(" latent={}", t.name());
        }
        if let Some(t) = self.rope {
            s += &format!(" rope={}", t.name());
        }
        s
    }

    /// The row formats of a mixer caching `rows`.
    pub fn layout(&self, rows: KvRows) -> Result<KvLayout> {
        let part = |flag: &str, dtype: KvDType, dim: usize| {
            KvFormat::one(dtype, dim).map(|_| KvPart { dtype, dim }).ok_or_else(|| {
                Error::Invalid(format!(
                    "{flag} {} cannot hold rows of {dim} values (at most {} once padded)",
                    dtype.name(),
                    floe_kernels::ops::MAX_KV_DIM
                ))
            })
        };
        Ok(match rows {
            KvRows::Split { heads, dim } => {
                let (k, v) = (part("--kv-type-k", self.k, dim)?, part("--kv-type-v", self.v, dim)?);
                let one = |p: KvPart| KvFormat::one(p.dtype, p.dim).expect("checked by part()");
                KvLayout { k: one(k), v: one(v), heads, shared: false }
            }
            KvRows::Shared { latent, rope, .. } => {
                let l = part("--kv-type-latent", self.latent(), latent)?;
                let r = part("--kv-type-rope", self.rope(), rope)?;
                let k = KvFormat::two(l, r).ok_or_else(|| {
                    Error::Invalid(format!(
                        "an MLA row of {} + {} values is wider than the cache takes",
                        latent, rope
                    ))
                })?;
                KvLayout { k, v: k.first(), heads: 1, shared: true }
            }
        })
    }

    /// Checks these types against every layer of `spec`: each part fits its type, and MLA's
    /// parts are set only on a model with MLA layers.
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        let rows: Vec<KvRows> = spec.layers.iter().filter_map(|l| l.mixer.kv_rows()).collect();
        let mla = rows.iter().any(|r| matches!(r, KvRows::Shared { .. }));
        for (flag, set) in [("--kv-type-latent", self.latent), ("--kv-type-rope", self.rope)] {
            if set.is_some() && !mla {
                return Err(Error::Invalid(format!(
                    "{flag}: this model has no MLA layer (its cache types are --kv-type-k/-v)"
                )));
            }
        }
        rows.into_iter().try_for_each(|r| self.layout(r).map(|_| ()))
    }
}

/// How one layer's cache is laid out: its key and value row formats and heads per position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLayout {
    /// A key row (one head).
    pub k: KvFormat,
    /// A value row (one head; for a shared row, its first part).
    pub v: KvFormat,
    /// Heads per position.
    pub heads: usize,
    /// Whether keys and values are one row (MLA).
    pub shared: bool,
}

impl KvLayout {
    /// Bytes of one position's keys (all heads).
    pub fn k_bytes(&self) -> usize {
        self.heads * self.k.bytes()
    }

    /// Bytes of one position's values stored apart from its keys (none for a shared row).
    pub fn v_bytes(&self) -> usize {
        if self.shared {
            0
        } else {
            self.heads * self.v.bytes()
        }
    }

    /// Bytes one more position adds.
    pub fn bytes_per_position(&self) -> usize {
        self.k_bytes() + self.v_bytes()
    }
}

/// One attention layer's keys and values for every position of the context. Memory grows
/// with the positions stored (doubling, up to the context), so a short conversation does not
/// hold a whole context's cache.
#[derive(Debug)]
pub struct KvCache {
    layout: KvLayout,
    capacity: usize,
    /// u64 words: 8-byte aligned, and a row keeps each of its parts aligned for its type
    /// (`KvFormat::bytes`), so every part views as f32 / f16 / block slices.
    k: Vec<u64>,
    v: Vec<u64>,
    /// Every query attention read this cache with, in order (only when measuring: see
    /// [`Session::record_queries`](super::Session::record_queries)).
    queries: Option<Vec<f32>>,
    /// A sparse-attention indexer's key per position (f32, `index_dim` each; GLM-5).
    index: Vec<f32>,
    index_dim: usize,
    /// Every selection the indexer made for this layer, in order (when recording queries).
    selections: Option<Vec<usize>>,
}

impl KvCache {
    /// An empty cache of `layout` for up to `capacity` positions.
    pub fn new(layout: KvLayout, capacity: usize) -> Self {
        Self {
            layout,
            capacity,
            k: Vec::new(),
            v: Vec::new(),
            queries: None,
            index: Vec::new(),
            index_dim: 0,
            selections: None,
        }
    }

    /// Notes one query's selected positions (kept if recording queries).
    pub fn note_selection(&mut self, positions: &[usize]) {
        if self.queries.is_some() {
            self.selections.get_or_insert_with(Vec::new).extend_from_slice(positions);
        }
    }

    /// The selections recorded so far (`topk` per query, `usize::MAX` past the visible ones).
    pub fn selections(&self) -> Option<&[usize]> {
        self.selections.as_deref()
    }

    /// Also keeps an indexer key of `dim` values per position.
    pub fn with_index_keys(mut self, dim: usize) -> Self {
        self.index_dim = dim;
        self
    }

    /// Stores position `pos`'s indexer key.
    pub fn store_index_key(&mut self, pos: usize, key: &[f32]) {
        assert!(key.len() == self.index_dim && pos < self.capacity, "indexer key {pos}");
        self.reserve(pos);
        self.index[pos * self.index_dim..(pos + 1) * self.index_dim].copy_from_slice(key);
    }

    /// The indexer keys of positions `0..positions`.
    pub fn index_keys(&self, positions: usize) -> &[f32] {
        &self.index[..positions * self.index_dim]
    }

    /// Position `pos`'s row of a shared cache as f32 (latent, then RoPE key).
    pub fn load_shared(&self, pos: usize, out: &mut [f32]) {
        let l = self.layout;
        let row = l.k_bytes();
        let bytes: &[u8] = bytemuck::cast_slice(&self.k);
        l.k.load(&bytes[pos * row..(pos + 1) * row], out);
    }

    /// Keeps every query attention reads this cache with from now on.
    pub fn record_queries(&mut self) {
        self.queries.get_or_insert_with(Vec::new);
    }

    /// Notes queries attention is about to read this cache with (kept if recording).
    pub fn note_queries(&mut self, q: &[f32]) {
        if let Some(r) = self.queries.as_mut() {
            r.extend_from_slice(q);
        }
    }

    /// The queries recorded so far.
    pub fn queries(&self) -> Option<&[f32]> {
        self.queries.as_deref()
    }

    /// The layout of this cache.
    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// The keys and values of positions `0..positions` as the cache holds them (dequantised
    /// and rotated back): `positions x heads x dim` each; for a shared row, the values are its
    /// first part.
    pub fn rows(&self, positions: usize) -> (Vec<f32>, Vec<f32>) {
        let view = self.view();
        let l = self.layout;
        let (kd, vd) = (l.k.dim(), l.v.dim());
        let n = positions.min(self.held()) * l.heads;
        let (mut k, mut v) = (vec![0.0; n * kd], vec![0.0; n * vd]);
        for i in 0..n {
            l.k.load(&view.k[i * view.k_stride..][..l.k.bytes()], &mut k[i * kd..(i + 1) * kd]);
            l.v.load(&view.v[i * view.v_stride..][..l.v.bytes()], &mut v[i * vd..(i + 1) * vd]);
        }
        (k, v)
    }

    /// Positions the buffers hold now.
    fn held(&self) -> usize {
        self.k.len() * 8 / self.layout.k_bytes()
    }

    /// Grows the buffers to hold position `pos` (doubling, at least 256 positions, at most the
    /// context).
    fn reserve(&mut self, pos: usize) {
        if pos < self.held() {
            return;
        }
        let positions = (pos + 1).next_power_of_two().max(256).min(self.capacity);
        self.k.resize((positions * self.layout.k_bytes()).div_ceil(8), 0);
        self.v.resize((positions * self.layout.v_bytes()).div_ceil(8), 0);
        self.index.resize(positions * self.index_dim, 0.0);
    }

    /// Stores position `pos`'s row of a shared cache.
    pub fn store_shared(&mut self, pos: usize, kv: &[f32]) {
        assert!(self.layout.shared && pos < self.capacity, "KV position {pos} past the context");
        self.reserve(pos);
        let row = self.layout.k_bytes();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.k);
        self.layout.k.store(kv, &mut bytes[pos * row..(pos + 1) * row]);
    }

    /// Stores the keys and values (`heads x dim` each) of position `pos`.
    pub fn store(&mut self, pos: usize, k: &[f32], v: &[f32]) {
        assert!(!self.layout.shared, "a shared cache stores one row per position");
        assert!(pos < self.capacity, "KV position {pos} past the context {}", self.capacity);
        self.reserve(pos);
        let l = self.layout;
        for (cache, x, format) in [(&mut self.k, k, l.k), (&mut self.v, v, l.v)] {
            let (row, head) = (l.heads * format.bytes(), format.bytes());
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(cache);
            let dst = &mut bytes[pos * row..(pos + 1) * row];
            for (h, d) in x.chunks_exact(format.dim()).zip(dst.chunks_exact_mut(head)) {
                format.store(h, d);
            }
        }
    }

    /// The cache as attention reads it.
    pub fn view(&self) -> KvView<'_> {
        let l = self.layout;
        let k = &bytemuck::cast_slice(&self.k)[..self.held() * l.k_bytes()];
        let (v, v_stride) = if l.shared {
            (k, l.k.bytes())
        } else {
            (&bytemuck::cast_slice(&self.v)[..self.held() * l.v_bytes()], l.v.bytes())
        };
        KvView { k_format: l.k, v_format: l.v, k, v, k_stride: l.k.bytes(), v_stride }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * 8 + self.index.len() * 4
    }
}
