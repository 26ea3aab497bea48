//! x86_64 AVX2 + FMA + F16C kernels on the activation side of the products: quantising a
//! token to Q8_0 (and the block sums the interleaved Q4_0 kernel reads) and SwiGLU. Each gives
//! the bits of its scalar twin ([`crate::quant::quantize_q8_0_activations_scalar`],
//! [`crate::quant::q8_sums_scalar`], [`crate::ops::swiglu_scalar`]). Only reachable through
//! `avx2::KERNELS`, handed out after the CPU was checked for these features.

use std::arch::x86_64::*;

use half::f16;

use crate::ops::silu_fast;
use crate::quant::{BlockQ8_0, Q8Sum, QK};

/// Q8_0 activations as llama.cpp's AVX2 `quantize_row_q8_0`: the block's absolute maximum,
/// `d = f16(amax / 127)`, each value times `127 / amax` rounded half to even.
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    // SAFETY: this table entry is handed out only on CPUs with AVX2, FMA and F16C
    // (`Isa::Avx2.supported()`, checked in `DotKernels::for_isa`).
    unsafe { quantize_q8_0_imp(x, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_q8_0_imp(x: &[f32], out: &mut [BlockQ8_0]) {
    let sign = _mm256_set1_ps(-0.0);
    // packs interleave 128-bit lanes; this puts the 32 bytes back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (xb, b) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let xb: &[f32; QK] = xb.try_into().expect("chunks_exact gives QK values");
        // SAFETY: `xb` holds QK = 32 f32s, so the four unaligned loads of 8 stay inside it.
        let v = unsafe {
            let p = xb.as_ptr();
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let abs = v.map(|v| _mm256_andnot_ps(sign, v));
        let m = _mm256_max_ps(_mm256_max_ps(abs[0], abs[1]), _mm256_max_ps(abs[2], abs[3]));
        let m = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = _mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(amax / 127.0));
        b.d = f16::from_bits(_mm_extract_epi16::<0>(d) as u16);
        let id = _mm256_set1_ps(if amax != 0.0 { 127.0 / amax } else { 0.0 });
        let q = v.map(|v| {
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, id),
            );
            _mm256_cvtps_epi32(r)
        });
        let lo = _mm256_packs_epi32(q[0], q[1]);
        let hi = _mm256_packs_epi32(q[2], q[3]);
        let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), order);
        // SAFETY: `b.qs` is 32 bytes, the width of the unaligned store.
        unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), bytes) };
    }
}

/// Each block's scale as f32 and eight times the sum of its values.
pub(crate) fn q8_sums(x: &[BlockQ8_0], out: &mut [Q8Sum]) {
    // SAFETY: as in `quantize_q8_0`: handed out only where AVX2 and F16C are present.
    unsafe { q8_sums_imp(x, out) }
}

#[target_feature(enable = "avx2,f16c")]
fn q8_sums_imp(x: &[BlockQ8_0], out: &mut [Q8Sum]) {
    let ones = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    for (b, s) in x.iter().zip(out) {
        // SAFETY: `b.qs` is 32 bytes, the width of the unaligned load.
        let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().cast()) };
        // Pairs of i8 to i16 (1 * q), then pairs of i16 to i32: no overflow at these widths.
        let w = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, q), ones16);
        let w = _mm_add_epi32(_mm256_extracti128_si256(w, 1), _mm256_castsi256_si128(w));
        let w = _mm_add_epi32(w, _mm_shuffle_epi32::<0b01_00_11_10>(w));
        let w = _mm_add_epi32(w, _mm_shuffle_epi32::<0b10_11_00_01>(w));
        let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(b.d.to_bits() as i16)));
        *s = Q8Sum { d, corr: 8 * _mm_cvtsi128_si32(w) };
    }
}

/// `out = silu(gate) * up`, eight values at a time with ggml's vector `exp`.
pub(crate) fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    // SAFETY: as in `quantize_q8_0`: handed out only where AVX2 and FMA are present.
    unsafe { swiglu_imp(gate, up, out) }
}

#[target_feature(enable = "avx2,fma")]
fn swiglu_imp(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len().min(up.len()).min(out.len());
    let whole = n / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..whole).step_by(8) {
        // SAFETY: `i + 8 <= whole <= n`, the length of all three slices at least.
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(i));
            let u = _mm256_loadu_ps(up.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
        }
    }
    for i in whole..n {
        out[i] = silu_fast(gate[i]) * up[i];
    }
}

/// Eight lanes of [`crate::ops::exp_fast`] (ggml's `ggml_v_expf`), the same operations in the
/// same order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp8(x: __m256) -> __m256 {
    let c = |bits: u32| _mm256_castsi256_ps(_mm256_set1_epi32(bits as i32));
    let r = c(0x4B40_0000);
    let z = _mm256_fmadd_ps(x, c(0x3FB8_AA3B), r);
    let n = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(n, c(0x35BF_BE8E), _mm256_fnmadd_ps(n, c(0x3F31_7200), x));
    let e = _mm256_slli_epi32::<23>(_mm256_castps_si256(z));
    let k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0))));
    let abs_n = _mm256_andnot_ps(_mm256_set1_ps(-0.0), n);
    let big = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(126.0));
    let u = _mm256_mul_ps(b, b);
    let j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(
            _mm256_fmadd_ps(c(0x3C07_2010), b, c(0x3D2B_9F17)),
            u,
            _mm256_fmadd_ps(c(0x3E2A_AF33), b, c(0x3EFF_FEDB)),
        ),
        u,
        _mm256_mul_ps(c(0x3F7F_FFF6), b),
    );
    if _mm256_movemask_ps(big) == 0 {
        return _mm256_fmadd_ps(j, k, k);
    }
    let g = _mm256_and_si256(
        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(n, _mm256_setzero_ps())),
        _mm256_set1_epi32(0x8200_0000u32 as i32),
    );
    let s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7F00_0000)));
    let s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    let huge = _mm256_cmp_ps::<_CMP_GT_OQ>(abs_n, _mm256_set1_ps(192.0));
    let scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    let normal = _mm256_fmadd_ps(k, j, k);
    let inner = _mm256_blendv_ps(normal, scaled, big);
    _mm256_blendv_ps(inner, _mm256_mul_ps(s1, s1), huge)
}
