//! Q2_K: 256 values in 16 sub-blocks of 16, each with a 4-bit scale and 4-bit min, scaled by the
//! super-block's f16 `d` and `dmin`; value = d*sc*q - dmin*m, q in 0..4. Dequantisation only
//! (its dot product goes through f32).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK_K;

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
