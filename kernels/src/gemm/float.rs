//! AVX-512 GEMM tiles for the float formats (f32, f16, bf16 weights against f32 activations):
//! up to 4 weight rows x 4 tokens, one 512-bit accumulator per output. Reached only through the
//! type table's tiles, which the product runs after `super::enabled` checked the CPU.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{PackedF32, RowsOut, TILE_ROWS, TILE_TOKENS};

/// A float weight format: sixteen values widened to f32 lanes.
pub(crate) trait FloatElem: Copy {
    /// `row[k..k + 16]` as f32.
    ///
    /// # Safety
    /// `k + 16 <= row.len()` and the CPU has AVX-512 F and F16C.
    unsafe fn load16(row: &[Self], k: usize) -> __m512;
    fn to_f32(self) -> f32;
}

impl FloatElem for f32 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len().
        unsafe { _mm512_loadu_ps(row.as_ptr().add(k)) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl FloatElem for f16 {
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len(); 16 f16 are 32 bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(k) as *const __m256i)) }
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl FloatElem for bf16 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len(); 16 bf16 are 32 bytes.
        let v = unsafe { _mm256_loadu_si256(row.as_ptr().add(k) as *const __m256i) };
        // bf16 is the top half of an f32: widen and shift (exact).
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn float_tile<E: FloatElem, const RM: usize, const RN: usize>(
    rows: [&[E]; RM],
    xs: [&[f32]; RN],
) -> [[f32; RN]; RM] {
    let cols = xs[0].len();
    let main = cols / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let mut k = 0;
    while k < main {
        let mut w = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            // SAFETY: k + 16 <= main <= cols = every row's length (checked by the caller).
            w[r] = unsafe { E::load16(rows[r], k) };
        }
        for t in 0..RN {
            // SAFETY: as above, for the token's row of `cols` floats.
            let x = unsafe { _mm512_loadu_ps(xs[t].as_ptr().add(k)) };
            for r in 0..RM {
                acc[r][t] = _mm512_fmadd_ps(w[r], x, acc[r][t]);
            }
        }
        k += 16;
    }
    let mut out = [[0.0; RN]; RM];
    for r in 0..RM {
        for t in 0..RN {
            let tail: f32 = (main..cols).map(|k| rows[r][k].to_f32() * xs[t][k]).sum();
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]) + tail;
        }
    }
    out
}

/// Runs `tile(r0, rm, t0)` over a chunk of `m` rows and `n` tokens, tokens outer so a tile's
/// activations stay in L1 while the chunk's rows pass over them.
fn drive(m: usize, n: usize, tile: impl Fn(usize, usize, usize)) {
    let mut t0 = 0;
    while t0 < n {
        let mut r0 = 0;
        while r0 < m {
            let rm = if m - r0 >= TILE_ROWS { TILE_ROWS } else { 1 };
            tile(r0, rm, t0);
            r0 += rm;
        }
        t0 += TILE_TOKENS;
    }
}

/// Dispatches a runtime (rows, tokens) tile size to its compiled twin.
macro_rules! dispatch {
    ($kernel:ident [$($pre:tt)*], $row:expr, $tok:expr, $rm:expr, $rn:expr, $write:expr) => {{
        macro_rules! go {
            ($m:literal, $k:literal) => {{
                let rows: [_; $m] = std::array::from_fn(|i| $row(i));
                let xs: [_; $k] = std::array::from_fn(|i| $tok(i));
                // SAFETY: these tiles are only reached when the CPU has AVX-512 F/BW/VNNI with
                // AVX2, FMA and F16C (`super::enabled`).
                let v = unsafe { $kernel::<$($pre)* $m, $k>(rows, xs) };
                for (r, vr) in v.iter().enumerate() {
                    for (t, &y) in vr.iter().enumerate() {
                        $write(r, t, y);
                    }
                }
            }};
        }
        match ($rm, $rn) {
            (4, 4) => go!(4, 4),
            (4, 3) => go!(4, 3),
            (4, 2) => go!(4, 2),
            (4, 1) => go!(4, 1),
            (1, 4) => go!(1, 4),
            (1, 3) => go!(1, 3),
            (1, 2) => go!(1, 2),
            _ => go!(1, 1),
        }
    }};
}

/// Rows `first..first + m` of a float matrix against every token, into `out`.
pub(crate) fn float_rows<E: FloatElem>(
    w: &[E],
    first: usize,
    m: usize,
    x: &PackedF32,
    out: &RowsOut,
) {
    let (n, cols) = (x.tokens(), x.cols);
    let row = |r: usize| &w[(first + r) * cols..(first + r + 1) * cols];
    drive(m, n, |r0, rm, t0| {
        let rn = (n - t0).min(TILE_TOKENS);
        // SAFETY: as in quant_rows.
        let write = |r, t, y| unsafe { out.write(t0 + t, first + r0 + r, y) };
        dispatch!(float_tile [_,], |i| row(r0 + i), |i| x.token(t0 + i), rm, rn, write)
    });
}
