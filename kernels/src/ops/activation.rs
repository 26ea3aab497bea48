//! Softmax, SiLU, SwiGLU and GeGLU.

/// In-place softmax, max-subtracted for stability.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // All -inf (fully masked): leave zeros rather than NaN.
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` as ggml's vector kernels compute it (`ggml_v_expf`, after ARM's optimized routines:
/// within 1.5 ulp, overflowing to infinity above about 88.7 and flushing to zero below about
/// -104), one lane at a time. Every step is an IEEE operation or a fused multiply-add, so the
/// SIMD kernels that run it eight or sixteen lanes at a time give the same bits.
#[inline]
pub fn exp_fast(x: f32) -> f32 {
    let bits = f32::to_bits;
    let from = f32::from_bits;
    let r = f32::from_bits(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    // x - n * ln2, in two parts (the high part exact in n's range).
    let b = (-n).mul_add(f32::from_bits(0x35BF_BE8E), (-n).mul_add(f32::from_bits(0x3F31_7200), x));
    let e = bits(z) << 23;
    let k = from(e.wrapping_add(bits(1.0)));
    let u = b * b;
    let j = f32::from_bits(0x3C07_2010)
        .mul_add(b, f32::from_bits(0x3D2B_9F17))
        .mul_add(u, f32::from_bits(0x3E2A_AF33).mul_add(b, f32::from_bits(0x3EFF_FEDB)));
    let j = j.mul_add(u, f32::from_bits(0x3F7F_FFF6) * b);
    if n.abs() > 126.0 {
        // Outside the normal exponent range: scale in two steps (or saturate).
        let g = if n <= 0.0 { 0x8200_0000u32 } else { 0 };
        let s1 = from(g.wrapping_add(0x7F00_0000));
        let s2 = from(e.wrapping_sub(g));
        if n.abs() > 192.0 {
            s1 * s1
        } else {
            s2.mul_add(j, s2) * s1
        }
    } else {
        j.mul_add(k, k)
    }
}

/// SiLU, `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SiLU as llama.cpp's vector kernels compute it, `x / (1 + e^-x)` with [`exp_fast`]: what
/// [`swiglu`] applies, one lane at a time. (Without hardware FMA each `mul_add` is a libm call,
/// so the one-value [`silu`] keeps the libm `exp` for callers outside the SIMD kernels.)
#[inline]
pub fn silu_fast(x: f32) -> f32 {
    x / (1.0 + exp_fast(0.0 - x))
}

/// SwiGLU: `out = silu(gate) * up`, with the detected ISA's kernel (the same bits as
/// [`swiglu_scalar`]).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && gate.len() == out.len(), "swiglu: length mismatch");
    (crate::dot::kernels().swiglu)(gate, up, out)
}

/// SwiGLU one value at a time: the scalar twin of the SIMD kernels.
pub fn swiglu_scalar(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu_fast(g) * u;
    }
}

/// GELU, tanh approximation (PyTorch's `gelu(approximate="tanh")`, Gemma's `gelu_pytorch_tanh`).
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (C * (x + 0.044_715 * x * x * x)).tanh())
}

/// GeGLU: `out = gelu_tanh(gate) * up`.
pub fn geglu_tanh(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && gate.len() == out.len(), "geglu: length mismatch");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = gelu_tanh(g) * u;
    }
}

/// gpt-oss's clamped SwiGLU: `g = min(gate, limit)`, `u = clamp(up, -limit, limit)`,
/// `out = (u + 1) * g * sigmoid(alpha * g)`.
pub fn clamped_swiglu(gate: &[f32], up: &[f32], out: &mut [f32], alpha: f32, limit: f32) {
    assert!(gate.len() == up.len() && gate.len() == out.len(), "swiglu: length mismatch");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let g = g.min(limit);
        let u = u.clamp(-limit, limit);
        *o = (u + 1.0) * (g / (1.0 + (-alpha * g).exp()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the formula in f64 over a range of inputs, and `geglu_tanh` against it on an
    /// odd length.
    #[test]
    fn gelu_tanh_matches_f64() {
        let f64_gelu = |x: f64| {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        for i in -800..=800 {
            let x = i as f32 / 50.0;
            let (got, want) = (gelu_tanh(x) as f64, f64_gelu(x as f64));
            assert!((got - want).abs() <= 2e-6 * (1.0 + want.abs()), "{x}: {got} vs {want}");
        }
        let g: Vec<f32> = (0..37).map(|i| i as f32 * 0.3 - 5.0).collect();
        let u: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let mut out = vec![0.0; 37];
        geglu_tanh(&g, &u, &mut out);
        for i in 0..37 {
            assert_eq!(out[i], gelu_tanh(g[i]) * u[i]);
        }
    }
}
