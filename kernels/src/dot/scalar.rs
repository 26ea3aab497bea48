//! Portable reference dot products. Every SIMD kernel is tested against these.

use half::{bf16, f16};

use super::{DotKernels, Isa};
use crate::quant::{BlockQ4_0, BlockQ8_0, QK};

/// The scalar table.
pub const KERNELS: DotKernels = DotKernels {
    isa: Isa::Scalar,
    f32: dot_f32,
    f16: dot_f16,
    bf16: dot_bf16,
    q8_0: dot_q8_0,
    q4_0: dot_q4_0,
    q8_0_x4: |w, x| w.map(|r| dot_q8_0(r, x)),
    q4_0_x4: |w, x| w.map(|r| dot_q4_0(r, x)),
};

/// f32 . f32, accumulated in 8 lanes like the SIMD versions (so results are comparable).
pub fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut acc = [0.0f32; 8];
    let chunks = w.len() / 8 * 8;
    for (wc, xc) in w[..chunks].chunks_exact(8).zip(x[..chunks].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] = wc[i].mul_add(xc[i], acc[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks..w.len() {
        s += w[i] * x[i];
    }
    s
}

/// f16 . f32.
pub fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
}

/// bf16 . f32.
pub fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| a.to_f32() * b).sum()
}

/// Q8_0 . Q8_0: exact integer sums per block, scaled by both f16 scales.
pub fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let sumi: i32 = a.qs.iter().zip(&b.qs).map(|(&p, &q)| p as i32 * q as i32).sum();
        s += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    s
}

/// Q4_0 . Q8_0.
pub fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += ((a.qs[j] & 0x0F) as i32 - 8) * b.qs[j] as i32;
            sumi += ((a.qs[j] >> 4) as i32 - 8) * b.qs[j + QK / 2] as i32;
        }
        s += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    s
}
