//! x86_64 AVX-512 (F, BW, VNNI) integer dot products: two 32-value blocks per 512-bit register
//! and `vpdpbusd` (u8 x i8 -> i32) instead of the AVX2 maddubs/madd pair. The float formats stay
//! on AVX2: they are memory bound and gain nothing at 512 bits on this class of CPU.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so signed weights are offset to unsigned and
//! the offset's contribution (offset x sum of the activations) is subtracted per block.

use std::arch::x86_64::*;

use half::f16;

use super::{avx2, DotKernels, Isa};
use crate::quant::{BlockQ4_0, BlockQ8_0};

/// The AVX-512 table.
pub const KERNELS: DotKernels = DotKernels {
    isa: Isa::Avx512,
    table_isa: Isa::Avx512,
    f32: avx2::KERNELS.f32,
    f16: avx2::KERNELS.f16,
    bf16: avx2::KERNELS.bf16,
    q8_0: dot_q8_0,
    q4_0: dot_q4_0,
    mxfp4: avx2::dot_mxfp4,
    q8_0_x4: |w, x| w.map(|r| dot_q8_0(r, x)),
    q4_0_x4: |w, x| w.map(|r| dot_q4_0(r, x)),
    axpy_f32: avx2::KERNELS.axpy_f32,
    axpy_f16: avx2::KERNELS.axpy_f16,
    x4_prefetches: false,
    q4_0_rows8: None,
    q4_0_rows8_x4: None,
    q4_k: super::avx2_k::dot_q4_k,
    q5_k: super::avx2_k::dot_q5_k,
    q6_k: super::avx2_k::dot_q6_k,
    quantize_q8_0: avx2::KERNELS.quantize_q8_0,
    q8_sums: avx2::KERNELS.q8_sums,
    swiglu: avx2::KERNELS.swiglu,
};

/// Per-lane scales of a block pair: `a0 * b0` in lanes 0..8, `a1 * b1` in lanes 8..16,
/// converted as vectors from broadcast f16 bits (see `avx2::scale8` for why).
#[inline]
#[target_feature(enable = "avx512f,avx2,f16c")]
fn pair_scales(a0: f16, a1: f16, b0: f16, b1: f16) -> __m512 {
    let bits = |x: f16| _mm_set1_epi16(x.to_bits() as i16);
    let wa = _mm512_cvtph_ps(_mm256_set_m128i(bits(a1), bits(a0)));
    let wb = _mm512_cvtph_ps(_mm256_set_m128i(bits(b1), bits(b0)));
    _mm512_mul_ps(wa, wb)
}

#[inline]
#[target_feature(enable = "avx512f")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

fn dot_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: this table is only handed out when AVX-512 F/BW/VNNI (and AVX2/FMA/F16C) exist.
    unsafe { dot_q8_0_imp(w, x) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn dot_q8_0_imp(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> f32 {
    let pairs = w.len() / 2;
    let mut acc = _mm512_setzero_ps();
    let bias = _mm512_set1_epi8(-128); // xor 0x80: i8 -> u8 with +128
    let ones = _mm512_set1_epi8(1);
    for p in 0..pairs {
        let (a0, a1, b0, b1) = (&w[2 * p], &w[2 * p + 1], &x[2 * p], &x[2 * p + 1]);
        // SAFETY: each qs is 32 bytes; unaligned 256-bit loads.
        let (qa, qb) = unsafe {
            let l = |q: &[i8; 32]| _mm256_loadu_si256(q.as_ptr() as *const __m256i);
            (join(l(&a0.qs), l(&a1.qs)), join(l(&b0.qs), l(&b1.qs)))
        };
        let ua = _mm512_xor_si512(qa, bias);
        // sum((a + 128) * b) - 128 * sum(b) = sum(a * b), per 4-byte group, then per block.
        let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ua, qb);
        let sumb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qb);
        let exact = _mm512_sub_epi32(prod, _mm512_slli_epi32::<7>(sumb));
        let d = pair_scales(a0.d, a1.d, b0.d, b1.d);
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(exact), acc);
    }
    let tail = 2 * pairs;
    _mm512_reduce_add_ps(acc) + (avx2::KERNELS.q8_0)(&w[tail..], &x[tail..])
}

fn dot_q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    assert_eq!(w.len(), x.len());
    // SAFETY: this table is only handed out when AVX-512 F/BW/VNNI (and AVX2/FMA/F16C) exist.
    unsafe { dot_q4_0_imp(w, x) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(qs: &[u8; 16]) -> __m256i {
    // SAFETY: qs is 16 bytes.
    let v = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), _mm256_set1_epi8(0x0F))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn dot_q4_0_imp(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> f32 {
    let pairs = w.len() / 2;
    let mut acc = _mm512_setzero_ps();
    let ones = _mm512_set1_epi8(1);
    for p in 0..pairs {
        let (a0, a1, b0, b1) = (&w[2 * p], &w[2 * p + 1], &x[2 * p], &x[2 * p + 1]);
        let qa = join(nibbles(&a0.qs), nibbles(&a1.qs)); // 0..16, unsigned
                                                         // SAFETY: each qs is 32 bytes; unaligned 256-bit loads.
        let qb = unsafe {
            let l = |q: &[i8; 32]| _mm256_loadu_si256(q.as_ptr() as *const __m256i);
            join(l(&b0.qs), l(&b1.qs))
        };
        // sum(q * b) - 8 * sum(b) = sum((q - 8) * b)
        let prod = _mm512_dpbusd_epi32(_mm512_setzero_si512(), qa, qb);
        let sumb = _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, qb);
        let exact = _mm512_sub_epi32(prod, _mm512_slli_epi32::<3>(sumb));
        let d = pair_scales(a0.d, a1.d, b0.d, b1.d);
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(exact), acc);
    }
    let tail = 2 * pairs;
    _mm512_reduce_add_ps(acc) + (avx2::KERNELS.q4_0)(&w[tail..], &x[tail..])
}

/// `acc + a . b` over pairs of i16 into i32 lanes as one `vpdpwssd`: LLVM splits the
/// intrinsic into `vpmaddwd` and `vpaddd`, one more step for the vector ports these kernels
/// are bound by.
///
/// # Safety
/// The CPU must have AVX512F and AVX512-VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
pub(crate) unsafe fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: the instruction only reads and writes these registers; the caller has the CPU
    // features.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}
