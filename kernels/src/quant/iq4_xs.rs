//! IQ4_XS: 256 values in 8 runs of 32, each run's codes indexing the IQ4_NL levels with a
//! 6-bit run scale (`ls - 32`), under one f16 super-block scale. Its dot products read Q8_K
//! activations.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::Lanes;
use super::int_lanes::{IntLanes, ScalarLanes};
use super::iq4_nl::KVALUES_IQ4NL;
use super::{BlockQ8K, QK_K};

/// One GGUF `block_iq4_xs`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq4Xs {
    /// Super-block scale.
    pub d: f16,
    /// High 2 bits of each run's scale (run i: bits 2i, 2i + 1).
    pub scales_h: u16,
    /// Low 4 bits of each run's scale (run i: nibble i % 2 of byte i / 2).
    pub scales_l: [u8; QK_K / 64],
    /// Codes: run i's 16 bytes, value j in the low nibble of byte j, j + 16 in the high.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockIq4Xs>() == 136);
const _: () = assert!(std::mem::align_of::<BlockIq4Xs>() == 2);

impl BlockIq4Xs {
    /// Run `i`'s signed scale, `ls - 32`.
    #[inline]
    pub fn run_scale(&self, i: usize) -> i32 {
        let lo = (self.scales_l[i / 2] >> (4 * (i % 2))) & 0x0F;
        let hi = ((self.scales_h >> (2 * i)) & 3) as u8;
        (lo | (hi << 4)) as i32 - 32
    }
}

/// Expands blocks to f32 (`d * (ls - 32)` first, then times the level, as ggml).
pub fn dequantize_iq4_xs(blocks: &[BlockIq4Xs], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (i, (qs, y)) in b.qs.chunks_exact(16).zip(ob.chunks_exact_mut(32)).enumerate() {
            let dl = d * b.run_scale(i) as f32;
            for j in 0..16 {
                y[j] = dl * KVALUES_IQ4NL[(qs[j] & 0x0F) as usize] as f32;
                y[j + 16] = dl * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as f32;
            }
        }
    }
}

/// IQ4_XS . Q8_K rounded as ggml's AVX2 kernel: per super-block each run's exact products in
/// eight lanes times its scale, then `lane * d` into eight f32 lanes (fused), summed at the end.
pub fn dot_iq4_xs(w: &[BlockIq4Xs], x: &[BlockQ8K]) -> f32 {
    dot_iq4_xs_with::<ScalarLanes>(w, x)
}

/// [`dot_iq4_xs`] with its integer lanes from `L`.
pub(crate) fn dot_iq4_xs_with<L: IntLanes>(w: &[BlockIq4Xs], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = Lanes::default();
    for (a, b) in w.iter().zip(x) {
        let mut lanes = [0i32; 8];
        for i in 0..QK_K / 32 {
            let run = L::table_run(&a.qs[16 * i..], &KVALUES_IQ4NL, &b.qs[32 * i..32 * i + 32]);
            for (l, r) in lanes.iter_mut().zip(run) {
                *l += a.run_scale(i) * r;
            }
        }
        acc.fma(a.d.to_f32() * b.d, &lanes);
    }
    acc.sum()
}

impl super::unpacked::Unpack for BlockIq4Xs {
    const MULT: f32 = 1.0;
    // Levels reach ±127.
    const SMALL_CODES: bool = false;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        for (i, (qs, c)) in self.qs.chunks_exact(16).zip(codes.chunks_exact_mut(32)).enumerate() {
            for j in 0..16 {
                c[j] = KVALUES_IQ4NL[(qs[j] & 0x0F) as usize];
                c[j + 16] = KVALUES_IQ4NL[(qs[j] >> 4) as usize];
            }
            ls[2 * i] = self.run_scale(i) as i16;
            ls[2 * i + 1] = self.run_scale(i) as i16;
        }
        self.d.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { avx2::unpack_codes(self, codes) };
        for (i, l) in ls.chunks_exact_mut(2).enumerate() {
            l.fill(self.run_scale(i) as i16);
        }
        self.d.to_f32()
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::super::iq4_nl::avx2::levels;
    use super::{BlockIq4Xs, BlockQ8K};
    use crate::dot::avx2::{f16_to_f32, hsum, unpack_nibbles};

    /// Every run's 32 codes, one level lookup (`vpshufb`) per run.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    pub(crate) unsafe fn unpack_codes(b: &BlockIq4Xs, codes: &mut [i8]) {
        assert!(codes.len() >= 256);
        let table = levels();
        for (i, qs) in b.qs.chunks_exact(16).enumerate() {
            let c = _mm256_shuffle_epi8(table, unpack_nibbles(qs.try_into().expect("16 bytes")));
            // SAFETY: 32 * i + 32 <= 256 <= codes.len(); an unaligned store.
            unsafe { _mm256_storeu_si256(codes.as_mut_ptr().add(32 * i) as *mut __m256i, c) };
        }
    }

    /// The AVX2 twin of [`super::dot_iq4_xs`]: the same exact integer sums per super-block.
    pub(crate) fn dot_iq4_xs(w: &[BlockIq4Xs], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        // SAFETY: only in the AVX2 column of the type table, used after
        // `Isa::Avx2.supported()` (AVX2, FMA, F16C).
        unsafe { imp(w, x) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn imp(w: &[BlockIq4Xs], x: &[BlockQ8K]) -> f32 {
        let table = levels();
        let mut acc = _mm256_setzero_ps();
        for (a, b) in w.iter().zip(x) {
            let mut sum = _mm256_setzero_si256();
            for i in 0..8 {
                let qs: &[u8; 16] = a.qs[16 * i..16 * i + 16].try_into().expect("16 bytes");
                let qa = _mm256_shuffle_epi8(table, unpack_nibbles(qs));
                // SAFETY: 32 * i + 32 <= 256 = qs's length; unaligned load.
                let qb = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * i) as *const __m256i) };
                // |a| x sign(b, a) with maddubs: pairs of products fit i16 (2 * 127 * 127).
                let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qa, qa), _mm256_sign_epi8(qb, qa));
                let ls = _mm256_set1_epi16(a.run_scale(i) as i16);
                sum = _mm256_add_epi32(sum, _mm256_madd_epi16(p16, ls));
            }
            let d = _mm256_set1_ps(f16_to_f32(a.d) * b.d);
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc);
        }
        hsum(acc)
    }
}
