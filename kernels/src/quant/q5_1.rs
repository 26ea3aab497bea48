//! Q5_1: 32 5-bit codes with an f16 scale and an f16 minimum; value = q * d + m. Its dot
//! products read Q8_1 activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::q4_1::min_max;
use super::q5_0::{codes5, pack5};
use super::{BlockQ8_1, QK};

/// One GGUF `block_q5_1`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Minimum.
    pub m: f16,
    /// Fifth bits, little-endian: bit j belongs to value j.
    pub qh: [u8; 4],
    /// Low nibbles, as Q4_1.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::align_of::<BlockQ5_1>() == 2);

/// ggml's reference quantiser (`quantize_row_q5_1_ref`): `d = (max - min) / 31`,
/// `q = trunc((x - min) / d + 0.5)`.
pub fn quantize_q5_1(x: &[f32], out: &mut [BlockQ5_1]) {
    assert_eq!(x.len(), out.len() * QK);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(xb) {
            *q = ((v - min) * id + 0.5) as u8;
        }
        (b.qh, b.qs) = pack5(&q);
    }
}

/// Expands blocks to f32 (`q * d + m`, the product exact).
pub fn dequantize_q5_1(blocks: &[BlockQ5_1], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (o, q) in ob.iter_mut().zip(codes5(b.qh, &b.qs)) {
            *o = q as f32 * d + m;
        }
    }
}

/// Q5_1 . Q8_1 rounded as ggml's AVX2 kernel: per block the exact products in eight lanes,
/// `lane * d` into eight f32 lanes (fused); the minimum times the activations' `s` summed
/// apart and added last.
pub fn dot_q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    dot_q5_1_with::<ScalarLanes>(w, x)
}

/// [`dot_q5_1`] with its integer lanes from `L`.
pub(crate) fn dot_q5_1_with<L: IntLanes>(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
    assert_eq!(w.len(), x.len());
    let (mut acc, mut mins) = (Lanes::default(), 0.0f32);
    for (a, b) in w.iter().zip(x) {
        mins += a.m.to_f32() * b.s.to_f32();
        acc.fma(a.d.to_f32() * b.d.to_f32(), &L::lanes32(&codes5(a.qh, &a.qs), 0, &b.qs));
    }
    acc.sum() + mins
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ5_1, BlockQ8_1};
    use crate::dot::avx2::{bits_to_bytes, f16_to_f32, hsum, scale8, unpack_nibbles};

    /// The AVX2 twin of [`super::dot_q5_1`].
    pub(crate) fn dot_q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
        let (mut acc, mut mins) = (_mm256_setzero_ps(), 0.0f32);
        let (ones, bit4) = (_mm256_set1_epi16(1), _mm256_set1_epi8(0x10));
        for (a, b) in w.iter().zip(x) {
            mins += f16_to_f32(a.m) * f16_to_f32(b.s);
            let qa =
                _mm256_or_si256(unpack_nibbles(&a.qs), _mm256_and_si256(bits_to_bytes(a.qh), bit4));
            // SAFETY: qs is 32 bytes; unaligned load.
            let qb = unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) };
            let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, qb), ones);
            acc = _mm256_fmadd_ps(scale8(a.d, b.d), _mm256_cvtepi32_ps(sum), acc);
        }
        hsum(acc) + mins
    }
}
