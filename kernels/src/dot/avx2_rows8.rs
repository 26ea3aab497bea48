//! AVX2 kernel of the eight-row interleaved Q4_0 layout ([`BlockQ4_0x8`]).

use std::arch::x86_64::*;

use crate::quant::{BlockQ4_0x8, BlockQ8_0, Q8Sum, ROWS8};

/// How far ahead of the block being computed the one-token kernel prefetches, in bytes: chosen
/// by decode speed on the 30B shape (`bench/scripts/vs_llamacpp.sh`) among 1, 2, 3 and 4 KiB and
/// none; 2-4 KiB were all clearly faster than none, 3 KiB the best of them there.
const PREFETCH_AHEAD: usize = 3 << 10;

/// [`crate::quant::rows8_q4_0`] with AVX2: the same bits.
pub(crate) fn rows8_q4_0(w: &[BlockQ4_0x8], x: &[BlockQ8_0], s: &[Q8Sum], acc: &mut [f32; ROWS8]) {
    assert!(w.len() == x.len() && x.len() == s.len());
    // SAFETY: only handed out in the AVX2 table, which `DotKernels::for_isa` gives out after
    // checking the CPU has AVX2, FMA and F16C.
    unsafe { rows8_q4_0_imp(w, x, s, acc) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows8_q4_0_imp(w: &[BlockQ4_0x8], x: &[BlockQ8_0], s: &[Q8Sum], acc: &mut [f32; ROWS8]) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: acc is 8 f32.
    let mut total = unsafe { _mm256_loadu_ps(acc.as_ptr()) };
    for ((g, b), s) in w.iter().zip(x).zip(s) {
        // The groups are one sequential stream; ask for the lines PREFETCH_AHEAD on now (the
        // hardware prefetcher alone stops at each 4 KiB page). A prefetch of any address is
        // harmless, even past the matrix.
        let at = g as *const BlockQ4_0x8 as usize + PREFETCH_AHEAD;
        for line in 0..3 {
            _mm_prefetch::<_MM_HINT_T0>((at + 64 * line) as *const i8);
        }
        let a = b.qs.as_ptr() as *const i32;
        // Two i16 sums (values 0..16 and 16..32) so the adds are two chains, not one. Neither
        // can overflow: four products of two values each, |nibble x q| <= 15 x 128.
        let (mut lo_sum, mut hi_sum) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in 0..4 {
            // SAFETY: chunk c is bytes 32c..32c + 32 of the 128-byte qs; a + c and a + 4 + c are
            // dwords 0..8 of the activations' 32 bytes. Unaligned loads.
            let (v, xl, xh) = unsafe {
                (
                    _mm256_loadu_si256(g.qs.as_ptr().add(32 * c) as *const __m256i),
                    _mm256_set1_epi32(a.add(c).read_unaligned()),
                    _mm256_set1_epi32(a.add(4 + c).read_unaligned()),
                )
            };
            let lo = _mm256_and_si256(v, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
            lo_sum = _mm256_add_epi16(lo_sum, _mm256_maddubs_epi16(lo, xl));
            hi_sum = _mm256_add_epi16(hi_sum, _mm256_maddubs_epi16(hi, xh));
        }
        let isum = _mm256_madd_epi16(_mm256_add_epi16(lo_sum, hi_sum), ones);
        let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(s.corr));
        // SAFETY: d is 8 f16, 16 bytes.
        let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(g.d.as_ptr() as *const __m128i)) };
        let scale = _mm256_mul_ps(dw, _mm256_set1_ps(s.d));
        total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, total);
    }
    // SAFETY: acc is 8 f32.
    unsafe { _mm256_storeu_ps(acc.as_mut_ptr(), total) };
}

/// [`crate::quant::rows8x4_q4_0`] with AVX2: each group's nibbles unpacked once for four
/// tokens; every token gets the bits the one-token kernel gives it.
pub(crate) fn rows8x4_q4_0(
    w: &[BlockQ4_0x8],
    x: [&[BlockQ8_0]; 4],
    s: [&[Q8Sum]; 4],
    acc: &mut [[f32; ROWS8]; 4],
) {
    assert!(x.iter().all(|x| x.len() == w.len()) && s.iter().all(|s| s.len() == w.len()));
    // SAFETY: as for rows8_q4_0.
    unsafe { rows8x4_q4_0_imp(w, x, s, acc) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn rows8x4_q4_0_imp(
    w: &[BlockQ4_0x8],
    x: [&[BlockQ8_0]; 4],
    s: [&[Q8Sum]; 4],
    acc: &mut [[f32; ROWS8]; 4],
) {
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    // SAFETY: each acc row is 8 f32.
    let mut total = acc.map(|a| unsafe { _mm256_loadu_ps(a.as_ptr()) });
    for (j, g) in w.iter().enumerate() {
        let mut lo = [_mm256_setzero_si256(); 4];
        let mut hi = [_mm256_setzero_si256(); 4];
        for c in 0..4 {
            // SAFETY: chunk c is bytes 32c..32c + 32 of the 128-byte qs.
            let v = unsafe { _mm256_loadu_si256(g.qs.as_ptr().add(32 * c) as *const __m256i) };
            lo[c] = _mm256_and_si256(v, low);
            hi[c] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
        }
        // SAFETY: d is 8 f16, 16 bytes.
        let dw = unsafe { _mm256_cvtph_ps(_mm_loadu_si128(g.d.as_ptr() as *const __m128i)) };
        for t in 0..4 {
            let (b, s) = (&x[t][j], &s[t][j]);
            let a = b.qs.as_ptr() as *const i32;
            let (mut lo_sum, mut hi_sum) = (_mm256_setzero_si256(), _mm256_setzero_si256());
            for c in 0..4 {
                // SAFETY: dwords c and 4 + c of the activations' 32 bytes.
                let (xl, xh) = unsafe {
                    (
                        _mm256_set1_epi32(a.add(c).read_unaligned()),
                        _mm256_set1_epi32(a.add(4 + c).read_unaligned()),
                    )
                };
                lo_sum = _mm256_add_epi16(lo_sum, _mm256_maddubs_epi16(lo[c], xl));
                hi_sum = _mm256_add_epi16(hi_sum, _mm256_maddubs_epi16(hi[c], xh));
            }
            let isum = _mm256_madd_epi16(_mm256_add_epi16(lo_sum, hi_sum), ones);
            let isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(s.corr));
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(s.d));
            total[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, total[t]);
        }
    }
    for (a, t) in acc.iter_mut().zip(total) {
        // SAFETY: each acc row is 8 f32.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), t) };
    }
}
