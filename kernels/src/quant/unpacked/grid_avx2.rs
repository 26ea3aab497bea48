//! Prefill of the grid types with a shift (IQ1_S, IQ1_M) on AVX2: the decode kernel
//! (`codes::avx2::grid_dot`) with each run's weight registers made once for a pass of tokens,
//! not once per token. Those types have no plain-code unpacking (their shift is a second sum,
//! rounded apart), so this keeps the decode kernel's integer lanes and float steps per token,
//! and each output equals matvec's bit for bit.

use std::arch::x86_64::*;

use super::super::codes::{finish, Delta, GridBlock};
use super::super::QK_K;
use super::{visit_passes, UnpackedActs, TOKENS};
use crate::dot::avx2::{f16_to_f32, hsum};
use crate::gemm::RowsOut;

/// Rows `first..first + m` of `w` (`per` super-blocks each) against every token of `acts`
/// (Q8_K, laid out without the offset), into `out`.
pub(crate) fn dot_tokens<B: GridBlock>(
    w: &[B],
    (first, m): (usize, usize),
    acts: &UnpackedActs,
    per: usize,
    out: &RowsOut,
) {
    acts.assert_laid_out_for(per, QK_K);
    assert!(!acts.offset, "activations laid out with the offset");
    assert!(w.len() >= (first + m) * per && acts.bsums.len() == acts.d.len());
    let rows = &w[first * per..(first + m) * per];
    visit_passes((acts.tokens(), m, TOKEN_BLOCK), (first, out), |r, t0, k| {
        // SAFETY: this kernel sits only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C) said yes.
        unsafe { pass(&rows[r * per..(r + 1) * per], acts, t0, k) }
    });
}

/// Tokens per block: a block's activations stay in cache while every row of the task passes
/// over them.
const TOKEN_BLOCK: usize = 32;

/// One row against tokens `t0..t0 + k` (`k <= TOKENS`): per token, `grid_dot`'s lanes.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass<B: GridBlock>(row: &[B], acts: &UnpackedActs, t0: usize, k: usize) -> [f32; TOKENS] {
    let per = row.len();
    let ones = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); TOKENS];
    let mut acc2 = [_mm256_setzero_ps(); TOKENS];
    let mut shift = [0.0f32; TOKENS];
    for (i, a) in row.iter().enumerate() {
        let mut sumi = [_mm256_setzero_si256(); TOKENS];
        let mut sumi2 = [_mm256_setzero_si256(); TOKENS];
        for r in 0..QK_K / 32 {
            let ls = a.run(r).ls;
            let ls = _mm256_set_m128i(_mm_set1_epi16(ls[1]), _mm_set1_epi16(ls[0]));
            // SAFETY: this function's contract (AVX2).
            let g = unsafe { a.avx2_grid(r) };
            // The magnitudes, and what signs the activations: the values' own (signed grids)
            // or the sign bytes. (Taking the activations offset to unsigned bytes against the
            // signed codes, with the offset's product taken off per super-block, measured no
            // faster.)
            let (mag, signs) = if B::SIGNED {
                (_mm256_sign_epi8(g, g), g)
            } else {
                // SAFETY: as above.
                (g, unsafe { a.avx2_signs(r) })
            };
            let ds = match B::DELTA {
                // SAFETY: as above.
                Delta::Lanes(_) => unsafe { a.avx2_delta_signs(r) },
                _ => ones,
            };
            for t in 0..k {
                let q = &acts.token(t0 + t)[QK_K * i + 32 * r..][..32];
                // SAFETY: `q` is 32 bytes (sliced above).
                let q8 = unsafe { _mm256_loadu_si256(q.as_ptr() as *const __m256i) };
                let p16 = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(q8, signs));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p16, ls));
                if let Delta::Lanes(_) = B::DELTA {
                    let p = _mm256_maddubs_epi16(ones, _mm256_sign_epi8(q8, ds));
                    sumi2[t] = _mm256_add_epi32(sumi2[t], _mm256_madd_epi16(p, ls));
                }
            }
        }
        let wd = f16_to_f32(a.scale_f16());
        for t in 0..k {
            let at = (t0 + t) * per + i;
            let d = wd * acts.d[at];
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            match B::DELTA {
                Delta::None => {}
                Delta::PerRun(_) => {
                    // SAFETY: this function's contract (AVX2).
                    let runs = unsafe { a.avx2_run_shifts(&acts.bsums[at]) };
                    shift[t] = (runs as f32).mul_add(d, shift[t]);
                }
                Delta::Lanes(_) => {
                    acc2[t] =
                        _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi2[t]), acc2[t])
                }
            }
        }
    }
    std::array::from_fn(|t| finish::<B>(hsum(acc[t]), hsum(acc2[t]), shift[t]))
}
