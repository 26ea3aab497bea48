//! IQ2_XS: 256 values in 8 runs of 32; each group of 8 is one of 512 grid points with 7 sign
//! bits (parity-completed) in one 16-bit word, and a 4-bit scale per 16 values. 2.31 bits per
//! value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, grid_unpack, ksigns, GridBlock, Run, KSIGN_BYTES};
use super::iq_grids::IQ2XS_GRID;
use super::QK_K;

/// One GGUF `block_iq2_xs`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2Xs {
    /// Super-block scale.
    pub d: f16,
    /// Per group of 8: a 9-bit grid index and 7 sign bits.
    pub qs: [u16; QK_K / 8],
    /// Per run of 32: the 4-bit scales of its two halves.
    pub scales: [u8; QK_K / 32],
}

const _: () = assert!(std::mem::size_of::<BlockIq2Xs>() == 74);
const _: () = assert!(std::mem::align_of::<BlockIq2Xs>() == 2);

/// Expands blocks to f32 as ggml: `db = d * (0.5 + s) * 0.25` per half-run.
pub fn dequantize_iq2_xs(blocks: &[BlockIq2Xs], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + (b.scales[r] & 0xF) as f32) * 0.25,
                d * (0.5 + (b.scales[r] >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let q = b.qs[4 * r + l];
                let grid = IQ2XS_GRID[(q & 511) as usize].to_le_bytes();
                let signs = ksigns(q as u32 >> 9);
                for j in 0..8 {
                    let s = if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
                    y[8 * l + j] = db[l / 2] * grid[j] as f32 * s;
                }
            }
        }
    }
}

impl GridBlock for BlockIq2Xs {
    const SIGNED: bool = false;
    const MULT: f32 = 0.125;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let q = &self.qs[4 * r..4 * r + 4];
        let sc = self.scales[r];
        Run {
            grid: std::array::from_fn(|l| IQ2XS_GRID[(q[l] & 511) as usize]),
            signs: std::array::from_fn(|l| KSIGN_BYTES[(q[l] >> 9) as usize]),
            ls: [2 * (sc & 0xF) as i16 + 1, 2 * (sc >> 4) as i16 + 1],
        }
    }
}

grid_dots!(dot_iq2_xs, BlockIq2Xs);
grid_unpack!(BlockIq2Xs);
