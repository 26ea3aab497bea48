//! IQ1_M: 256 values; each group of 8 is one of 2048 ternary grid points with its own `±1/8`
//! shift, 3-bit scales per 16 values, and the f16 super-block scale spread over the top
//! nibbles of the four scale words. 1.75 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, Delta, GridBlock, Run};
use super::iq1_s::IQ1_DELTA;
use super::iq_grids::IQ1S_GRID;
use super::QK_K;

/// One GGUF `block_iq1_m`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq1M {
    /// Low 8 bits of the 32 grid indices.
    pub qs: [u8; QK_K / 8],
    /// Per group of 8 a nibble: 3 high index bits and the shift's sign (bit 3).
    pub qh: [u8; QK_K / 16],
    /// Four little-endian words: 3-bit scales per 16 values, the super-block scale's nibbles.
    pub scales: [u8; QK_K / 32],
}

const _: () = assert!(std::mem::size_of::<BlockIq1M>() == 56);

impl BlockIq1M {
    fn word(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.scales[2 * i], self.scales[2 * i + 1]])
    }

    /// The super-block scale, assembled from the top nibble of each scale word.
    pub fn d(&self) -> f32 {
        self.d_f16().to_f32()
    }

    /// The super-block scale as stored: an f16 spread over the scale words' top nibbles.
    fn d_f16(&self) -> f16 {
        let sc = [self.word(0), self.word(1), self.word(2), self.word(3)];
        let bits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00F0) | ((sc[2] >> 4) & 0x0F00) | (sc[3] & 0xF000);
        f16::from_bits(bits)
    }

    /// The scale (`2s + 1`) of half `h` (0, 1) of run `r`.
    fn ls(&self, r: usize, h: usize) -> i32 {
        2 * ((self.word(r / 2) >> (6 * (r % 2) + 3 * h)) & 7) as i32 + 1
    }

    /// Group `l` (0..4) of run `r`: its grid entry and its shift's sign.
    fn group(&self, r: usize, l: usize) -> (u64, i32) {
        let qh = self.qh[2 * r + l / 2] as usize;
        let idx = self.qs[4 * r + l] as usize | (qh << (8 - 4 * (l % 2)) & 0x700);
        let neg = qh & if l.is_multiple_of(2) { 0x08 } else { 0x80 } != 0;
        (IQ1S_GRID[idx], if neg { -1 } else { 1 })
    }
}

/// Expands blocks to f32 as ggml: `dl * (grid + delta)` with `dl = d * (2s + 1)` per half-run.
pub fn dequantize_iq1_m(blocks: &[BlockIq1M], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            for l in 0..4 {
                let dl = d * b.ls(r, l / 2) as f32;
                let (grid, sign) = b.group(r, l);
                let delta = sign as f32 * IQ1_DELTA;
                for (j, g) in grid.to_le_bytes().into_iter().enumerate() {
                    y[8 * l + j] = dl * (g as i8 as f32 + delta);
                }
            }
        }
    }
}

impl GridBlock for BlockIq1M {
    const SIGNED: bool = true;
    const MULT: f32 = 1.0;
    const DELTA: Delta = Delta::Lanes(IQ1_DELTA);
    fn scale_f16(&self) -> f16 {
        self.d_f16()
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        Run {
            grid: std::array::from_fn(|l| self.group(r, l).0),
            signs: [0; 4],
            ls: [self.ls(r, 0) as i16, self.ls(r, 1) as i16],
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_delta_signs(&self, r: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // Group `l`'s sign is bit 3 of nibble `l` of the run's two `qh` bytes.
        let qh = self.qh[2 * r] as i64 | (self.qh[2 * r + 1] as i64) << 8;
        // SAFETY: the caller's contract (AVX2).
        unsafe {
            let bit = _mm256_setr_epi64x(0x8, 0x80, 0x800, 0x8000);
            let set = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(qh), bit), bit);
            _mm256_or_si256(set, _mm256_set1_epi8(1))
        }
    }
    #[inline(always)]
    fn delta_signs(&self, r: usize) -> [u64; 4] {
        // The shift's sign bit alone (bit 3 of each nibble), not the whole group with its grid
        // lookup.
        std::array::from_fn(|l| {
            let neg = self.qh[2 * r + l / 2] & if l % 2 == 0 { 0x08 } else { 0x80 } != 0;
            if neg {
                u64::MAX
            } else {
                0x0101_0101_0101_0101
            }
        })
    }
}

grid_dots!(dot_iq1_m, BlockIq1M);
