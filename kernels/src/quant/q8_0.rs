//! Q8_0: 32 signed bytes and an f16 scale; value = q * d. Also the activation format for the
//! integer dot products of Q8_0 and Q4_0 weights (as llama.cpp does).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK;

/// One GGUF `block_q8_0`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quantised values.
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::align_of::<BlockQ8_0>() == 2);

/// Quantises `x` (a multiple of 32 long) into `out`, llama.cpp's reference rounding:
/// `d = max|x| / 127`, `q = round(x / d)` (half away from zero).
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        out.len() * QK,
        "quantize_q8_0: {} values into {} blocks",
        x.len(),
        out.len()
    );
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Quantises activations the way llama.cpp's x86 CPU backend does before a Q8_0/Q4_0 dot
/// product (`quantize_row_q8_0` with AVX): `d = f16(amax / 127)`, `q = round_half_even(x *
/// (127 / amax))`. This differs from [`quantize_q8_0`] (the reference rule llama-quantize uses
/// for weights) in the last bit now and then, and matching it is what makes floe's logits agree
/// with llama.cpp's. Runs the detected ISA's kernel.
pub fn quantize_q8_0_activations(x: &[f32], out: &mut [BlockQ8_0]) {
    assert_eq!(
        x.len(),
        out.len() * QK,
        "quantize_q8_0_activations: {} values into {} blocks",
        x.len(),
        out.len()
    );
    (crate::dot::kernels().quantize_q8_0)(x, out)
}

/// [`quantize_q8_0_activations`] one value at a time: the scalar twin of the SIMD kernels.
pub fn quantize_q8_0_activations_scalar(x: &[f32], out: &mut [BlockQ8_0]) {
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        b.d = f16::from_f32(amax / 127.0);
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = super::round_ties_even_small(v * id) as i8;
        }
    }
}

/// Expands Q8_0 blocks back to f32.
pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (o, &q) in ob.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}
