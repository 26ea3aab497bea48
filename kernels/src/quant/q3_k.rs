//! Q3_K: 256 values in 16 sub-blocks of 16 with 6-bit signed scales (offset 32) and one f16 `d`;
//! value = d*(sc - 32)*(q - 4*(1 - hbit)), low 2 bits in `qs`, the third in `hmask`.
//! Its dot products read Q8_K activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8K, QK_K};

/// One ggml `block_q3_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits: bit j of byte l belongs to value 32j + l.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, laid out as Q2_K's.
    pub qs: [u8; QK_K / 4],
    /// 16 scales, 6 bits each, packed.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::align_of::<BlockQ3K>() == 2);

/// The 16 scales (still offset by 32) unpacked from their 12 bytes, as ggml does.
pub fn scales_q3_k(packed: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| {
        u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]])
    };
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *byte as i8;
        }
    }
    out
}

/// Expands Q3_K blocks to f32, bit-identical to ggml.
pub fn dequantize_q3_k(blocks: &[BlockQ3K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        let mut y = ob.iter_mut();
        let (mut is, mut m) = (0, 1u8);
        for q in b.qs.chunks_exact(32) {
            for shift in (0..8).step_by(2) {
                for off in [0, 16] {
                    let dl = d_all * (scales[is] as i32 - 32) as f32;
                    is += 1;
                    for (&ql, &hm) in q[off..off + 16].iter().zip(&b.hmask[off..off + 16]) {
                        let h = if hm & m != 0 { 0 } else { 4 };
                        let v = ((ql >> shift) & 3) as i32 - h;
                        *y.next().expect("256 values") = dl * v as f32;
                    }
                }
                m <<= 1;
            }
        }
    }
}

/// The 256 signed codes in value order: value `128j + 32k + i` takes bits `2k` of byte
/// `32j + i` of `qs`, less 4 where bit `4j + k` of `hmask[i]` is clear.
fn codes(b: &BlockQ3K) -> [i8; QK_K] {
    // Loops over runs of 32 with the same shifts, so the compiler vectorises them.
    let mut out = [0i8; QK_K];
    for j in 0..2 {
        for k in 0..4 {
            let run = &mut out[128 * j + 32 * k..128 * j + 32 * k + 32];
            let (qs, bit) = (&b.qs[32 * j..32 * j + 32], 4 * j + k);
            for ((o, &q), &h) in run.iter_mut().zip(qs).zip(&b.hmask) {
                let low = ((q >> (2 * k)) & 3) as i8;
                *o = low - (((h >> bit) & 1) ^ 1) as i8 * 4;
            }
        }
    }
    out
}

/// Q3_K . Q8_K rounded as ggml's AVX2 kernel: per super-block the codes' exact products times
/// their scales in eight lanes, times `d` added fused into eight f32 lanes.
pub fn dot_q3_k(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
    dot_q3_k_with::<ScalarLanes>(w, x)
}

/// [`dot_q3_k`] with its integer lanes from `L`.
pub(crate) fn dot_q3_k_with<L: IntLanes>(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = Lanes::default();
    for (a, b) in w.iter().zip(x) {
        let ls = scales_q3_k(&a.scales).map(|s| s as i32 - 32);
        acc.fma(b.d * a.d.to_f32(), &L::lanes256(&codes(a), &ls, &b.qs));
    }
    acc.sum()
}

impl super::unpacked::Unpack for BlockQ3K {
    const MULT: f32 = 1.0;
    // Codes -4..=3.
    const SMALL_CODES: bool = true;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        codes.copy_from_slice(&self::codes(self));
        for (l, s) in ls.iter_mut().zip(scales_q3_k(&self.scales)) {
            *l = s as i16 - 32;
        }
        self.d.to_f32()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{scales_q3_k, BlockQ3K, BlockQ8K};
    use crate::dot::avx2::{f16_to_f32, hsum};

    /// The AVX2 twin of [`super::dot_q3_k`]: the same lanes, the same bits.
    pub(crate) fn dot_q3_k(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockQ3K], x: &[BlockQ8K]) -> f32 {
        let (m3, four) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
        let mut acc = _mm256_setzero_ps();
        for (a, b) in w.iter().zip(x) {
            // A plain loop: a closure passed to `map` was not inlined into this AVX2 body (an
            // out-of-line call per scale, a large share of the kernel's time in `perf`).
            let packed = scales_q3_k(&a.scales);
            let mut ls = [0i16; 16];
            for (l, &s) in ls.iter_mut().zip(&packed) {
                *l = s as i16 - 32;
            }
            // SAFETY: hmask is 32 bytes; unaligned load.
            let hbits = unsafe { _mm256_loadu_si256(a.hmask.as_ptr() as *const __m256i) };
            let mut sumi = _mm256_setzero_si256();
            for j in 0..2 {
                // SAFETY: 32 * j + 32 <= 64 = qs's length; unaligned load.
                let bits =
                    unsafe { _mm256_loadu_si256(a.qs.as_ptr().add(32 * j) as *const __m256i) };
                for k in 0..4 {
                    let shift = _mm_cvtsi32_si128(2 * k as i32);
                    let low = _mm256_and_si256(_mm256_srl_epi16(bits, shift), m3);
                    // 4 where the value's high bit is clear, else 0.
                    let bit = _mm256_set1_epi8((1u8 << (4 * j + k)) as i8);
                    let clear =
                        _mm256_cmpeq_epi8(_mm256_and_si256(hbits, bit), _mm256_setzero_si256());
                    let q3 = _mm256_sub_epi8(low, _mm256_and_si256(clear, four));
                    let at = 128 * j + 32 * k;
                    // SAFETY: at + 32 <= 256 = qs's length; unaligned load.
                    let q8 = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(at) as *const __m256i) };
                    // |q3| x sign(q8, q3): pairs of products fit i16.
                    let p16 =
                        _mm256_maddubs_epi16(_mm256_sign_epi8(q3, q3), _mm256_sign_epi8(q8, q3));
                    let is = 8 * j + 2 * k;
                    let sc = _mm256_set_m128i(_mm_set1_epi16(ls[is + 1]), _mm_set1_epi16(ls[is]));
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, sc));
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
