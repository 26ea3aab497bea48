//! AVX-512 (F, BW) GEMM tiles for the types whose super-blocks unpack to signed codes with a
//! scale per 16 values (the grid i-quants without a shift, IQ4_XS, Q3_K: [`Unpack`]) against
//! Q8_K activations. A chunk's rows are unpacked once into [`CodeRow`]s (code magnitudes in
//! value order, a mask of the negative ones, a scale per value pair) and read by every token
//! tile: per 64 values, each activation register is negated where the code is negative
//! (`|q| x ±y` is the AVX2 kernels' `maddubs(sign(q, q), sign(y, q))`), then `vpmaddubsw` +
//! `vpmaddwd` into exact i32 sums per super-block.
//!
//! The sixteen i32 lanes fold to the eight the AVX2 kernels hold (lane k: values 4k..4k+3 of
//! every run of 32) before anything is rounded, and every float step is theirs in their order,
//! so a token's prefill outputs equal its decode outputs bit for bit, as the K-quant tiles do.

use std::arch::x86_64::*;

use super::RowsOut;
use crate::quant::unpacked::Unpack;
use crate::quant::{BlockQ8K, QK_K};

/// Tokens per tile (the i32 sums of a super-block and the f32 accumulators of every output
/// must fit the 32 registers).
const TILE_TOKENS: usize = 2;
/// Rows per tile.
const TILE_ROWS: usize = 4;

/// One super-block of one weight row, unpacked.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct CodeRow {
    /// |code| per value, in value order.
    mag: [u8; QK_K],
    /// The scale of each pair of values (their run of 16's).
    sc: [i16; QK_K / 2],
    /// Bit `v % 64` of word `v / 64` set where value `v`'s code is negative.
    neg: [u64; 4],
    /// The super-block's weight scale.
    d: f32,
}

const _: () = assert!(std::mem::size_of::<CodeRow>() == 576);

impl CodeRow {
    const ZERO: CodeRow = CodeRow { mag: [0; QK_K], sc: [0; QK_K / 2], neg: [0; 4], d: 0.0 };

    /// Unpacks one super-block into this row.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn fill<B: Unpack>(&mut self, block: &B) {
        let mut codes = [0i8; QK_K];
        let mut ls = [0i16; QK_K / 16];
        self.d = block.unpack(&mut codes, &mut ls);
        for c in 0..4 {
            // SAFETY: codes and mag hold 256 bytes: 64-byte accesses at 64c stay inside.
            unsafe {
                let q = _mm512_loadu_si512(codes.as_ptr().add(64 * c) as *const _);
                _mm512_storeu_si512(
                    self.mag.as_mut_ptr().add(64 * c) as *mut _,
                    _mm512_abs_epi8(q),
                );
                self.neg[c] = _mm512_movepi8_mask(q);
            }
        }
        for (g, pairs) in self.sc.chunks_exact_mut(8).enumerate() {
            pairs.fill(ls[g]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
fn code_tile<const RM: usize, const RN: usize>(
    rows: [&[CodeRow]; RM],
    xs: [&[BlockQ8K]; RN],
) -> [[f32; RN]; RM] {
    let blocks = xs[0].len();
    let zero = _mm512_setzero_si512();
    let mut acc = [[_mm256_setzero_ps(); RN]; RM];
    for s in 0..blocks {
        let mut isum = [[zero; RN]; RM];
        for c in 0..4 {
            let mut q = [zero; RM];
            let mut sc = [zero; RM];
            let mut neg: [__mmask64; RM] = [0; RM];
            for r in 0..RM {
                let w = &rows[r][s];
                // SAFETY: mag holds 256 bytes and sc 128 i16: 64-byte loads at 64c and 32c stay
                // inside them.
                unsafe {
                    q[r] = _mm512_loadu_si512(w.mag.as_ptr().add(64 * c) as *const _);
                    sc[r] = _mm512_loadu_si512(w.sc.as_ptr().add(32 * c) as *const _);
                }
                neg[r] = w.neg[c];
            }
            for t in 0..RN {
                // SAFETY: qs holds 256 bytes: a 64-byte load at 64c stays inside.
                let y = unsafe { _mm512_loadu_si512(xs[t][s].qs.as_ptr().add(64 * c) as *const _) };
                for r in 0..RM {
                    // y negated where the code is (as vpsignb does, -128 stays -128); pairs of
                    // |q| x ±y fit i16 (codes at most 127 in magnitude), then times the pair's
                    // scale into i32.
                    let ys = _mm512_mask_sub_epi8(y, neg[r], zero, y);
                    let p16 = _mm512_maddubs_epi16(q[r], ys);
                    isum[r][t] = _mm512_add_epi32(isum[r][t], _mm512_madd_epi16(p16, sc[r]));
                }
            }
        }
        for r in 0..RM {
            for t in 0..RN {
                // Lanes k and k + 8 hold values 4k..4k+3 of the two runs of each 64: the AVX2
                // kernels' lane k.
                let v = isum[r][t];
                let sumi =
                    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
                let d = _mm256_set1_ps(rows[r][s].d * xs[t][s].d);
                acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r][t]);
            }
        }
    }
    let mut out = [[0.0; RN]; RM];
    for r in 0..RM {
        for t in 0..RN {
            out[r][t] = crate::dot::avx2::hsum(acc[r][t]);
        }
    }
    out
}

/// Rows `first..first + m` of a matrix of `B` (`per_row` super-blocks each) against every
/// token of `xs` (`n` tokens of `per_row` Q8_K blocks), into `out`.
pub(crate) fn code_rows<B: Unpack>(
    w: &[B],
    first: usize,
    m: usize,
    xs: &[BlockQ8K],
    per_row: usize,
    out: &RowsOut,
) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<CodeRow>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let n = xs.len() / per_row.max(1);
    ROWS.with_borrow_mut(|unpacked| {
        unpacked.clear();
        unpacked.resize(m * per_row, CodeRow::ZERO);
        for (src, dst) in w[first * per_row..(first + m) * per_row].iter().zip(unpacked.iter_mut())
        {
            // SAFETY: reached only when the CPU has AVX-512 F/BW (`super::enabled`).
            unsafe { dst.fill(src) };
        }
        let row = |r: usize| &unpacked[r * per_row..(r + 1) * per_row];
        let tok = |t: usize| &xs[t * per_row..(t + 1) * per_row];
        let mut t0 = 0;
        while t0 < n {
            let rn = (n - t0).min(TILE_TOKENS);
            let mut r0 = 0;
            while r0 < m {
                let rm = if m - r0 >= TILE_ROWS { TILE_ROWS } else { 1 };
                macro_rules! go {
                    ($m:literal, $k:literal) => {{
                        let rows: [_; $m] = std::array::from_fn(|i| row(r0 + i));
                        let toks: [_; $k] = std::array::from_fn(|i| tok(t0 + i));
                        // SAFETY: these tiles are only reached when the CPU has AVX-512 F/BW
                        // with AVX2 and FMA (`super::enabled`).
                        let v = unsafe { code_tile::<$m, $k>(rows, toks) };
                        for (r, vr) in v.iter().enumerate() {
                            for (t, &y) in vr.iter().enumerate() {
                                // SAFETY: rows first..first + m are this task's.
                                unsafe { out.write(t0 + t, first + r0 + r, B::MULT * y) };
                            }
                        }
                    }};
                }
                match (rm, rn) {
                    (4, 2) => go!(4, 2),
                    (4, _) => go!(4, 1),
                    (_, 2) => go!(1, 2),
                    _ => go!(1, 1),
                }
                r0 += rm;
            }
            t0 += rn;
        }
    });
}
