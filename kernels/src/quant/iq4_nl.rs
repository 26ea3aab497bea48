//! IQ4_NL: 32 4-bit codes indexing a fixed non-linear table of 16 values, with an f16 scale;
//! value = KVALUES_IQ4NL[q] * d. Its dot products read Q8_0 activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8_0, QK};

/// The 16 levels of IQ4_NL and IQ4_XS (ggml's `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] =
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// One GGUF `block_iq4_nl`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Nl {
    /// Scale.
    pub d: f16,
    /// Value j's code in the low nibble of byte j, value j + 16's in its high nibble.
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Nl>() == 18);
const _: () = assert!(std::mem::align_of::<BlockIq4Nl>() == 2);

/// Expands blocks to f32.
pub fn dequantize_iq4_nl(blocks: &[BlockIq4Nl], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            ob[j] = d * KVALUES_IQ4NL[(b.qs[j] & 0x0F) as usize] as f32;
            ob[j + QK / 2] = d * KVALUES_IQ4NL[(b.qs[j] >> 4) as usize] as f32;
        }
    }
}

/// The scale product ggml uses, activation's times weight's.
#[inline]
fn scale(a: &BlockIq4Nl, b: &BlockQ8_0) -> f32 {
    b.d.to_f32() * a.d.to_f32()
}

/// IQ4_NL . Q8_0 rounded as ggml's AVX2 kernel: blocks in pairs, the first of each pair into
/// one set of eight f32 lanes and the second into another (`lane * d`, fused), the two sets
/// added and summed; an odd last block's exact sum then added fused.
pub fn dot_iq4_nl(w: &[BlockIq4Nl], x: &[BlockQ8_0]) -> f32 {
    dot_iq4_nl_with::<ScalarLanes>(w, x)
}

/// [`dot_iq4_nl`] with its integer lanes from `L`.
pub(crate) fn dot_iq4_nl_with<L: IntLanes>(w: &[BlockIq4Nl], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let (mut even, mut odd) = (Lanes::default(), Lanes::default());
    let pairs = w.len() / 2;
    for i in 0..pairs {
        let (a, b) = ((&w[2 * i], &x[2 * i]), (&w[2 * i + 1], &x[2 * i + 1]));
        even.fma(scale(a.0, a.1), &L::table_run(&a.0.qs, &KVALUES_IQ4NL, &a.1.qs));
        odd.fma(scale(b.0, b.1), &L::table_run(&b.0.qs, &KVALUES_IQ4NL, &b.1.qs));
    }
    let s = even.plus(&odd).sum();
    tail::<L>(&w[2 * pairs..], &x[2 * pairs..], s)
}

/// ggml's scalar tail after the pairs (at most one block).
#[inline]
fn tail<L: IntLanes>(w: &[BlockIq4Nl], x: &[BlockQ8_0], mut s: f32) -> f32 {
    for (a, b) in w.iter().zip(x) {
        let sumi: i32 = L::table_run(&a.qs, &KVALUES_IQ4NL, &b.qs).iter().sum();
        s = (sumi as f32).mul_add(scale(a, b), s);
    }
    s
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockIq4Nl, BlockQ8_0, KVALUES_IQ4NL};
    use crate::dot::avx2::{hsum, mul_sum_i8, scale8, unpack_nibbles};

    /// The 16 levels in both 128-bit lanes, for `vpshufb`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(crate) fn levels() -> __m256i {
        // SAFETY: the table is 16 bytes.
        let t = unsafe { _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i) };
        _mm256_set_m128i(t, t)
    }

    /// The AVX2 twin of [`super::dot_iq4_nl`].
    pub(crate) fn dot_iq4_nl(w: &[BlockIq4Nl], x: &[BlockQ8_0]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockIq4Nl], x: &[BlockQ8_0]) -> f32 {
        let (mut even, mut odd) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let table = levels();
        let pairs = w.len() / 2;
        for i in 0..pairs {
            for (acc, j) in [(&mut even, 2 * i), (&mut odd, 2 * i + 1)] {
                let qa = _mm256_shuffle_epi8(table, unpack_nibbles(&w[j].qs));
                // SAFETY: qs is 32 bytes; unaligned load.
                let qb = unsafe { _mm256_loadu_si256(x[j].qs.as_ptr() as *const __m256i) };
                *acc = _mm256_fmadd_ps(scale8(x[j].d, w[j].d), mul_sum_i8(qa, qb), *acc);
            }
        }
        super::tail::<super::ScalarLanes>(
            &w[2 * pairs..],
            &x[2 * pairs..],
            hsum(_mm256_add_ps(even, odd)),
        )
    }
}
