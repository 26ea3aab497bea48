//! Q8_K: the activation format of the K-quant dot products. 256 signed bytes, an f32 scale (not
//! f16) and the sums of every 16 codes, which the dot products use for the weights' min/offset
//! terms.

use bytemuck::{Pod, Zeroable};

use super::QK_K;

/// One ggml `block_q8_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale: value = q * d.
    pub d: f32,
    /// Codes.
    pub qs: [i8; QK_K],
    /// Sum of each 16 consecutive codes.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(std::mem::align_of::<BlockQ8K>() == 4);

impl BlockQ8K {
    /// An all-zero block.
    pub const ZERO: Self = Self { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
}

/// Quantises `x` (a multiple of 256 long) into `out` exactly as ggml's `quantize_row_q8_K`:
/// `max` is the signed value of the first element of largest magnitude, `iscale = -127 / max`,
/// `q = min(127, round_half_even(x * iscale))`, `d = 1 / iscale` kept as f32.
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(
        x.len(),
        out.len() * QK_K,
        "quantize_q8_k: {} values into {} blocks",
        x.len(),
        out.len()
    );
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        // The largest magnitude in eight lanes (vectorised; a NaN never wins, as in ggml's
        // strict comparison), then the first value that has it.
        let mut lanes = [0.0f32; 8];
        for c in xb.chunks_exact(8) {
            for (m, &v) in lanes.iter_mut().zip(c) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let amax = lanes.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
        if amax == 0.0 {
            *b = BlockQ8K::ZERO;
            continue;
        }
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (super::round_ties_even_small(v * iscale) as i32).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Expands Q8_K blocks back to f32.
pub fn dequantize_q8_k(blocks: &[BlockQ8K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (o, &q) in ob.iter_mut().zip(&b.qs) {
            *o = q as f32 * b.d;
        }
    }
}
