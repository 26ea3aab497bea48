//! Portable reference dot products. Every SIMD kernel is tested against these.

use half::{bf16, f16};

use super::{DotKernels, Isa};
use crate::quant::{
    codes_q6_k, e8m0_to_f32_half, scales_mins_k4, BlockMxfp4, BlockQ4K, BlockQ4_0, BlockQ5K,
    BlockQ6K, BlockQ8K, BlockQ8_0, KVALUES_MXFP4, QK,
};

/// The scalar table.
pub const KERNELS: DotKernels = DotKernels {
    isa: Isa::Scalar,
    table_isa: Isa::Scalar,
    f32: dot_f32,
    f16: dot_f16,
    bf16: dot_bf16,
    q8_0: dot_q8_0,
    q4_0: dot_q4_0,
    mxfp4: dot_mxfp4,
    q8_0_x4: |w, x| w.map(|r| dot_q8_0(r, x)),
    q4_0_x4: |w, x| w.map(|r| dot_q4_0(r, x)),
    axpy_f32,
    axpy_f16,
    x4_prefetches: false,
    q4_0_rows8: None,
    q4_0_rows8_x4: None,
    q4_k: dot_q4_k,
    q5_k: dot_q5_k,
    q6_k: dot_q6_k,
    quantize_q8_0: crate::quant::quantize_q8_0_activations_scalar,
    q8_sums: crate::quant::q8_sums_scalar,
    swiglu: crate::ops::swiglu_scalar,
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

/// `y += a * x`.
pub fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    y.iter_mut().zip(x).for_each(|(y, x)| *y = a.mul_add(*x, *y));
}

/// `y += a * x` with f16 `x`.
pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    y.iter_mut().zip(x).for_each(|(y, x)| *y = a.mul_add(x.to_f32(), *y));
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

/// MXFP4 . Q8_0, as ggml's `ggml_vec_dot_mxfp4_q8_0`: per block the exact integer sum of
/// code values times activations, scaled by the activation scale times half the block's scale.
pub fn dot_mxfp4(w: &[BlockMxfp4], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let mut sumi = 0i32;
        for j in 0..QK / 2 {
            sumi += KVALUES_MXFP4[(a.qs[j] & 0x0F) as usize] as i32 * b.qs[j] as i32;
            sumi += KVALUES_MXFP4[(a.qs[j] >> 4) as usize] as i32 * b.qs[j + QK / 2] as i32;
        }
        s += b.d.to_f32() * e8m0_to_f32_half(a.e) * sumi as f32;
    }
    s
}

/// Q4_K . Q8_K: per super-block, exact integer sums of the 8 sub-blocks weighted by their
/// scales, and of the mins against Q8_K's `bsums`; then `d*dy*sumi - dmin*dy*summins`.
pub fn dot_q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| k4_block(a.d, a.dmin, &a.scales, &a.qs, None, b)).sum()
}

/// Q5_K . Q8_K, as Q4_K with the fifth bit from `qh`.
pub fn dot_q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| k4_block(a.d, a.dmin, &a.scales, &a.qs, Some(&a.qh), b)).sum()
}

/// One Q4_K (or, with `qh`, Q5_K) super-block against one Q8_K block.
fn k4_block(
    d: f16,
    dmin: f16,
    scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    b: &BlockQ8K,
) -> f32 {
    let (sc, m) = scales_mins_k4(scales);
    let high = |l: usize, bit: usize| qh.map_or(0, |h| ((h[l] >> bit) & 1) << 4);
    let mut sumi = 0i32;
    for c in 0..4 {
        let (mut lo, mut hi) = (0i32, 0i32);
        for l in 0..32 {
            let q = qs[32 * c + l];
            lo += ((q & 0xF) | high(l, 2 * c)) as i32 * b.qs[64 * c + l] as i32;
            hi += ((q >> 4) | high(l, 2 * c + 1)) as i32 * b.qs[64 * c + 32 + l] as i32;
        }
        sumi += sc[2 * c] as i32 * lo + sc[2 * c + 1] as i32 * hi;
    }
    let summins = mins_dot_bsums(&m, &b.bsums);
    d.to_f32() * b.d * sumi as f32 - dmin.to_f32() * b.d * summins as f32
}

/// Σ over the 8 sub-blocks of min * (sum of that sub-block's activation codes).
pub(super) fn mins_dot_bsums(m: &[u8; 8], bsums: &[i16; 16]) -> i32 {
    (0..8).map(|j| m[j] as i32 * (bsums[2 * j] as i32 + bsums[2 * j + 1] as i32)).sum()
}

/// Q6_K . Q8_K: Σ over the 16 sub-blocks of scale * Σ (q - 32) * q8, times `d*dy`.
pub fn dot_q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let q = codes_q6_k(a);
        let mut sumi = 0i32;
        for j in 0..16 {
            let sub: i32 = (16 * j..16 * j + 16).map(|i| (q[i] as i32 - 32) * b.qs[i] as i32).sum();
            sumi += a.scales[j] as i32 * sub;
        }
        s += a.d.to_f32() * b.d * sumi as f32;
    }
    s
}
