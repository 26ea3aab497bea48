//! TQ2_0: ternary weights (-1, 0, 1) as 2-bit codes (value + 1), four per byte, one f16 scale
//! per 256. 2.06 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{BlockQ8K, QK_K};

/// One GGUF `block_tq2_0`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq2_0 {
    /// Per 128 values, byte m holds values m, m + 32, m + 64, m + 96 (bits 0-1, 2-3, ...).
    pub qs: [u8; QK_K / 4],
    /// Scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockTq2_0>() == 66);
const _: () = assert!(std::mem::align_of::<BlockTq2_0>() == 2);

pub(crate) fn codes(b: &BlockTq2_0, out: &mut [i8; QK_K]) {
    for (j, half) in b.qs.chunks_exact(32).enumerate() {
        for l in 0..4 {
            for (m, &q) in half.iter().enumerate() {
                out[128 * j + 32 * l + m] = ((q >> (2 * l)) & 3) as i8 - 1;
            }
        }
    }
}

super::codes::ternary_type!(BlockTq2_0, dequantize_tq2_0, dot_tq2_0, dot_tq2_0_with);

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, BlockTq2_0, QK_K};

    /// The codes plus one (0..=2), in value order, with AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn codes(b: &BlockTq2_0, out: &mut [u8; QK_K]) {
        let m3 = _mm256_set1_epi8(3);
        for j in 0..2 {
            // SAFETY: 32 * j + 32 <= 64 = qs's length; unaligned load.
            let bits = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * j) as *const __m256i) };
            for l in 0..4 {
                let q = _mm256_and_si256(_mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * l)), m3);
                let at = 128 * j + 32 * l as usize;
                // SAFETY: at + 32 <= 256 = out's length; unaligned store.
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(at) as *mut __m256i, q) };
            }
        }
    }

    /// The AVX2 twin of [`super::dot_tq2_0`]: the same lanes, the same bits.
    pub(crate) fn dot_tq2_0(w: &[BlockTq2_0], x: &[BlockQ8K]) -> f32 {
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe {
            super::super::codes::ternary_avx2::ternary_dot(w, x, |b, out| codes(b, out), |b| b.d)
        }
    }
}
