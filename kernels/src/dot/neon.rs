//! aarch64 NEON dot products (NEON is part of the aarch64 baseline). Block formats use widening
//! i8 x i8 -> i16 multiplies and pairwise adds into i32 (no `dotprod` extension needed), one
//! f32 multiply-add per block; f16 is widened with an exact integer rescaling (no FP16
//! extension needed). Every kernel is tested against the scalar twin under qemu in CI-less runs
//! (see the README) and type-checked for aarch64 in `.ci/run`.

use std::arch::aarch64::*;

use half::{bf16, f16};

use super::{scalar, DotKernels, Isa};
use crate::quant::int_lanes::{IntLanes, NeonLanes};
use crate::quant::q4_k::unpack_k4;
use crate::quant::{codes_q6_k, scales_mins_k4, BlockQ4K, BlockQ4_0, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::quant::{e8m0_to_f32_half, BlockMxfp4, BlockQ8_0, KVALUES_MXFP4, QK_K};

/// The NEON table.
pub const KERNELS: DotKernels = DotKernels {
    isa: Isa::Neon,
    table_isa: Isa::Neon,
    f32: dot_f32,
    f16: dot_f16,
    bf16: dot_bf16,
    q8_0: dot_q8_0,
    q4_0: dot_q4_0,
    mxfp4: dot_mxfp4,
    q8_0_x4: |w, x| w.map(|r| dot_q8_0(r, x)),
    q4_0_x4: |w, x| w.map(|r| dot_q4_0(r, x)),
    axpy_f32: scalar::axpy_f32,
    axpy_f16: scalar::axpy_f16,
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

fn dot_f32(w: &[f32], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let n = w.len() / 16 * 16;
    // SAFETY: NEON is always present on aarch64; every load reads 4 floats at i + 4k with
    // i + 16 <= n <= len of both slices.
    let s = unsafe {
        let mut a = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < n {
            for (k, acc) in a.iter_mut().enumerate() {
                let (pw, px) = (w.as_ptr().add(i + 4 * k), x.as_ptr().add(i + 4 * k));
                *acc = vfmaq_f32(*acc, vld1q_f32(pw), vld1q_f32(px));
            }
            i += 16;
        }
        vaddvq_f32(vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3])))
    };
    s + scalar::dot_f32(&w[n..], &x[n..])
}

/// Four f16 (as raw bits) to f32, exactly: the magnitude bits shifted into f32 position and
/// multiplied by 2^112 rebias the exponent (normals and subnormals alike); all-ones exponents
/// (inf, NaN) get f32's all-ones exponent; the sign is put back last.
///
/// # Safety
/// NEON must be available (always on aarch64).
#[inline]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe {
        let h = vmovl_u16(h);
        let mag = vandq_u32(h, vdupq_n_u32(0x7FFF));
        let sign = vshlq_n_u32(vandq_u32(h, vdupq_n_u32(0x8000)), 16);
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(vshlq_n_u32(mag, 13)),
            vreinterpretq_f32_u32(vdupq_n_u32(0x7780_0000)),
        );
        let special = vcgeq_u32(mag, vdupq_n_u32(0x7C00));
        let infnan = vorrq_u32(vshlq_n_u32(mag, 13), vdupq_n_u32(0x7F80_0000));
        let bits = vbslq_u32(special, infnan, vreinterpretq_u32_f32(scaled));
        vreinterpretq_f32_u32(vorrq_u32(bits, sign))
    }
}

fn dot_f16(w: &[f16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let n = w.len() / 8 * 8;
    // SAFETY: NEON is baseline; f16 is 2 bytes, so the slice is also one of u16 bits.
    let s = unsafe { dot_widened(bytemuck::cast_slice(&w[..n]), &x[..n], f16x4_to_f32) };
    s + scalar::dot_f16(&w[n..], &x[n..])
}

/// Four bf16 (as raw bits) to f32: bf16 is the top half of an f32, so this is exact.
///
/// # Safety
/// NEON must be available (always on aarch64).
#[inline]
unsafe fn bf16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    // SAFETY: register-only NEON operations.
    unsafe { vreinterpretq_f32_u32(vshll_n_u16(h, 16)) }
}

fn dot_bf16(w: &[bf16], x: &[f32]) -> f32 {
    assert_eq!(w.len(), x.len());
    let n = w.len() / 8 * 8;
    // SAFETY: NEON is baseline; bf16 is 2 bytes, so the slice is also one of u16 bits.
    let s = unsafe { dot_widened(bytemuck::cast_slice(&w[..n]), &x[..n], bf16x4_to_f32) };
    s + scalar::dot_bf16(&w[n..], &x[n..])
}

