//! Rotary position embeddings, in the two layouts models use.

/// Which pairs of a head's channels are rotated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// GPT-NeoX / HF "rotate half": channel i pairs with i + d/2 (Qwen, Mixtral, OLMoE in HF).
    Neox,
    /// GPT-J / llama.cpp "normal": channel 2i pairs with 2i + 1.
    Interleaved,
}

/// Inverse frequencies `base^(-2i/dim)` for `i < dim/2`, computed as HF does (in f32 from an
/// integer range).
pub fn rope_inv_freq(dim: usize, base: f32) -> Vec<f32> {
    (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32)).collect()
}

/// YaRN's inverse frequencies (transformers' `_compute_yarn_parameters`): each frequency is
/// the interpolated `1 / (factor * base^(2i/dim))` or the original `base^(-2i/dim)`, blended by
/// a linear ramp between the dimensions where `beta_fast` and `beta_slow` rotations fit in
/// `original_max` positions.
pub fn yarn_inv_freq(
    dim: usize,
    base: f32,
    factor: f32,
    original_max: usize,
    beta_fast: f32,
    beta_slow: f32,
    truncate: bool,
) -> Vec<f32> {
    let correction_dim = |rotations: f32| {
        (dim as f32 * (original_max as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln())
            / (2.0 * base.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if truncate {
        (low, high) = (low.floor(), high.ceil());
    }
    let (low, mut high) = (low.max(0.0), high.min(dim as f32 - 1.0));
    if low == high {
        high += 0.001;
    }
    (0..dim / 2)
        .map(|i| {
            let pos_freq = base.powf((2 * i) as f32 / dim as f32);
            let (extrapolated, interpolated) = (1.0 / pos_freq, 1.0 / (factor * pos_freq));
            let ramp = ((i as f32 - low) / (high - low)).clamp(0.0, 1.0);
            let keep = 1.0 - ramp;
            interpolated * (1.0 - keep) + extrapolated * keep
        })
        .collect()
}

/// Rotates one head `x` (its first `2 * inv_freq.len()` channels) for position `pos`.
pub fn rope(x: &mut [f32], pos: usize, inv_freq: &[f32], style: RopeStyle) {
    let angles = inv_freq.iter().map(|&f| {
        let (sin, cos) = (pos as f32 * f).sin_cos();
        (cos, sin)
    });
    rotate(x, inv_freq.len(), angles, style);
}

/// Rotates the `half` channel pairs of `x` by the given (cos, sin).
fn rotate(x: &mut [f32], half: usize, angles: impl Iterator<Item = (f32, f32)>, style: RopeStyle) {
    assert!(2 * half <= x.len(), "rope: rotary dim {} > head dim {}", 2 * half, x.len());
    for (i, (cos, sin)) in angles.enumerate().take(half) {
        let (a, b) = match style {
            RopeStyle::Neox => (i, i + half),
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * cos - x1 * sin;
        x[b] = x1 * cos + x0 * sin;
    }
}

/// The (cos, sin) of every rotated pair for positions `first..first + n`, `inv_freq.len()` per
/// position, into `out`: computed once per forward pass and shared by every head and layer
/// (the same angles [`rope`] computes).
pub fn rope_table(first: usize, n: usize, inv_freq: &[f32], out: &mut Vec<(f32, f32)>) {
    out.clear();
    for pos in first..first + n {
        out.extend(inv_freq.iter().map(|&f| {
            let (sin, cos) = (pos as f32 * f).sin_cos();
            (cos, sin)
        }));
    }
}

/// Rotates one head `x` with one position's row of a [`rope_table`].
pub fn rope_from_table(x: &mut [f32], table: &[(f32, f32)], style: RopeStyle) {
    rotate(x, table.len(), table.iter().copied(), style);
}
