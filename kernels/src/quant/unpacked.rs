//! Prefill for the Q8_K-activation types whose super-blocks are signed codes with a scale per
//! 16 values (the grid types without a shift, IQ4_XS, Q3_K): a weight row is unpacked once
//! into plain `i8` codes, then dotted with every token's activations, four tokens per pass so
//! each code vector is loaded once for four. Decode unpacks each super-block for one token;
//! prefill would otherwise unpack the same row again for every token. The integer lanes, the
//! fused per-super-block accumulate and the final sum are the decode kernels', so every
//! output equals matvec's bit for bit.

use std::cell::RefCell;

use super::codes::{GridBlock, Lanes, Run};
use super::{BlockQ8K, QK_K};

/// One weight row as plain codes.
#[derive(Default)]
pub(crate) struct UnpackedRow {
    /// Every value's signed code, in value order.
    pub(crate) codes: Vec<i8>,
    /// The scale of each run of 16 values.
    pub(crate) ls: Vec<i16>,
    /// Each super-block's weight scale.
    pub(crate) d: Vec<f32>,
}

impl UnpackedRow {
    fn reset(&mut self, superblocks: usize) {
        self.codes.clear();
        self.codes.resize(superblocks * QK_K, 0);
        self.ls.clear();
        self.ls.resize(superblocks * QK_K / 16, 0);
        self.d.clear();
        self.d.resize(superblocks, 0.0);
    }
}

/// A type whose rows unpack to codes with a scale per 16 (and one per super-block).
pub(crate) trait Unpack: Copy {
    /// ggml's factor on the final sum.
    const MULT: f32;
    /// Writes super-block `b`'s 256 codes, 16 scales and weight scale.
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32;
}

/// The grid types without a shift: code = grid value times its sign.
pub(crate) fn unpack_grid<B: GridBlock>(b: &B, codes: &mut [i8], ls: &mut [i16]) -> f32 {
    let bytes = |words: [u64; 4]| {
        let mut out = [0u8; 32];
        for (w, o) in words.iter().zip(out.chunks_exact_mut(8)) {
            o.copy_from_slice(&w.to_le_bytes());
        }
        out
    };
    for r in 0..QK_K / 32 {
        let Run { grid, signs, ls: l } = b.run(r);
        let (g, s) = (bytes(grid), bytes(signs));
        for ((c, &g), &s) in codes[32 * r..32 * r + 32].iter_mut().zip(&g).zip(&s) {
            // Signs are 1 or -1 as bytes.
            *c = if B::SIGNED { g as i8 } else { (g as i8).wrapping_mul(s as i8) };
        }
        ls[2 * r..2 * r + 2].copy_from_slice(&l);
    }
    b.scale()
}

thread_local! {
    static ROW: RefCell<UnpackedRow> = RefCell::new(UnpackedRow::default());
}

/// Unpacks `w` (one row) into this thread's scratch row and hands it to `f`.
fn with_row<B: Unpack, R>(w: &[B], f: impl FnOnce(&UnpackedRow) -> R) -> R {
    ROW.with_borrow_mut(|row| {
        row.reset(w.len());
        for (i, b) in w.iter().enumerate() {
            let codes = &mut row.codes[QK_K * i..QK_K * (i + 1)];
            row.d[i] = b.unpack(codes, &mut row.ls[16 * i..16 * (i + 1)]);
        }
        f(row)
    })
}

/// The scalar twin: every token's dot product from the unpacked row.
pub(crate) fn dot_tokens<B: Unpack>(w: &[B], xs: &[&[BlockQ8K]], out: &mut [f32]) {
    with_row(w, |row| {
        for (x, o) in xs.iter().zip(out) {
            assert_eq!(x.len(), w.len());
            let mut acc = Lanes::default();
            for (i, y) in x.iter().enumerate() {
                let mut lanes = [0i32; 8];
                let codes = &row.codes[QK_K * i..QK_K * (i + 1)];
                for (v, (&c, &q)) in codes.iter().zip(&y.qs).enumerate() {
                    lanes[(v % 32) / 4] += row.ls[16 * i + v / 16] as i32 * c as i32 * q as i32;
                }
                acc.fma(row.d[i] * y.d, &lanes);
            }
            *o = B::MULT * acc.sum();
        }
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{with_row, BlockQ8K, Unpack, UnpackedRow, QK_K};
    use crate::dot::avx2::hsum;

    /// The AVX2 twin of [`super::dot_tokens`].
    pub(crate) fn dot_tokens<B: Unpack>(w: &[B], xs: &[&[BlockQ8K]], out: &mut [f32]) {
        assert!(xs.iter().all(|x| x.len() == w.len()));
        with_row(w, |row| {
            for (x, o) in xs.chunks(4).zip(out.chunks_mut(4)) {
                // SAFETY: these kernels sit only in the AVX2 column of the type table, used
                // after `Isa::Avx2.supported()` (AVX2, FMA) said yes.
                let sums = unsafe {
                    match x.len() {
                        4 => tile::<4>(row, x),
                        3 => tile::<3>(row, x),
                        2 => tile::<2>(row, x),
                        _ => tile::<1>(row, x),
                    }
                };
                for (o, s) in o.iter_mut().zip(sums) {
                    *o = B::MULT * s;
                }
            }
        })
    }

    /// `N` (1..=4) tokens against the unpacked row: each run's codes loaded once for all (a
    /// constant `N` keeps every token's sums in registers).
    #[target_feature(enable = "avx2,fma")]
    fn tile<const N: usize>(row: &UnpackedRow, xs: &[&[BlockQ8K]]) -> [f32; 4] {
        let n = N;
        let xs: &[&[BlockQ8K]; N] = xs.try_into().expect("N tokens");
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, &dw) in row.d.iter().enumerate() {
            let mut sumi = [_mm256_setzero_si256(); 4];
            for r in 0..QK_K / 32 {
                let at = QK_K * i + 32 * r;
                // SAFETY: at + 32 <= codes.len() (256 per super-block); unaligned load.
                let q = unsafe { _mm256_loadu_si256(row.codes.as_ptr().add(at) as *const __m256i) };
                let aq = _mm256_sign_epi8(q, q);
                let (l0, l1) = (row.ls[16 * i + 2 * r], row.ls[16 * i + 2 * r + 1]);
                let ls = _mm256_set_m128i(_mm_set1_epi16(l1), _mm_set1_epi16(l0));
                for t in 0..n {
                    // SAFETY: 32 * r + 32 <= 256 = qs's length; unaligned load.
                    let y = unsafe {
                        _mm256_loadu_si256(xs[t][i].qs.as_ptr().add(32 * r) as *const __m256i)
                    };
                    // |q| x sign(y, q): pairs of products fit i16 (codes at most 127).
                    let p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, ls));
                }
            }
            for t in 0..n {
                let d = _mm256_set1_ps(dw * xs[t][i].d);
                acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            }
        }
        acc.map(|a| hsum(a))
    }
}
