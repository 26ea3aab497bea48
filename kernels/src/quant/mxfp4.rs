//! MXFP4 (OCP microscaling FP4, GGUF type 39): 32 e2m1 values sharing one power-of-two scale
//! (an E8M0 exponent byte), 17 bytes per block. As ggml stores it: byte `j` of `qs` holds value
//! `j` in its low nibble and value `j + 16` in its high nibble; a nibble indexes the doubled
//! e2m1 values `KVALUES_MXFP4`, scaled by half the block's power of two.

use bytemuck::{Pod, Zeroable};

/// One MXFP4 block (ggml's `block_mxfp4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMxfp4 {
    /// E8M0 exponent: the block's scale is `2^(e - 127)`.
    pub e: u8,
    /// 32 4-bit codes.
    pub qs: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<BlockMxfp4>() == 17);

/// The e2m1 values doubled (0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, times 2).
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the scale of exponent `e`, `2^(e - 128)`, as ggml's `ggml_e8m0_to_fp32_half` builds it
/// (subnormal bit patterns for `e < 2`).
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 { 0x0020_0000u32 << e } else { ((e as u32) - 1) << 23 };
    f32::from_bits(bits)
}

/// Expands blocks to f32, as ggml's `dequantize_row_mxfp4`.
pub fn dequantize_mxfp4(blocks: &[BlockMxfp4], out: &mut [f32]) {
    assert_eq!(blocks.len() * 32, out.len(), "dequantize_mxfp4: length mismatch");
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = e8m0_to_f32_half(b.e);
        for j in 0..16 {
            o[j] = KVALUES_MXFP4[(b.qs[j] & 0x0F) as usize] as f32 * d;
            o[j + 16] = KVALUES_MXFP4[(b.qs[j] >> 4) as usize] as f32 * d;
        }
    }
}

/// Quantises `x` (a multiple of 32 values) as gguf-py's `MXFP4.quantize_blocks` does: the
/// exponent `floor(log2(max |x|)) - 2 + 127` (0 for an all-zero block), then per value the code
/// whose scaled value is nearest (the first such code on a tie).
pub fn quantize_mxfp4(x: &[f32], out: &mut [BlockMxfp4]) {
    assert_eq!(out.len() * 32, x.len(), "quantize_mxfp4: length mismatch");
    for (xb, b) in x.chunks_exact(32).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0).clamp(0.0, 255.0) as u8
        } else {
            0
        };
        let d = e8m0_to_f32_half(e);
        let code = |v: f32| {
            let mut best = (0usize, f32::INFINITY);
            for (i, &k) in KVALUES_MXFP4.iter().enumerate() {
                let err = (d * k as f32 - v).abs();
                if err < best.1 {
                    best = (i, err);
                }
            }
            best.0 as u8
        };
        b.e = e;
        for j in 0..16 {
            b.qs[j] = code(xb[j]) | (code(xb[j + 16]) << 4);
        }
    }
}
