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
pub(crate) fn codes(b: &BlockTq1_0, out: &mut [i8; QK_K]) {
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, BlockTq1_0};
    use crate::dot::avx2::{f16_to_f32, hsum};

    /// The odd bytes of each 16-bit lane: [`digits`]'s second argument.
    const ODD: u64 = 0xAAAA_AAAA_AAAA_AAAA;

    /// Codes plus one (0..=2) of the 64 bytes of `s`, each the digit of its 16-bit lane's
    /// power (3^n, the same for both bytes of a lane): `(byte * 3^n mod 256) * 3 >> 8`, as
    /// [`super::trit`]. 16-bit multiplies put each byte's product `x` in the high byte of its
    /// lane, the rest zero: the even byte times `pow_even = 3^n << 8` (the odd byte's part
    /// falls off the top), the odd bytes alone (`odd`) times `pow = 3^n`. Then `mulhi(x << 8,
    /// 3)` is the even digit in the low byte and `mulhi(x << 8, 768)` is `3x`, whose high byte
    /// is the odd digit. Multiplies rather than the compares and masked moves a byte-wise form
    /// needs: fewer steps, and they go to the other vector port.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn digits(s: __m512i, odd: __m512i, pow: Powers) -> __m512i {
        let even = _mm512_mulhi_epu16(_mm512_mullo_epi16(s, pow.even), _mm512_set1_epi16(3));
        let odd = _mm512_mulhi_epu16(_mm512_mullo_epi16(odd, pow.odd), _mm512_set1_epi16(768));
        _mm512_mask_blend_epi8(ODD, even, odd)
    }

    /// One register's 16-bit lanes' powers of 3, for its even and its odd bytes.
    #[derive(Clone, Copy)]
    struct Powers {
        even: __m512i,
        odd: __m512i,
    }

    /// Each register's 16-bit lanes' powers of 3, in value order (see [`super::codes`] and
    /// [`dot`]'s sources).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn powers() -> [Powers; 4] {
        let half = |lo: i16, hi: i16| {
            _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi16(lo)),
                _mm256_set1_epi16(hi),
            )
        };
        let quarters = |a: __m128i, b: __m128i, c: __m128i, d: __m128i| {
            let lo = _mm256_set_m128i(b, a);
            let hi = _mm256_set_m128i(d, c);
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        };
        let q = _mm_set1_epi16;
        [
            half(1, 3),
            half(9, 27),
            quarters(q(81), q(81), q(1), q(3)),
            // Byte 4m + j of the last 16 values is digit m of qh[j].
            quarters(q(9), q(27), q(81), _mm_setr_epi16(1, 1, 3, 3, 9, 9, 27, 27)),
        ]
        .map(|odd| Powers { even: _mm512_slli_epi16::<8>(odd), odd })
    }

    /// The AVX-512 twin of [`super::dot_tq1_0`]: the AVX2 kernel's lanes (the register's two
    /// halves added), so the same bits.
    pub(crate) fn dot_tq1_0(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only in the AVX-512 column of the type table, read only after
        // `avx512_table_supported()` said yes (`Dots::for_isa`, `kernels()`).
        unsafe { dot(w, x) }
    }

    /// Rows back to back (`out.len()` of them, `x.len()` blocks each) against `x`, each as
    /// [`dot_tq1_0`] gives it, in one loop: the powers are made once per call, not per row
    /// (rows of a few blocks made that a visible share).
    pub(crate) fn dot_rows(w: &[BlockTq1_0], x: &[BlockQ8K], out: &mut [f32]) {
        assert_eq!(w.len(), x.len() * out.len(), "whole rows of the activations' length");
        // SAFETY: as for `dot_tq1_0` (`Dots::rows_for_isa` checks the same).
        unsafe { rows(w, x, out) }
    }

    /// # Safety
    /// As for [`dot`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn rows(w: &[BlockTq1_0], x: &[BlockQ8K], out: &mut [f32]) {
        if x.is_empty() {
            // SAFETY: this function's contract.
            return out.fill(unsafe { dot(&[], x) });
        }
        for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
            // SAFETY: this function's contract.
            *o = unsafe { dot(row, x) };
        }
    }

    /// How far ahead of the block in hand the weights are prefetched, in bytes (rows are read
    /// one after another, as the other one-row kernels' stream in `matvec`).
    const PREFETCH_AHEAD: usize = 2048;

    /// # Safety
    /// The CPU must have what `crate::dot::avx512_table_supported()` checks.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn dot(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        let minus_ones = _mm256_set1_epi16(-1);
        let pow = powers();
        let mut acc = _mm256_setzero_ps();
        for (a, b) in w.iter().zip(x) {
            let ahead = (a as *const BlockTq1_0 as *const i8).wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            // SAFETY: qs is 48 bytes: 32 at 0, 16 at 32; unaligned loads.
            let (wide, narrow) = unsafe {
                (
                    _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i),
                    _mm_loadu_si128(a.qs.as_ptr().add(32) as *const __m128i),
                )
            };
            // The bytes each value's digit is taken from, in value order: the wide 32 for
            // five digits, the narrow 16 for five, qh's 4 (each four times) for four.
            let wide2 = _mm512_broadcast_i64x4(wide);
            let narrow4 = _mm512_broadcast_i32x4(narrow);
            let qh = _mm_set1_epi32(i32::from_le_bytes(a.qh));
            let (narrow_wide, narrow_qh) =
                (_mm512_inserti64x4::<0>(narrow4, wide), _mm512_inserti32x4::<3>(narrow4, qh));
            let wide_odd = _mm512_maskz_mov_epi8(ODD, wide2);
            let sources = [
                (wide2, wide_odd),
                (wide2, wide_odd),
                (narrow_wide, _mm512_maskz_mov_epi8(ODD, narrow_wide)),
                (narrow_qh, _mm512_maskz_mov_epi8(ODD, narrow_qh)),
            ];
            let mut sumi = _mm512_setzero_si512();
            for (k, ((s, odd), p)) in sources.into_iter().zip(pow).enumerate() {
                // SAFETY: 64 * k + 64 <= 256 = qs's length; unaligned load.
                let q8 = unsafe { _mm512_loadu_si512(b.qs.as_ptr().add(64 * k) as *const _) };
                sumi = _mm512_dpbusd_epi32(sumi, digits(s, odd, p), q8);
            }
            let lo = _mm512_castsi512_si256(sumi);
            let sumi = _mm256_add_epi32(lo, _mm512_extracti64x4_epi64::<1>(sumi));
            // SAFETY: bsums is 16 i16, 32 bytes; unaligned load.
            let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i) };
            // Less the activations' sums: the codes are the digits minus one.
            let lanes = _mm256_dpwssd_epi32(sumi, bsums, minus_ones);
            let d = _mm256_set1_ps(b.d * f16_to_f32(a.d));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc);
        }
        hsum(acc)
    }
}
