//! IQ3_XXS: 256 values in 8 runs of 32; each group of 4 is one of 256 grid points, each group
//! of 8 has 7 sign bits (parity-completed), and each run a 4-bit scale. 3.06 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, grid_unpack, ksigns, GridBlock, Run, KSIGN_BYTES};
use super::iq_grids::IQ3XXS_GRID;
use super::QK_K;

/// One GGUF `block_iq3_xxs`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq3Xxs {
    /// Super-block scale.
    pub d: f16,
    /// 64 grid indices (one per 4 values), then per run a word of 4 x 7 sign bits and the
    /// 4-bit scale.
    pub qs: [u8; 3 * QK_K / 8],
}

const _: () = assert!(std::mem::size_of::<BlockIq3Xxs>() == 98);
const _: () = assert!(std::mem::align_of::<BlockIq3Xxs>() == 2);

/// Run `r`'s sign/scale word.
#[inline]
fn aux(b: &BlockIq3Xxs, r: usize) -> u32 {
    let at = QK_K / 4 + 4 * r;
    u32::from_le_bytes([b.qs[at], b.qs[at + 1], b.qs[at + 2], b.qs[at + 3]])
}

/// Expands blocks to f32 as ggml: `db = d * (0.5 + s) * 0.5`, value = `db * grid * sign`.
pub fn dequantize_iq3_xxs(blocks: &[BlockIq3Xxs], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let a = aux(b, r);
            let db = d * (0.5 + (a >> 28) as f32) * 0.5;
            for l in 0..4 {
                let signs = ksigns(a >> (7 * l));
                let g1 = IQ3XXS_GRID[b.qs[8 * r + 2 * l] as usize].to_le_bytes();
                let g2 = IQ3XXS_GRID[b.qs[8 * r + 2 * l + 1] as usize].to_le_bytes();
                for j in 0..4 {
                    let s1 = if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
                    let s2 = if signs >> (j + 4) & 1 != 0 { -1.0 } else { 1.0 };
                    y[8 * l + j] = db * g1[j] as f32 * s1;
                    y[8 * l + j + 4] = db * g2[j] as f32 * s2;
                }
            }
        }
    }
}

impl GridBlock for BlockIq3Xxs {
    const SIGNED: bool = false;
    const MULT: f32 = 0.25;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let a = aux(self, r);
        let ls = (2 * (a >> 28) + 1) as i16;
        let q = &self.qs[8 * r..8 * r + 8];
        Run {
            grid: std::array::from_fn(|l| {
                IQ3XXS_GRID[q[2 * l] as usize] as u64
                    | (IQ3XXS_GRID[q[2 * l + 1] as usize] as u64) << 32
            }),
            signs: std::array::from_fn(|l| KSIGN_BYTES[(a >> (7 * l) & 127) as usize]),
            ls: [ls, ls],
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_grid(&self, r: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // SAFETY: the caller's contract (AVX2); the run's eight index bytes are in qs
        // (unaligned 8-byte load); the indices are bytes, inside the 256-entry grid.
        unsafe {
            let q = _mm_loadl_epi64(self.qs.as_ptr().add(8 * r) as *const __m128i);
            _mm256_i32gather_epi32::<4>(IQ3XXS_GRID.as_ptr() as *const i32, _mm256_cvtepu8_epi32(q))
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_signs(&self, r: usize) -> std::arch::x86_64::__m256i {
        // SAFETY: the caller's contract (AVX2).
        unsafe { super::codes::avx2::ksign_words(aux(self, r)) }
    }
}

grid_dots!(dot_iq3_xxs, BlockIq3Xxs);
grid_unpack!(BlockIq3Xxs);
