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

/// SiLU, `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// SwiGLU: `out = silu(gate) * up`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert!(gate.len() == up.len() && gate.len() == out.len(), "swiglu: length mismatch");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
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
