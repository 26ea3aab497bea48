//! Prefill products as register-tiled GEMM: a tile of weight rows against a tile of tokens,
//! every weight load shared by the tile's tokens and every activation load by its rows.
//!
//! Activations are packed once per product ([`PackedQ8`], [`PackedF32`]); weights are read in
//! place (GGUF and floe's slabs alike), so nothing is repacked at load. The tiles run on AVX-512
//! (F, BW, VNNI) where the CPU has it; elsewhere [`GemmKernels::select`] returns None and the
//! caller keeps its row-group path. `FLOE_ISA` set to anything but `avx512` turns them off too,
//! so a forced ISA tests one ISA end to end.

// Only the x86_64 tiles read the packed activations and write through `RowsOut`; elsewhere
// `GemmKernels::select` is None and these types sit unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod kquant;

use std::sync::OnceLock;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::quant::{
    quantize_q8_0_activations, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8K, BlockQ8_0, QK,
};

/// Tokens per tile.
pub(crate) const TILE_TOKENS: usize = 4;
/// Rows per tile.
pub(crate) const TILE_ROWS: usize = 4;

/// Two consecutive Q8_0 activation blocks of one token laid out for 512-bit integer dot
/// products: the 64 quantised values, the negated sum of each group of four (the correction the
/// unsigned-times-signed product needs, one 32-bit lane per group) and the two scales as f32,
/// eight lanes each.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Q8Pair {
    pub qs: [i8; 2 * QK],
    pub neg_sums: [i32; 16],
    pub d: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<Q8Pair>() == 192);

impl Q8Pair {
    const ZERO: Q8Pair = Q8Pair { qs: [0; 2 * QK], neg_sums: [0; 16], d: [0.0; 16] };
}

/// Every token's activations quantised to Q8_0 (llama.cpp's activation rounding) and packed in
/// block pairs; an odd last block is paired with a zero block.
#[derive(Default)]
pub(crate) struct PackedQ8 {
    pairs: Vec<Q8Pair>,
    per_token: usize,
    /// Tokens packed.
    pub tokens: usize,
    /// Q8_0 blocks per token (before pairing).
    pub blocks: usize,
}

impl PackedQ8 {
    /// Packs `n` rows of `cols` (a multiple of 32) values, reusing this buffer.
    pub(crate) fn pack_into(&mut self, xs: &[f32], cols: usize) {
        let blocks = cols / QK;
        let per_token = blocks.div_ceil(2);
        let n = xs.len() / cols;
        self.pairs.clear();
        self.pairs.resize(n * per_token, Q8Pair::ZERO);
        let pairs = &mut self.pairs;
        let mut q = [BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; 2];
        for (x, out) in xs.chunks_exact(cols).zip(pairs.chunks_exact_mut(per_token.max(1))) {
            for (p, pair) in out.iter_mut().enumerate() {
                let x = &x[2 * p * QK..((2 * p + 2) * QK).min(cols)];
                let q = &mut q[..x.len() / QK];
                quantize_q8_0_activations(x, q);
                fill_pair(pair, q);
            }
        }
        (self.per_token, self.tokens, self.blocks) = (per_token, n, blocks);
    }

    /// Token `t`'s block pairs.
    pub(crate) fn token(&self, t: usize) -> &[Q8Pair] {
        &self.pairs[t * self.per_token..(t + 1) * self.per_token]
    }
}

/// One or two quantised blocks into a pair.
fn fill_pair(pair: &mut Q8Pair, q: &[BlockQ8_0]) {
    for (half, block) in q.iter().enumerate() {
        pair.qs[half * QK..(half + 1) * QK].copy_from_slice(&block.qs);
        for (g, four) in block.qs.chunks_exact(4).enumerate() {
            pair.neg_sums[half * 8 + g] = -four.iter().map(|&v| v as i32).sum::<i32>();
        }
        pair.d[half * 8..(half + 1) * 8].fill(block.d.to_f32());
    }
}

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

/// Computes rows `first..first + m` of a weight matrix (all of its blocks) against every packed
/// token, into the output's tokens x rows.
pub(crate) type Q8TileFn<B> = fn(&[B], usize, usize, &PackedQ8, &RowsOut);
/// The same for float weights against f32 activations.
pub(crate) type FloatTileFn<E> = fn(&[E], usize, usize, &PackedF32, &RowsOut);

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

/// The same for K-quant weights (`per_row` super-blocks) against every token's Q8_K blocks.
pub(crate) type KTileFn<B> = fn(&[B], usize, usize, &[BlockQ8K], usize, &RowsOut);

/// The GEMM kernels of one ISA.
#[derive(Clone, Copy)]
pub(crate) struct GemmKernels {
    pub q8_0: Q8TileFn<BlockQ8_0>,
    pub q4_0: Q8TileFn<BlockQ4_0>,
    pub f32: FloatTileFn<f32>,
    pub f16: FloatTileFn<f16>,
    pub bf16: FloatTileFn<bf16>,
    pub q4_k: KTileFn<BlockQ4K>,
    pub q5_k: KTileFn<BlockQ5K>,
    pub q6_k: KTileFn<BlockQ6K>,
}

impl GemmKernels {
    /// The tiled kernels this CPU can run, unless `FLOE_ISA` asks for another ISA.
    pub(crate) fn select() -> Option<&'static GemmKernels> {
        static CHOSEN: OnceLock<Option<GemmKernels>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| {
                let forced = std::env::var("FLOE_ISA").ok();
                if forced.is_some_and(|f| f.trim() != "avx512") {
                    return None;
                }
                Self::avx512()
            })
            .as_ref()
    }

    /// The AVX-512 tiles, if this CPU has AVX-512 F/BW/VNNI.
    pub(crate) fn avx512() -> Option<GemmKernels> {
        #[cfg(target_arch = "x86_64")]
        if crate::dot::Isa::Avx512.supported() {
            return Some(avx512::KERNELS);
        }
        None
    }

    /// Whether a matrix of `dtype` has a tiled kernel here.
    pub(crate) fn handles(dtype: DType) -> bool {
        matches!(
            dtype,
            DType::Q8_0
                | DType::Q4_0
                | DType::F32
                | DType::F16
                | DType::Bf16
                | DType::Q4K
                | DType::Q5K
                | DType::Q6K
        )
    }
}

/// The scalar twin of the Q8_0/Q4_0 tiles (the same products, plain Rust), for tests.
#[doc(hidden)]
pub fn reference_q8(w: &[u8], dtype: DType, cols: usize, xs: &[f32]) -> Vec<f32> {
    let blocks = cols / QK;
    let n = xs.len() / cols;
    let mut q = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; blocks];
    let mut out = Vec::new();
    let row_bytes = dtype.row_bytes(cols).expect("a valid shape");
    for t in 0..n {
        quantize_q8_0_activations(&xs[t * cols..(t + 1) * cols], &mut q);
        for row in w.chunks_exact(row_bytes) {
            let v = match dtype {
                DType::Q8_0 => crate::dot::scalar::dot_q8_0(bytemuck::cast_slice(row), &q),
                DType::Q4_0 => {
                    crate::dot::scalar::dot_q4_0(bytemuck::cast_slice::<u8, BlockQ4_0>(row), &q)
                }
                other => panic!("reference_q8 of {other}"),
            };
            out.push(v);
        }
    }
    out
}
