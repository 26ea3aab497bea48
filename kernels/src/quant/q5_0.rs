//! Q5_0: 32 5-bit codes (low nibbles as Q4_0, the fifth bits in a 32-bit word) with an f16
//! scale; value = (q - 16) * d. Its dot products read Q8_0 activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8_0, QK};

/// One GGUF `block_q5_0`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, little-endian: bit j belongs to value j.
    pub qh: [u8; 4],
    /// Low nibbles: value j in the low half of byte j, value j + 16 in its high half.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::align_of::<BlockQ5_0>() == 2);

/// The 32 unsigned 5-bit codes of a Q5_0 or Q5_1 block, in value order.
#[inline]
pub(crate) fn codes5(qh: [u8; 4], qs: &[u8; QK / 2]) -> [u8; QK] {
    let h = u32::from_le_bytes(qh);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        q[j] = (qs[j] & 0x0F) | (((h >> j) & 1) << 4) as u8;
        q[j + QK / 2] = (qs[j] >> 4) | (((h >> (j + QK / 2)) & 1) << 4) as u8;
    }
    q
}

/// Packs 32 5-bit codes (value order) into nibbles and the high-bit word.
pub(super) fn pack5(q: &[u8; QK]) -> ([u8; 4], [u8; QK / 2]) {
    let (mut h, mut qs) = (0u32, [0u8; QK / 2]);
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4);
        h |= ((q[j] as u32 >> 4) & 1) << j;
        h |= ((q[j + QK / 2] as u32 >> 4) & 1) << (j + QK / 2);
    }
    (h.to_le_bytes(), qs)
}

/// ggml's reference quantiser (`quantize_row_q5_0_ref`): the value of largest magnitude maps to
/// -16, `d = max / -16`, `q = min(31, trunc(x / d + 16.5))`.
pub fn quantize_q5_0(x: &[f32], out: &mut [BlockQ5_0]) {
    assert_eq!(x.len(), out.len() * QK);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(xb) {
            *q = ((v * id + 16.5) as i8).min(31) as u8;
        }
        (b.qh, b.qs) = pack5(&q);
    }
}

/// Expands blocks to f32.
pub fn dequantize_q5_0(blocks: &[BlockQ5_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, q) in ob.iter_mut().zip(codes5(b.qh, &b.qs)) {
            *o = (q as i32 - 16) as f32 * d;
        }
    }
}

/// Q5_0 . Q8_0 rounded as ggml's AVX2 kernel: per block the exact products in eight lanes,
/// `lane * d` into eight f32 lanes (fused), summed at the end.
pub fn dot_q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    dot_q5_0_with::<ScalarLanes>(w, x)
}

/// [`dot_q5_0`] with its integer lanes from `L`.
pub(crate) fn dot_q5_0_with<L: IntLanes>(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = Lanes::default();
    for (a, b) in w.iter().zip(x) {
        acc.fma(a.d.to_f32() * b.d.to_f32(), &L::lanes32(&codes5(a.qh, &a.qs), 16, &b.qs));
    }
    acc.sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ5_0, BlockQ8_0};
    use crate::dot::avx2::{bits_to_bytes, hsum, mul_sum_i8, scale8, unpack_nibbles};

    /// The AVX2 twin of [`super::dot_q5_0`].
    pub(crate) fn dot_q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let high = _mm256_set1_epi8(0xF0u8 as i8);
        for (a, b) in w.iter().zip(x) {
            // A code without its fifth bit is q - 16 < 0: OR-ing 0xF0 into the nibble gives
            // exactly that byte; with the bit, the nibble alone is q - 16.
            let missing = _mm256_andnot_si256(bits_to_bytes(a.qh), high);
            let qa = _mm256_or_si256(unpack_nibbles(&a.qs), missing);
            // SAFETY: qs is 32 bytes; unaligned load.
            let qb = unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) };
            acc = _mm256_fmadd_ps(scale8(a.d, b.d), mul_sum_i8(qa, qb), acc);
        }
        hsum(acc)
    }
}
