//! TQ1_0: ternary weights (-1, 0, 1) packed five to a byte in base 3 (four to a byte in the
//! last 4 bytes), one f16 scale per 256. 1.69 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{BlockQ8K, QK_K};

/// One GGUF `block_tq1_0`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq1_0 {
    /// 240 values, five per byte.
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    /// The last 16 values, four per byte.
    pub qh: [u8; QK_K / 64],
    /// Scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);
const _: () = assert!(std::mem::align_of::<BlockTq1_0>() == 2);

/// The base-3 digit `n` of a packed byte, as ggml extracts it: the byte times 3^n (mod 256),
/// times 3, over 256.
#[inline]
fn trit(byte: u8, n: usize) -> i8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i8 - 1
}

/// The 256 codes in value order.
fn codes(b: &BlockTq1_0, out: &mut [i8; QK_K]) {
    let mut at = 0;
    for n in 0..5 {
        for m in 0..32 {
            out[at] = trit(b.qs[m], n);
            at += 1;
        }
    }
    for n in 0..5 {
        for m in 0..16 {
            out[at] = trit(b.qs[32 + m], n);
            at += 1;
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            out[at] = trit(b.qh[j], n);
            at += 1;
        }
    }
}

super::codes::ternary_type!(BlockTq1_0, dequantize_tq1_0, dot_tq1_0, dot_tq1_0_with);

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, BlockTq1_0, QK_K};

    /// Base-3 digit `n` of each of 32 bytes (lane-wise powers: the low 16 bytes' digit is
    /// `pow_lo`'s, the high 16 bytes' `pow_hi`'s), as [`super::trit`] plus one: the byte times 3^n
    /// (mod 256), times 3, over 256, in 16-bit lanes for the even and the odd bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn digits(x: __m256i, pow_lo: i16, pow_hi: i16) -> __m256i {
        let (low, three) = (_mm256_set1_epi16(0xFF), _mm256_set1_epi16(3));
        let pow = _mm256_set_m128i(_mm_set1_epi16(pow_hi), _mm_set1_epi16(pow_lo));
        let digit = |v: __m256i| {
            let p = _mm256_and_si256(_mm256_mullo_epi16(v, pow), low);
            _mm256_srli_epi16::<8>(_mm256_mullo_epi16(p, three))
        };
        let (even, odd) = (_mm256_and_si256(x, low), _mm256_srli_epi16::<8>(x));
        _mm256_or_si256(digit(even), _mm256_slli_epi16::<8>(digit(odd)))
    }

    /// The codes plus one (0..=2), in value order, all with AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn codes(b: &BlockTq1_0, out: &mut [u8; QK_K]) {
        const POW3: [i16; 5] = [1, 3, 9, 27, 81];
        // SAFETY: qs is 48 bytes: 32 at 0, 16 at 32; unaligned loads.
        let (wide, narrow) = unsafe {
            (
                _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i),
                _mm_loadu_si128(b.qs.as_ptr().add(32) as *const __m128i),
            )
        };
        let narrow = _mm256_set_m128i(narrow, narrow);
        let mut put = |at: usize, v: __m256i| {
            // SAFETY: at + 32 <= 256 = out's length; unaligned store.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(at) as *mut __m256i, v) }
        };
        for (n, &p) in POW3.iter().enumerate() {
            put(32 * n, digits(wide, p, p));
        }
        put(160, digits(narrow, POW3[0], POW3[1]));
        put(192, digits(narrow, POW3[2], POW3[3]));
        // The last 32 in registers too (done one by one, they slowed the whole kernel): the
        // narrow bytes' fifth digit, then byte 4n + j = digit n of qh[j], its power per pair
        // of 16-bit lanes.
        let fifth = _mm256_castsi256_si128(digits(narrow, POW3[4], POW3[4]));
        let qh = _mm_set1_epi32(i32::from_le_bytes(b.qh));
        let (low, three) = (_mm_set1_epi16(0xFF), _mm_set1_epi16(3));
        let pow = _mm_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27);
        let digit = |v: __m128i| {
            let p = _mm_and_si128(_mm_mullo_epi16(v, pow), low);
            _mm_srli_epi16::<8>(_mm_mullo_epi16(p, three))
        };
        let (even, odd) = (_mm_and_si128(qh, low), _mm_srli_epi16::<8>(qh));
        let high = _mm_or_si128(digit(even), _mm_slli_epi16::<8>(digit(odd)));
        put(224, _mm256_set_m128i(high, fifth));
    }

    /// The AVX2 twin of [`super::dot_tq1_0`]: the same lanes, the same bits.
    pub(crate) fn dot_tq1_0(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe {
            super::super::codes::ternary_avx2::ternary_dot(w, x, |b, out| codes(b, out), |b| b.d)
        }
    }
}
