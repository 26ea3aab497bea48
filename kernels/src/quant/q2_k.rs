//! Q2_K: 256 values in 16 sub-blocks of 16, each with a 4-bit scale and 4-bit min, scaled by the
//! super-block's f16 `d` and `dmin`; value = d*sc*q - dmin*m, q in 0..4. Its dot products read
//! Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8K, QK_K};

/// One ggml `block_q2_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    /// Low nibble: scale, high nibble: min, per 16 values.
    pub scales: [u8; QK_K / 16],
    /// 2-bit codes: per 128 values, byte l holds values l, l+32, l+64, l+96 (bits 0-1, 2-3, ...)
    /// for l < 32.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the scales.
    pub d: f16,
    /// Super-block scale of the mins.
    pub dmin: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);
const _: () = assert!(std::mem::align_of::<BlockQ2K>() == 2);

/// Expands Q2_K blocks to f32, bit-identical to ggml.
pub fn dequantize_q2_k(blocks: &[BlockQ2K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, min) = (b.d.to_f32(), b.dmin.to_f32());
        let mut y = ob.iter_mut();
        let mut is = 0;
        for q in b.qs.chunks_exact(32) {
            for shift in (0..8).step_by(2) {
                for half in [&q[..16], &q[16..]] {
                    let sc = b.scales[is];
                    is += 1;
                    let (dl, ml) = (d * (sc & 0xF) as f32, min * (sc >> 4) as f32);
                    for &v in half {
                        *y.next().expect("256 values") = dl * ((v >> shift) & 3) as f32 - ml;
                    }
                }
            }
        }
    }
}

/// The 256 codes in value order: value `128j + 32k + i` is bits `2k` of byte `32j + i`.
pub(crate) fn codes(b: &BlockQ2K) -> [i8; QK_K] {
    std::array::from_fn(|v| {
        let (j, k, i) = (v / 128, v % 128 / 32, v % 32);
        ((b.qs[32 * j + i] >> (2 * k)) & 3) as i8
    })
}

impl super::unpacked::Unpack for BlockQ2K {
    const MULT: f32 = 1.0;
    // Codes 0..=3.
    const SMALL_CODES: bool = true;
    const MIN_LANES: bool = true;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        codes[..QK_K].copy_from_slice(&self::codes(self));
        for (l, &s) in ls.iter_mut().zip(&self.scales) {
            *l = (s & 0xF) as i16;
        }
        self.d.to_f32()
    }
    fn minima(&self) -> (f32, [u8; 16]) {
        (self.dmin.to_f32(), self.scales.map(|s| s >> 4))
    }
}

/// Q2_K . Q8_K rounded as ggml's AVX2 kernel: per super-block the mins against the
/// activations' `bsums` in eight lanes times `-dmin`, then the codes' exact products times
/// their scales in eight lanes times `d`, both added fused into eight f32 lanes.
pub fn dot_q2_k(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
    dot_q2_k_with::<ScalarLanes>(w, x)
}

/// [`dot_q2_k`] with its integer lanes from `L`.
pub(crate) fn dot_q2_k_with<L: IntLanes>(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = Lanes::default();
    for (a, b) in w.iter().zip(x) {
        let mins: [i32; 8] = std::array::from_fn(|l| {
            (a.scales[2 * l] >> 4) as i32 * b.bsums[2 * l] as i32
                + (a.scales[2 * l + 1] >> 4) as i32 * b.bsums[2 * l + 1] as i32
        });
        acc.fma(-b.d * a.dmin.to_f32(), &mins);
        let ls = a.scales.map(|s| (s & 0xF) as i32);
        acc.fma(b.d * a.d.to_f32(), &L::lanes256(&codes(a), &ls, &b.qs));
    }
    acc.sum()
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ2K, BlockQ8K};
    use crate::dot::avx2::{f16_to_f32, hsum};

    /// The AVX2 twin of [`super::dot_q2_k`] (ggml's kernel): the same lanes, the same bits.
    pub(crate) fn dot_q2_k(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockQ2K], x: &[BlockQ8K]) -> f32 {
        let (m3, m4) = (_mm256_set1_epi8(3), _mm_set1_epi8(0xF));
        // Per k, the shuffle that puts sub-block scale 2k in the low lane's eight i16 and
        // 2k + 1 in the high lane's, from a register holding one run of eight scales in both
        // lanes: one byte shuffle instead of moving each scale through a general register.
        let pick: [__m256i; 4] = std::array::from_fn(|k| {
            let lo = ((4 * k as i16 + 1) << 8) | (4 * k as i16);
            let hi = ((4 * k as i16 + 3) << 8) | (4 * k as i16 + 2);
            _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
        });
        let mut acc = _mm256_setzero_ps();
        for (a, b) in w.iter().zip(x) {
            // SAFETY: scales is 16 bytes, bsums 16 i16; unaligned loads.
            let (packed, bsums) = unsafe {
                (
                    _mm_loadu_si128(a.scales.as_ptr() as *const __m128i),
                    _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i),
                )
            };
            let mins = _mm256_cvtepi8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(packed), m4));
            let dmin = _mm256_set1_ps(-b.d * f16_to_f32(a.dmin));
            acc = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bsums)), acc);
            let scales = _mm256_cvtepi8_epi16(_mm_and_si128(packed, m4));
            let runs = [
                _mm256_permute2x128_si256::<0x00>(scales, scales),
                _mm256_permute2x128_si256::<0x11>(scales, scales),
            ];
            let mut sumi = _mm256_setzero_si256();
            for (j, run) in runs.into_iter().enumerate() {
                // SAFETY: 32 * j + 32 <= 64 = qs's length; unaligned load.
                let bits =
                    unsafe { _mm256_loadu_si256(a.qs.as_ptr().add(32 * j) as *const __m256i) };
                let q2 = [
                    _mm256_and_si256(bits, m3),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m3),
                    _mm256_and_si256(_mm256_srli_epi16::<6>(bits), m3),
                ];
                for (k, q2) in q2.into_iter().enumerate() {
                    // SAFETY: 128 * j + 32 * k + 32 <= 256 = qs's length; unaligned load.
                    let q8 = unsafe {
                        _mm256_loadu_si256(b.qs.as_ptr().add(128 * j + 32 * k) as *const __m256i)
                    };
                    let sc = _mm256_shuffle_epi8(run, pick[k]);
                    let p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q2, q8));
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            acc = _mm256_fmadd_ps(
                _mm256_set1_ps(b.d * f16_to_f32(a.d)),
                _mm256_cvtepi32_ps(sumi),
                acc,
            );
        }
        hsum(acc)
    }
}