/// Σ widen(w)·x over a multiple of 8 half-width values, `widen` turning 4 raw values to f32.
///
/// # Safety
/// NEON must be available; `w.len() == x.len()`, a multiple of 8.
#[inline]
unsafe fn dot_widened(w: &[u16], x: &[f32], widen: unsafe fn(uint16x4_t) -> float32x4_t) -> f32 {
    debug_assert!(w.len() == x.len() && w.len().is_multiple_of(8));
    // SAFETY: i + 8 <= len of both slices: 8 u16 and 2 x 4 f32 loads stay in bounds.
    unsafe {
        let (mut a0, mut a1) = (vdupq_n_f32(0.0), vdupq_n_f32(0.0));
        let mut i = 0;
        while i < w.len() {
            let h = vld1q_u16(w.as_ptr().add(i));
            let (lo, hi) = (widen(vget_low_u16(h)), widen(vget_high_u16(h)));
            a0 = vfmaq_f32(a0, lo, vld1q_f32(x.as_ptr().add(i)));
            a1 = vfmaq_f32(a1, hi, vld1q_f32(x.as_ptr().add(i + 4)));
            i += 8;
        }
        vaddvq_f32(vaddq_f32(a0, a1))
    }
}

/// Σ a·b of 32 signed bytes (two 16-byte halves), exact in i32.
///
/// # Safety
/// NEON must be available (always on aarch64).
#[inline]
unsafe fn sum_i8x32(a0: int8x16_t, a1: int8x16_t, b0: int8x16_t, b1: int8x16_t) -> i32 {
    // SAFETY: register-only NEON operations. Products of i8 fit in i16; pairwise adds widen.
    unsafe {
        let p0 = vmull_s8(vget_low_s8(a0), vget_low_s8(b0));
        let p1 = vmull_high_s8(a0, b0);
        let p2 = vmull_s8(vget_low_s8(a1), vget_low_s8(b1));
        let p3 = vmull_high_s8(a1, b1);
        let s = vaddq_s32(
            vaddq_s32(vpaddlq_s16(p0), vpaddlq_s16(p1)),
            vaddq_s32(vpaddlq_s16(p2), vpaddlq_s16(p3)),
        );
        vaddvq_s32(s)
    }
}

fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        // SAFETY: NEON is baseline; qs is 32 bytes: two 16-byte loads per block.
        let sumi = unsafe {
            sum_i8x32(
                vld1q_s8(a.qs.as_ptr()),
                vld1q_s8(a.qs.as_ptr().add(16)),
                vld1q_s8(b.qs.as_ptr()),
                vld1q_s8(b.qs.as_ptr().add(16)),
            )
        };
        s += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    s
}

fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        // SAFETY: NEON is baseline; the nibbles are 16 bytes and the activations 32.
        let sumi = unsafe {
            let v = vld1q_u8(a.qs.as_ptr());
            let eight = vdupq_n_s8(8);
            let lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight);
            let hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
            sum_i8x32(lo, hi, vld1q_s8(b.qs.as_ptr()), vld1q_s8(b.qs.as_ptr().add(16)))
        };
        s += sumi as f32 * (a.d.to_f32() * b.d.to_f32());
    }
    s
}

/// One Q4_K (or, with `qh`, Q5_K) super-block against one Q8_K block: the scalar twin's float
/// steps, its exact integer sum from NEON lanes.
fn k4_block(a: (f16, f16, &[u8; 12]), qs: &[u8; 128], qh: Option<&[u8; 32]>, b: &BlockQ8K) -> f32 {
    let (d, dmin, scales) = a;
    let (mut codes, mut ls) = ([0i8; QK_K], [0i16; QK_K / 16]);
    unpack_k4(d, scales, qs, qh, &mut codes, &mut ls);
    let sumi: i32 = NeonLanes::lanes256(&codes, &ls.map(i32::from), &b.qs).iter().sum();
    let (_, m) = scales_mins_k4(scales);
    let summins = scalar::mins_dot_bsums(&m, &b.bsums);
    d.to_f32() * b.d * sumi as f32 - dmin.to_f32() * b.d * summins as f32
}

fn dot_q4_k(w: &[BlockQ4K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| k4_block((a.d, a.dmin, &a.scales), &a.qs, None, b)).sum()
}

fn dot_q5_k(w: &[BlockQ5K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    w.iter().zip(x).map(|(a, b)| k4_block((a.d, a.dmin, &a.scales), &a.qs, Some(&a.qh), b)).sum()
}

fn dot_q6_k(w: &[BlockQ6K], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let codes = codes_q6_k(a).map(|q| q as i8 - 32);
        let ls = a.scales.map(i32::from);
        let sumi: i32 = NeonLanes::lanes256(&codes, &ls, &b.qs).iter().sum();
        s += a.d.to_f32() * b.d * sumi as f32;
    }
    s
}

fn dot_mxfp4(w: &[BlockMxfp4], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        let sumi: i32 = NeonLanes::table_run(&a.qs, &KVALUES_MXFP4, &b.qs).iter().sum();
        s += b.d.to_f32() * e8m0_to_f32_half(a.e) * sumi as f32;
    }
    s
}
