//! Q4_1: 32 4-bit codes with an f16 scale and an f16 minimum; value = q * d + m. Its dot
//! products read Q8_1 activations (the minimum meets their `s`).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8_1, QK};

/// One GGUF `block_q4_1`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Value j in the low nibble of byte j, value j + 16 in its high nibble.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::align_of::<BlockQ4_1>() == 2);

/// ggml's reference quantiser (`quantize_row_q4_1_ref`): `d = (max - min) / 15`,
/// `q = min(15, trunc((x - min) / d + 0.5))`.
pub fn quantize_q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        for j in 0..QK / 2 {
            let q0 = (((xb[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((xb[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// The smallest and largest value of a block (ggml's loop: `FLT_MAX` / `-FLT_MAX` starts).
pub(super) fn min_max(xb: &[f32]) -> (f32, f32) {
    xb.iter().fold((f32::MAX, -f32::MAX), |(lo, hi), &v| {
        (if v < lo { v } else { lo }, if v > hi { v } else { hi })
    })
}

/// Expands blocks to f32 (`q * d + m`; the product is exact, so fused or not gives one result).
pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..QK / 2 {
            ob[j] = (b.qs[j] & 0x0F) as f32 * d + m;
            ob[j + QK / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// Q4_1 . Q8_1 rounded as ggml's AVX2 kernel: per block the exact products in eight lanes,
/// `lane * d` into eight f32 lanes (fused); the minimum times the activations' `s` summed
/// apart and added last.
pub fn dot_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    dot_q4_1_with::<ScalarLanes>(w, x)
}

/// [`dot_q4_1`] with its integer lanes from `L`.
pub(crate) fn dot_q4_1_with<L: IntLanes>(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), x.len());
    let (mut acc, mut mins) = (Lanes::default(), 0.0f32);
    for (a, b) in w.iter().zip(x) {
        mins += a.m.to_f32() * b.s.to_f32();
        let q: [u8; QK] =
            std::array::from_fn(
                |v| if v < QK / 2 { a.qs[v] & 0x0F } else { a.qs[v - QK / 2] >> 4 },
            );
        acc.fma(a.d.to_f32() * b.d.to_f32(), &L::lanes32(&q, 0, &b.qs));
    }
    acc.sum() + mins
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ4_1, BlockQ8_1};
    use crate::dot::avx2::{f16_to_f32, hsum, scale8, unpack_nibbles};

    /// The AVX2 twin of [`super::dot_q4_1`].
    pub(crate) fn dot_q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: this kernel sits only in the AVX2 column of the type table, which is used
        // after `Isa::Avx2.supported()` (AVX2, FMA, F16C) said yes.
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
        let (mut acc, mut mins) = (_mm256_setzero_ps(), 0.0f32);
        let ones = _mm256_set1_epi16(1);
        for (a, b) in w.iter().zip(x) {
            mins += f16_to_f32(a.m) * f16_to_f32(b.s);
            // SAFETY: qs is 32 bytes; unaligned load.
            let qb = unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) };
            let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(unpack_nibbles(&a.qs), qb), ones);
            acc = _mm256_fmadd_ps(scale8(a.d, b.d), _mm256_cvtepi32_ps(sum), acc);
        }
        hsum(acc) + mins
    }
}
