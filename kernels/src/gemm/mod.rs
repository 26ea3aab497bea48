//! Prefill products as register-tiled GEMM: a tile of weight rows against a tile of tokens,
//! every weight load shared by the tile's tokens and every activation load by its rows.
//!
//! Activations are packed once per product (`WideActs`, `Wide32Acts`, `PackedF32`);
//! weights are read in place (GGUF and floe's slabs alike) and unpacked per chunk of rows, so
//! nothing is repacked at load. Which tile a weight type
//! runs is its row in the type table (`Tile`); the tiles run on AVX-512 (F, BW, VNNI) where
//! the CPU has it; elsewhere `enabled` is false and the caller keeps its row-group path.
//! `FLOE_ISA` forcing another ISA turns them off too, so a forced ISA tests one ISA end to end.

// Only the x86_64 tiles read the packed activations and write through `RowsOut`; elsewhere
// `enabled` is false and these types sit unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
pub(crate) mod codes;
#[cfg(target_arch = "x86_64")]
pub(crate) mod float;
#[cfg(target_arch = "x86_64")]
pub(crate) mod kquant;
#[cfg(target_arch = "x86_64")]
pub(crate) mod wide;
#[cfg(target_arch = "x86_64")]
pub(crate) mod wide32;
#[cfg(target_arch = "x86_64")]
pub(crate) use wide::WideActs;
#[cfg(target_arch = "x86_64")]
pub(crate) use wide32::Wide32Acts;
/// Elsewhere nothing packs for the wide tiles.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Default)]
pub(crate) struct WideActs;
/// Elsewhere nothing packs for the wide tiles.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Default)]
pub(crate) struct Wide32Acts;

use std::sync::OnceLock;

use crate::dtype::DType;
use crate::quant::BlockQ8K;

/// Tokens per float tile.
pub(crate) const TILE_TOKENS: usize = 4;
/// Rows per float tile.
pub(crate) const TILE_ROWS: usize = 4;

/// Every token's f32 activations, as they are (a borrowed view with its row length).
pub(crate) struct PackedF32<'x> {
    xs: &'x [f32],
    /// Values per token.
    pub cols: usize,
}

impl<'x> PackedF32<'x> {
    pub(crate) fn new(xs: &'x [f32], cols: usize) -> Self {
        Self { xs, cols }
    }
    pub(crate) fn tokens(&self) -> usize {
        self.xs.len() / self.cols
    }
    pub(crate) fn token(&self, t: usize) -> &'x [f32] {
        &self.xs[t * self.cols..(t + 1) * self.cols]
    }
}

/// The same for float weights against f32 activations.
pub(crate) type FloatTileFn = fn(&[u8], usize, usize, &PackedF32, &RowsOut);
/// The same for super-block weights (`per_row` of them per row) against every token's Q8_K
/// blocks.
pub(crate) type SuperTileFn = fn(&[u8], usize, usize, &[BlockQ8K], usize, &RowsOut);

/// The same for super-block weights against the activations packed for outer products.
pub(crate) type WideTileFn = fn(&[u8], usize, usize, &WideActs, usize, &RowsOut);
/// The same for 32-value block weights against the activations packed for outer products.
pub(crate) type Wide32TileFn = fn(&[u8], usize, usize, &Wide32Acts, usize, &RowsOut);

/// A weight type's GEMM tile (AVX-512), by the activations it reads: fields of the type table
/// (the prefill tile, and the exact one for tokens that must equal their decode), so a new
/// type's tiles are its row's business.
#[derive(Clone, Copy)]
pub(crate) enum Tile {
    /// Q8_K activations; the tile folds its integer sums into the matvec kernel's lanes, so a
    /// token's outputs equal matvec's bit for bit.
    Super(SuperTileFn),
    /// Q8_K activations packed for outer products (`wide.rs`): the fastest, rounded its own way.
    Wide(WideTileFn),
    /// Q8_0 activations packed for outer products (`wide32.rs`), the same for 32-value blocks.
    Wide32(Wide32TileFn),
    /// f32 activations.
    Float(FloatTileFn),
}

impl Tile {
    /// Whether a token's outputs equal the matvec kernels' bit for bit (then the tile may run
    /// where every token must get what it gets alone).
    pub(crate) fn exact(self) -> bool {
        matches!(self, Tile::Super(_))
    }
}

/// Whether the GEMM tiles run here: the CPU has AVX-512 F/BW/VNNI and `FLOE_ISA` does not force
/// another ISA (`dot::forced_isa`: an empty or unknown value forces none).
pub(crate) fn enabled() -> bool {
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        if crate::dot::forced_isa().is_some_and(|isa| isa != crate::dot::Isa::Avx512) {
            return false;
        }
        cfg!(target_arch = "x86_64") && crate::dot::Isa::Avx512.supported()
    })
}

/// The prefill tile of `dtype` (`exact`: the one whose tokens equal matvec's), if it has one
/// and the tiles run here.
pub(crate) fn tile_for(dtype: DType, exact: bool) -> Option<Tile> {
    let t = dtype.traits();
    if exact { t.tile.filter(|t| t.exact()).or(t.exact_tile) } else { t.tile }.filter(|_| enabled())
}

/// The output of one product (`tokens x rows`, row-major) shared by the tasks computing it,
/// each of which owns a disjoint range of rows: a task writes `(t, r)` only for its own `r`.
pub(crate) struct RowsOut<'y> {
    ptr: *mut f32,
    tokens: usize,
    rows: usize,
    _borrow: std::marker::PhantomData<&'y mut [f32]>,
}

// SAFETY: tasks write disjoint elements (their own rows), and the exclusive borrow held for 'y
// keeps everyone else away until the product returns; see `write`.
unsafe impl Sync for RowsOut<'_> {}

impl<'y> RowsOut<'y> {
    pub(crate) fn new(ys: &'y mut [f32], rows: usize) -> Self {
        let tokens = ys.len() / rows.max(1);
        Self { ptr: ys.as_mut_ptr(), tokens, rows, _borrow: std::marker::PhantomData }
    }

    /// Rows `first..first + m` of token `t`, as a slice.
    ///
    /// # Safety
    /// As for [`Self::write`], for every element of the range.
    pub(crate) unsafe fn token_rows_mut(&self, t: usize, first: usize, m: usize) -> &'y mut [f32] {
        assert!(t < self.tokens && first + m <= self.rows, "rows {first}+{m} out of range");
        // SAFETY: in bounds by the assert; exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(t * self.rows + first), m) }
    }

    /// Writes output `(t, r)`.
    ///
    /// # Safety
    /// No other thread accesses `(t, r)` during this product: row `r` belongs to the caller's
    /// task (row ranges are handed out once each, by index).
    #[inline]
    pub(crate) unsafe fn write(&self, t: usize, r: usize, v: f32) {
        assert!(t < self.tokens && r < self.rows, "output ({t}, {r}) out of range");
        // SAFETY: in bounds by the assert; exclusive by the caller's contract.
        unsafe { self.ptr.add(t * self.rows + r).write(v) }
    }
}
