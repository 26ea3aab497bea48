//! The pieces of a Gated DeltaNet layer (Qwen3.5, Qwen3-Next): the depthwise causal convolution
//! with SiLU, L2 normalisation, and one step of the gated delta rule on a head's recurrent
//! state. Written as transformers' recurrent reference (`torch_recurrent_gated_delta_rule`)
//! computes them, in f32.

use super::activation::silu;

/// Depthwise causal convolution of width `kernel` over `x` (`n` rows of `channels`), then SiLU,
/// in place. `weight` is `[channels, kernel]`, its last column multiplying the current input.
/// `state` holds the previous `kernel - 1` inputs (oldest first, zeros at the start of a
/// sequence) and is advanced past `x`. `row` is scratch of `channels` values.
pub fn causal_conv1d_silu(
    x: &mut [f32],
    channels: usize,
    kernel: usize,
    weight: &[f32],
    state: &mut [f32],
    row: &mut [f32],
) {
    assert!(kernel >= 1 && weight.len() == channels * kernel, "conv1d: weight shape");
    assert!(state.len() == (kernel - 1) * channels && row.len() == channels, "conv1d: state");
    assert!(x.len().is_multiple_of(channels), "conv1d: rows");
    let hist = kernel - 1;
    for xt in x.chunks_exact_mut(channels) {
        for (c, r) in row.iter_mut().enumerate() {
            let w = &weight[c * kernel..(c + 1) * kernel];
            let mut acc = w[hist] * xt[c];
            for (i, &wi) in w[..hist].iter().enumerate() {
                acc += wi * state[i * channels + c];
            }
            *r = acc;
        }
        if hist > 0 {
            state.copy_within(channels.., 0);
            state[(hist - 1) * channels..].copy_from_slice(xt);
        }
        for (o, &r) in xt.iter_mut().zip(row.iter()) {
            *o = silu(r);
        }
    }
}

/// `x / sqrt(sum(x^2) + eps)` in place, times `scale` (transformers' `l2norm`, eps 1e-6).
pub fn l2_normalize(x: &mut [f32], eps: f32, scale: f32) {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    let inv = scale / (ss + eps).sqrt();
    x.iter_mut().for_each(|v| *v *= inv);
}

/// One token of the gated delta rule on a `key_dim x value_dim` state `s` (row-major, a row
/// per key channel): `S *= decay; delta = (v - S^T k) * beta; S += k delta^T; out = S^T q`.
pub fn gated_delta_step(
    s: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    decay: f32,
    beta: f32,
    out: &mut [f32],
) {
    let dv = v.len();
    assert!(s.len() == k.len() * dv && q.len() == k.len() && out.len() == dv, "delta: shapes");
    // out first holds S^T k (after the decay), then delta.
    out.fill(0.0);
    for (row, &ki) in s.chunks_exact_mut(dv).zip(k) {
        for (o, x) in out.iter_mut().zip(row.iter_mut()) {
            *x *= decay;
            *o += *x * ki;
        }
    }
    for (o, &vj) in out.iter_mut().zip(v) {
        *o = (vj - *o) * beta;
    }
    // S += k delta^T, with S^T q gathered in the same pass into `acc` (out still holds delta).
    let mut acc = [0.0f32; 256];
    if dv <= acc.len() {
        let acc = &mut acc[..dv];
        for ((row, &ki), &qi) in s.chunks_exact_mut(dv).zip(k).zip(q) {
            for ((x, &d), a) in row.iter_mut().zip(out.iter()).zip(acc.iter_mut()) {
                *x += ki * d;
                *a += *x * qi;
            }
        }
        out.copy_from_slice(acc);
    } else {
        for (row, &ki) in s.chunks_exact_mut(dv).zip(k) {
            row.iter_mut().zip(out.iter()).for_each(|(x, &d)| *x += ki * d);
        }
        out.fill(0.0);
        for (row, &qi) in s.chunks_exact(dv).zip(q) {
            out.iter_mut().zip(row).for_each(|(o, &x)| *o += x * qi);
        }
    }
}

