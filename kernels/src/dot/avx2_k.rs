//! x86_64 AVX2 dot products of the K-quant weights (Q4_K, Q5_K, Q6_K) with Q8_K activations,
//! the way ggml computes them: unsigned weight codes times signed activation codes with
//! `maddubs`, weighted by the sub-block scales with `madd`, exact i32 sums per super-block, one
//! f32 multiply-add per super-block. The min / offset terms use Q8_K's `bsums`. Only reachable
//! through the tables in `avx2.rs` / `avx512.rs`, which are handed out after feature checks.

use std::arch::x86_64::*;

use super::avx2::{f16_to_f32, hsum};
use crate::quant::{q6_k, scales_mins_k4, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};

/// Σ over 8 sub-blocks of min * (sum of that sub-block's 32 activation codes), with the 16
/// Q8_K `bsums` (each covering 16 values) against the mins repeated twice.
#[inline]
#[target_feature(enable = "avx2")]
fn mins_dot_bsums(m: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    let mut mm = [0u8; 16];
    for (j, v) in m.iter().enumerate() {
        mm[2 * j] = *v;
        mm[2 * j + 1] = *v;
    }
    // SAFETY: both loads read exactly 16 bytes / 32 bytes from arrays of that size.
    let prod = unsafe {
        let m16 = _mm256_cvtepu8_epi16(_mm_loadu_si128(mm.as_ptr() as *const __m128i));
        _mm256_madd_epi16(m16, _mm256_loadu_si256(bsums.as_ptr() as *const __m256i))
    };
    hsum_i32(prod)
}

/// The sum of eight i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

pub(super) fn dot_q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: these kernels sit only in tables handed out when AVX2 and FMA are present.
    unsafe {
        dot_k4_imp::<false>(w.iter().map(|a| (a.d, a.dmin, &a.scales, &a.qs, &NO_HIGH_BITS)), x)
    }
}

pub(super) fn dot_q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only in tables handed out when AVX2, FMA and F16C are present.
    unsafe { dot_k4_imp::<true>(w.iter().map(|a| (a.d, a.dmin, &a.scales, &a.qs, &a.qh)), x) }
}

/// The fields of a Q4_K block, or of a Q5_K block with its high bits.
type K4Block<'a> = (half::f16, half::f16, &'a [u8; 12], &'a [u8; 128], &'a [u8; 32]);

/// Q4_K blocks have no fifth bits.
static NO_HIGH_BITS: [u8; 32] = [0; 32];

/// Q4_K and Q5_K against Q8_K: 4-bit codes, plus (`HIGH`, Q5_K) the fifth bit from `qh` as 16.
/// `HIGH` is a constant so the Q4_K loop carries no high-bit work.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_k4_imp<'a, const HIGH: bool>(w: impl Iterator<Item = K4Block<'a>>, x: &[BlockQ8K]) -> f32 {
    let mask = _mm256_set1_epi8(0x0F);
    let sixteen = _mm256_set1_epi8(16);
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0.0f32;
    for ((d, dmin, scales, qs, qh), b) in w.zip(x) {
        let (sc, m) = scales_mins_k4(scales);
        // SAFETY: qh is exactly 32 bytes.
        let qh = unsafe { _mm256_loadu_si256(qh.as_ptr() as *const __m256i) };
        let mut sumi = _mm256_setzero_si256();
        for c in 0..4 {
            // SAFETY: qs has 128 bytes (32c + 32 <= 128) and the Q8_K codes 256
            // (64c + 64 <= 256): every 32-byte unaligned load is in bounds.
            let (q4, y0, y1) = unsafe {
                (
                    _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i),
                    _mm256_loadu_si256(b.qs.as_ptr().add(64 * c) as *const __m256i),
                    _mm256_loadu_si256(b.qs.as_ptr().add(64 * c + 32) as *const __m256i),
                )
            };
            let mut lo = _mm256_and_si256(q4, mask);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q4), mask);
            if HIGH {
                let (b1, b2) = (_mm256_set1_epi8(1 << (2 * c)), _mm256_set1_epi8(2 << (2 * c)));
                let h1 = _mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1);
                let h2 = _mm256_cmpeq_epi8(_mm256_and_si256(qh, b2), b2);
                lo = _mm256_or_si256(lo, _mm256_and_si256(h1, sixteen));
                hi = _mm256_or_si256(hi, _mm256_and_si256(h2, sixteen));
            }
            let p0 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(lo, y0),
                _mm256_set1_epi16(sc[2 * c] as i16),
            );
            let p1 = _mm256_madd_epi16(
                _mm256_maddubs_epi16(hi, y1),
                _mm256_set1_epi16(sc[2 * c + 1] as i16),
            );
            sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_to_f32(d) * b.d), _mm256_cvtepi32_ps(sumi), acc);
        mins += f16_to_f32(dmin) * b.d * mins_dot_bsums(&m, &b.bsums) as f32;
    }
    hsum(acc) - mins
}

pub(super) fn dot_q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: only in tables handed out when AVX2, FMA and F16C are present.
    unsafe { dot_q6_k_imp(w, x) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q6_k_imp(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (a, b) in w.iter().zip(x) {
        // SAFETY: scales is 16 bytes and bsums 32 bytes.
        let (sc16, bs) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(a.scales.as_ptr() as *const __m128i)),
                _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i),
            )
        };
        // The codes are stored +32: Σ sc*(q-32)*y = Σ sc*q*y - 32 Σ sc*bsum.
        let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bs));
        let mut sumi = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: the Q8_K codes are 256 bytes (128h + 128 <= 256); unaligned loads.
            let y = unsafe {
                let yp = b.qs.as_ptr().add(128 * h) as *const __m256i;
                [
                    _mm256_loadu_si256(yp),
                    _mm256_loadu_si256(yp.add(1)),
                    _mm256_loadu_si256(yp.add(2)),
                    _mm256_loadu_si256(yp.add(3)),
                ]
            };
            let q = q6_k::codes_half_avx2(a, h);
            for k in 0..4 {
                // Sub-blocks 8h + 2k (low 128 bits) and 8h + 2k + 1 (high 128 bits).
                let j = 8 * h + 2 * k;
                let s = _mm256_set_m128i(
                    _mm_set1_epi16(a.scales[j + 1] as i16),
                    _mm_set1_epi16(a.scales[j] as i16),
                );
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], y[k]), s);
                sumi = _mm256_add_epi32(sumi, p);
            }
        }
        sumi = _mm256_sub_epi32(sumi, offset);
        let d = f16_to_f32(a.d) * b.d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    hsum(acc)
}
