//! IQ1_S: 256 values in 8 runs of 32; each group of 8 is one of 2048 ternary grid points
//! (-1, 0, 1), shifted by a run-wide `±1/8` and scaled by a 3-bit run scale. 1.56 bits per
//! value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, Delta, GridBlock, Run};
use super::iq_grids::IQ1S_GRID;
use super::QK_K;

/// The shift of IQ1_S and IQ1_M groups (ggml's `IQ1S_DELTA`).
pub(crate) const IQ1_DELTA: f32 = 0.125;

/// One GGUF `block_iq1_s`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq1S {
    /// Super-block scale.
    pub d: f16,
    /// Low 8 bits of the 32 grid indices.
    pub qs: [u8; QK_K / 8],
    /// Per run: 4 x 3 high index bits, the 3-bit scale (bits 12-14), the shift's sign (15).
    pub qh: [u16; QK_K / 32],
}

const _: () = assert!(std::mem::size_of::<BlockIq1S>() == 50);
const _: () = assert!(std::mem::align_of::<BlockIq1S>() == 2);

#[inline]
fn grid(b: &BlockIq1S, r: usize, l: usize) -> u64 {
    IQ1S_GRID[b.qs[4 * r + l] as usize | ((b.qh[r] as usize >> (3 * l)) & 7) << 8]
}

/// Expands blocks to f32 as ggml: `dl * (grid + delta)` with `dl = d * (2s + 1)`.
pub fn dequantize_iq1_s(blocks: &[BlockIq1S], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let dl = d * (2 * ((b.qh[r] >> 12) & 7) + 1) as f32;
            let delta = if b.qh[r] & 0x8000 != 0 { -IQ1_DELTA } else { IQ1_DELTA };
            for l in 0..4 {
                for (j, g) in grid(b, r, l).to_le_bytes().into_iter().enumerate() {
                    y[8 * l + j] = dl * (g as i8 as f32 + delta);
                }
            }
        }
    }
}

impl GridBlock for BlockIq1S {
    const SIGNED: bool = true;
    const MULT: f32 = 1.0;
    const DELTA: Delta = Delta::PerRun(IQ1_DELTA);
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let ls = 2 * ((self.qh[r] >> 12) & 7) as i16 + 1;
        Run { grid: std::array::from_fn(|l| grid(self, r, l)), signs: [0; 4], ls: [ls, ls] }
    }
    #[inline(always)]
    fn delta_run(&self, r: usize, bsums: &[i16; 16]) -> i32 {
        let ls = 2 * ((self.qh[r] >> 12) & 7) as i32 + 1;
        let delta = if self.qh[r] & 0x8000 != 0 { -1 } else { 1 };
        ls * delta * (bsums[2 * r] as i32 + bsums[2 * r + 1] as i32)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_run_shifts(&self, bsums: &[i16; 16]) -> i32 {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (AVX2); qh is 8 words and bsums 16, unaligned loads.
        unsafe {
            let qh = _mm_loadu_si128(self.qh.as_ptr() as *const __m128i);
            // Per run `±(2s + 1)` (scale at bits 12..15, the shift's sign at 15), negated where
            // the word's top bit is set (the word or 1 is never zero).
            let ls = _mm_and_si128(_mm_srli_epi16::<11>(qh), _mm_set1_epi16(0xE));
            let ls = _mm_or_si128(ls, _mm_set1_epi16(1));
            let factors = _mm_sign_epi16(ls, _mm_or_si128(qh, _mm_set1_epi16(1)));
            // Each run's two halves' sums as one i16 (at most 32 * 128 in magnitude).
            let bsums = _mm256_loadu_si256(bsums.as_ptr() as *const __m256i);
            let runs = _mm256_madd_epi16(bsums, _mm256_set1_epi16(1));
            let runs =
                _mm_packs_epi32(_mm256_castsi256_si128(runs), _mm256_extracti128_si256::<1>(runs));
            let m = _mm_madd_epi16(factors, runs);
            let m = _mm_add_epi32(m, _mm_shuffle_epi32::<0x4E>(m));
            _mm_cvtsi128_si32(_mm_add_epi32(m, _mm_shuffle_epi32::<0xB1>(m)))
        }
    }
    /// The run's shift signs, the same for all its values (the prefill tile reads them; the
    /// dot products sum the shift per run, [`GridBlock::delta_run`]).
    fn delta_signs(&self, r: usize) -> [u64; 4] {
        let byte: u64 = if self.qh[r] & 0x8000 != 0 { 0xFF } else { 0x01 };
        [byte * 0x0101_0101_0101_0101; 4]
    }
}

grid_dots!(dot_iq1_s, BlockIq1S);
