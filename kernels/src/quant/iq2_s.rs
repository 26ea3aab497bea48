//! IQ2_S: 256 values in 8 runs of 32; each group of 8 is one of 1024 grid points (8 low index
//! bits in `qs`, 2 high in `qh`) with 8 explicit sign bits, and a 4-bit scale per 16 values.
//! 2.56 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::{grid_dots, grid_unpack, GridBlock, Run, SIGN_BYTES};
use super::iq_grids::IQ2S_GRID;
use super::QK_K;

/// One GGUF `block_iq2_s`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIq2S {
    /// Super-block scale.
    pub d: f16,
    /// 32 low grid-index bytes, then 32 sign bytes.
    pub qs: [u8; QK_K / 4],
    /// Per run of 32: the high index bits of its four groups (2 bits each).
    pub qh: [u8; QK_K / 32],
    /// Per run of 32: the 4-bit scales of its two halves.
    pub scales: [u8; QK_K / 32],
}

const _: () = assert!(std::mem::size_of::<BlockIq2S>() == 82);
const _: () = assert!(std::mem::align_of::<BlockIq2S>() == 2);

/// Group `l` of run `r`: its grid entry and its signs.
#[inline]
fn group(b: &BlockIq2S, r: usize, l: usize) -> (u64, u8) {
    let idx = b.qs[4 * r + l] as usize | ((b.qh[r] as usize) << (8 - 2 * l) & 0x300);
    (IQ2S_GRID[idx], b.qs[QK_K / 8 + 4 * r + l])
}

/// Expands blocks to f32 as ggml: `db = d * (0.5 + s) * 0.25` per half-run.
pub fn dequantize_iq2_s(blocks: &[BlockIq2S], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (r, y) in ob.chunks_exact_mut(32).enumerate() {
            let db = [
                d * (0.5 + (b.scales[r] & 0xF) as f32) * 0.25,
                d * (0.5 + (b.scales[r] >> 4) as f32) * 0.25,
            ];
            for l in 0..4 {
                let (grid, signs) = group(b, r, l);
                let grid = grid.to_le_bytes();
                for j in 0..8 {
                    let s = if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
                    y[8 * l + j] = db[l / 2] * grid[j] as f32 * s;
                }
            }
        }
    }
}

impl GridBlock for BlockIq2S {
    const SIGNED: bool = false;
    const SIGN_BITS: bool = true;
    const MULT: f32 = 0.125;
    fn scale_f16(&self) -> f16 {
        self.d
    }
    #[inline(always)]
    fn run(&self, r: usize) -> Run {
        let groups: [(u64, u8); 4] = std::array::from_fn(|l| group(self, r, l));
        let sc = self.scales[r];
        Run {
            grid: groups.map(|g| g.0),
            signs: groups.map(|g| SIGN_BYTES[g.1 as usize]),
            ls: [2 * (sc & 0xF) as i16 + 1, 2 * (sc >> 4) as i16 + 1],
        }
    }
    #[inline(always)]
    fn sign_bits(&self, r: usize) -> u32 {
        let at = QK_K / 8 + 4 * r;
        u32::from_le_bytes([self.qs[at], self.qs[at + 1], self.qs[at + 2], self.qs[at + 3]])
    }
}

grid_dots!(dot_iq2_s, BlockIq2S);
grid_unpack!(BlockIq2S);
