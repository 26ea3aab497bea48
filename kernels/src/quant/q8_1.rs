//! Q8_1: the activation format of the Q4_1 and Q5_1 dot products. Q8_0 plus `s = d * Σq`, the
//! term the weights' per-block minimum multiplies.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK;

/// One ggml `block_q8_1`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale: value = q * d.
    pub d: f16,
    /// `d * Σ qs` (with `d` before its rounding to f16).
    pub s: f16,
    /// Codes.
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::align_of::<BlockQ8_1>() == 2);

impl BlockQ8_1 {
    /// An all-zero block.
    pub const ZERO: Self = Self { d: f16::ZERO, s: f16::ZERO, qs: [0; QK] };
}

/// Quantises activations as llama.cpp's x86 backend does (`quantize_row_q8_1` with AVX2):
/// `d = amax / 127`, `q = round_half_even(x * 127 / amax)`, `s = f16(d * Σq)`.
pub fn quantize_q8_1_activations(x: &[f32], out: &mut [BlockQ8_1]) {
    assert_eq!(
        x.len(),
        out.len() * QK,
        "quantize_q8_1: {} values into {} blocks",
        x.len(),
        out.len()
    );
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(xb) {
            *q = super::round_ties_even_small(v * id) as i8;
            sum += *q as i32;
        }
        b.d = f16::from_f32(d);
        b.s = f16::from_f32(d * sum as f32);
    }
}
