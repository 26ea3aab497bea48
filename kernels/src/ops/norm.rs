//! RMSNorm: `y = x / sqrt(mean(x^2) + eps) * weight`.

/// RMSNorm of `x` into `out` with per-channel `weight`. The mean square is accumulated in f64
/// (it keeps long rows exact to f32 precision), in [`LANES`] independent sums so that the
/// compiler vectorises it: one running sum is a chain of dependent adds, slow enough to show
/// on the decode path, where the worker threads wait while the calling thread normalises.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert!(x.len() == weight.len() && x.len() == out.len(), "rms_norm: length mismatch");
    let mut lanes = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| v as f64 * v as f64).sum();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v as f64 * v as f64;
        }
    }
    let ms = (lanes.iter().sum::<f64>() + tail) / x.len().max(1) as f64;
    let inv = (1.0 / (ms + eps as f64).sqrt()) as f32;
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * inv * w;
    }
}

/// Independent partial sums of the mean square.
const LANES: usize = 8;