/// PyTorch's `softplus` (beta 1, threshold 20).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    /// The delta rule as transformers writes it, in f64 on a state kept as [dk][dv].
    fn reference(
        s: &mut [f64],
        q: &[f32],
        k: &[f32],
        v: &[f32],
        decay: f64,
        beta: f64,
    ) -> Vec<f64> {
        let (dk, dv) = (k.len(), v.len());
        s.iter_mut().for_each(|x| *x *= decay);
        let kv: Vec<f64> =
            (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * k[i] as f64).sum()).collect();
        let delta: Vec<f64> = (0..dv).map(|j| (v[j] as f64 - kv[j]) * beta).collect();
        for i in 0..dk {
            for j in 0..dv {
                s[i * dv + j] += k[i] as f64 * delta[j];
            }
        }
        (0..dv).map(|j| (0..dk).map(|i| s[i * dv + j] * q[i] as f64).sum()).collect()
    }

    #[test]
    fn delta_steps_match_the_f64_recurrence_on_odd_shapes() {
        let mut seed = 7;
        for (dk, dv) in [(1, 1), (3, 5), (16, 16), (17, 33), (8, 300)] {
            let mut s = vec![0.0f32; dk * dv];
            let mut r = vec![0.0f64; dk * dv];
            let mut out = vec![0.0; dv];
            for step in 0..12 {
                let q: Vec<f32> = (0..dk).map(|_| lcg(&mut seed)).collect();
                let k: Vec<f32> = (0..dk).map(|_| lcg(&mut seed)).collect();
                let v: Vec<f32> = (0..dv).map(|_| lcg(&mut seed)).collect();
                let decay = 0.5 + 0.5 * lcg(&mut seed).abs();
                let beta = lcg(&mut seed).abs();
                gated_delta_step(&mut s, &q, &k, &v, decay, beta, &mut out);
                let want = reference(&mut r, &q, &k, &v, decay as f64, beta as f64);
                for (j, (&a, &b)) in out.iter().zip(&want).enumerate() {
                    assert!((a as f64 - b).abs() < 1e-4, "{dk}x{dv} step {step} [{j}]: {a} vs {b}");
                }
            }
        }
    }

    /// The convolution against a direct sum over a zero-padded history, across calls of
    /// different lengths (the state carries the history).
    #[test]
    fn conv1d_over_split_calls_equals_one_pass_over_the_padded_sequence() {
        let mut seed = 3;
        let (c, kernel, n) = (5, 4, 11);
        let w: Vec<f32> = (0..c * kernel).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..n * c).map(|_| lcg(&mut seed)).collect();
        let mut got = x.clone();
        let mut state = vec![0.0; (kernel - 1) * c];
        let mut row = vec![0.0; c];
        let (a, b) = got.split_at_mut(4 * c);
        causal_conv1d_silu(a, c, kernel, &w, &mut state, &mut row);
        let (b1, b2) = b.split_at_mut(c);
        causal_conv1d_silu(b1, c, kernel, &w, &mut state, &mut row);
        causal_conv1d_silu(b2, c, kernel, &w, &mut state, &mut row);
        for t in 0..n {
            for ch in 0..c {
                let mut acc = 0.0f64;
                for i in 0..kernel {
                    let src = t as isize - (kernel - 1 - i) as isize;
                    if src >= 0 {
                        acc += w[ch * kernel + i] as f64 * x[src as usize * c + ch] as f64;
                    }
                }
                let want = acc / (1.0 + (-acc).exp());
                let g = got[t * c + ch] as f64;
                assert!((g - want).abs() < 1e-5, "t {t} c {ch}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn l2_normalize_and_softplus() {
        let mut x = [3.0f32, 4.0];
        l2_normalize(&mut x, 0.0, 2.0);
        assert!((x[0] - 1.2).abs() < 1e-6 && (x[1] - 1.6).abs() < 1e-6);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert_eq!(softplus(30.0), 30.0);
        assert!((softplus(-5.0) - (1.0f64 + (-5.0f64).exp()).ln() as f32).abs() < 1e-7);
    }
}
