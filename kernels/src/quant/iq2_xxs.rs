//! IQ2_XXS: 256 values in 8 runs of 32; each group of 8 is one of 256 grid points (values 8,
//! 25, 43) with 7 sign bits (the eighth makes the parity even) and a 4-bit run scale. 2.06 bits
//! per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, grid_unpack, ksigns, GridBlock, Run, KSIGN_BYTES};
use super::iq_grids::IQ2XXS_GRID;
use super::QK_K;

/// One GGUF `block_iq2_xxs`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2Xxs {
    /// Super-block scale.
    pub d: f16,
    /// Per run of 32: four grid indices (bytes), then 4 x 7 sign bits and the 4-bit scale.
    pub qs: [u16; QK_K / 8],
}

const _: () = assert!(std::mem::size_of::<BlockIq2Xxs>() == 66);
const _: () = assert!(std::mem::align_of::<BlockIq2Xxs>() == 2);

/// Run `r`'s grid-index word and sign/scale word.
#[inline]
fn words(b: &BlockIq2Xxs, r: usize) -> (u32, u32) {
    let q = &b.qs[4 * r..4 * r + 4];
    (q[0] as u32 | (q[1] as u32) << 16, q[2] as u32 | (q[3] as u32) << 16)
}

/// Expands blocks to f32 as ggml: `db = d * (0.5 + s) * 0.25`, value = `db * grid * sign`.
pub fn dequantize_iq2_xxs(blocks: &[BlockIq2Xxs], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let (idx, aux) = words(b, r);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for l in 0..4 {
                let grid = IQ2XXS_GRID[(idx >> (8 * l) & 0xFF) as usize].to_le_bytes();
                let signs = ksigns(aux >> (7 * l));
                for j in 0..8 {
                    let s = if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
                    y[8 * l + j] = db * grid[j] as f32 * s;
                }
            }
        }
    }
}

impl GridBlock for BlockIq2Xxs {
    const SIGNED: bool = false;
    const MULT: f32 = 0.125;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let (idx, aux) = words(self, r);
        let ls = (2 * (aux >> 28) + 1) as i16;
        Run {
            grid: std::array::from_fn(|l| IQ2XXS_GRID[(idx >> (8 * l) & 0xFF) as usize]),
            signs: std::array::from_fn(|l| KSIGN_BYTES[(aux >> (7 * l) & 127) as usize]),
            ls: [ls, ls],
        }
    }
}

grid_dots!(dot_iq2_xxs, BlockIq2Xxs);
grid_unpack!(BlockIq2Xxs);
