//! RMSNorm: `y = x / sqrt(mean(x^2) + eps) * weight`.

/// RMSNorm of `x` into `out` with per-channel `weight`. The mean square is accumulated in f64
/// (cheap at these sizes, and it keeps long rows exact to f32 precision).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(x.len() == weight.len() && x.len() == out.len(), "rms_norm: length mismatch");
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64;
    let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * w;
    }
}
