//! IQ3_S: 256 values in 8 runs of 32; each group of 4 is one of 512 grid points (8 low index
//! bits in `qs`, the ninth in `qh`), with 8 explicit sign bits per group of 8 and a 4-bit scale
//! per run. 3.44 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, grid_unpack, GridBlock, Run, SIGN_BYTES};
use super::iq_grids::IQ3S_GRID;
use super::QK_K;

/// One GGUF `block_iq3_s`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq3S {
    /// Super-block scale.
    pub d: f16,
    /// Low 8 bits of the 64 grid indices.
    pub qs: [u8; QK_K / 4],
    /// Per run of 32: the ninth index bit of its 8 groups of 4.
    pub qh: [u8; QK_K / 32],
    /// One sign bit per value.
    pub signs: [u8; QK_K / 8],
    /// 4-bit run scales, two per byte.
    pub scales: [u8; QK_K / 64],
}

const _: () = assert!(std::mem::size_of::<BlockIq3S>() == 110);
const _: () = assert!(std::mem::align_of::<BlockIq3S>() == 2);

/// Group of 8 `l` of run `r`: its two grid entries and its signs.
#[inline]
fn group(b: &BlockIq3S, r: usize, l: usize) -> (u32, u32, u8) {
    let (qs, qh) = (&b.qs[8 * r..], b.qh[r] as usize);
    let i1 = qs[2 * l] as usize | (qh << (8 - 2 * l) & 256);
    let i2 = qs[2 * l + 1] as usize | (qh << (7 - 2 * l) & 256);
    (IQ3S_GRID[i1], IQ3S_GRID[i2], b.signs[4 * r + l])
}

fn run_scale(b: &BlockIq3S, r: usize) -> u8 {
    (b.scales[r / 2] >> (4 * (r % 2))) & 0xF
}

/// Expands blocks to f32 as ggml: `db = d * (1 + 2s)` per run.
pub fn dequantize_iq3_s(blocks: &[BlockIq3S], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let db = d * (1 + 2 * run_scale(b, r) as i32) as f32;
            for l in 0..4 {
                let (g1, g2, signs) = group(b, r, l);
                let (g1, g2) = (g1.to_le_bytes(), g2.to_le_bytes());
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

impl GridBlock for BlockIq3S {
    const SIGNED: bool = false;
    const SIGN_BITS: bool = true;
    const MULT: f32 = 1.0;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let groups: [(u32, u32, u8); 4] = std::array::from_fn(|l| group(self, r, l));
        let ls = 2 * run_scale(self, r) as i16 + 1;
        Run {
            grid: groups.map(|g| g.0 as u64 | (g.1 as u64) << 32),
            signs: groups.map(|g| SIGN_BYTES[g.2 as usize]),
            ls: [ls, ls],
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_grid(&self, r: usize) -> std::arch::x86_64::__m256i {
        use std::arch::x86_64::*;
        // Index `j` of the run: byte `j` of its eight, and bit `j` of its `qh` byte as bit 8
        // (as `group` takes them).
        // SAFETY: the caller's contract (AVX2); the run's eight index bytes are in qs
        // (unaligned 8-byte load); the indices are 9 bits, inside the 512-entry grid.
        unsafe {
            let q = _mm_loadl_epi64(self.qs.as_ptr().add(8 * r) as *const __m128i);
            let high = _mm256_srlv_epi32(
                _mm256_set1_epi32((self.qh[r] as i32) << 8),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
            );
            let idx = _mm256_or_si256(
                _mm256_cvtepu8_epi32(q),
                _mm256_and_si256(high, _mm256_set1_epi32(256)),
            );
            _mm256_i32gather_epi32::<4>(IQ3S_GRID.as_ptr() as *const i32, idx)
        }
    }
    #[inline(always)]
    fn sign_bits(&self, r: usize) -> u32 {
        let s = &self.signs[4 * r..4 * r + 4];
        u32::from_le_bytes([s[0], s[1], s[2], s[3]])
    }
}

grid_dots!(dot_iq3_s, BlockIq3S);
grid_unpack!(BlockIq3S);
