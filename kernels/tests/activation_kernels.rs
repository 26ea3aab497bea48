//! The kernels on the activation side of a product (Q8_0 quantisation of a token, its block
//! sums, SwiGLU) on every ISA against their scalar twins bit for bit, and the twins against
//! references: f64 `exp`, llama.cpp's rounding rule, exact integer sums.

mod common;

use common::{isas, rng};
use floe_kernels::ops::{exp_fast, silu_fast, swiglu, swiglu_scalar};
use floe_kernels::quant::{q8_sums_scalar, quantize_q8_0_activations_scalar, Q8Sum, QK};
use floe_kernels::BlockQ8_0;
use half::f16;

/// Blocks of activations at many scales, with a zero block, exact ties (`k + 0.5` steps) and
/// blocks whose largest value is negative.
fn activations(blocks: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    let mut x = Vec::with_capacity(blocks * QK);
    for b in 0..blocks {
        let scale = [1e-3f32, 1.0, 37.5, 1e4][b % 4];
        match b % 5 {
            0 if b > 0 => x.extend(std::iter::repeat_n(0.0, QK)),
            1 => {
                // amax 127 makes the step exactly 1, so k + 0.5 is a tie.
                x.push(127.0);
                x.extend((1..QK).map(|i| (i as f32 - 16.0) + 0.5));
            }
            2 => {
                x.extend((0..QK).map(|_| r() * scale));
                x[b * QK + 5] = -2.0 * scale;
            }
            _ => x.extend((0..QK).map(|_| r() * scale)),
        }
    }
    x
}

#[test]
fn q8_0_quantisation_matches_the_scalar_twin_bit_for_bit() {
    for k in isas() {
        for (i, blocks) in [1usize, 2, 3, 5, 7, 17, 33, 129].into_iter().enumerate() {
            let x = activations(blocks, 11 + i as u64);
            let zero = BlockQ8_0 { d: f16::ZERO, qs: [0; QK] };
            let (mut want, mut got) = (vec![zero; blocks], vec![zero; blocks]);
            quantize_q8_0_activations_scalar(&x, &mut want);
            (k.quantize_q8_0)(&x, &mut got);
            for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                assert_eq!(
                    w.d.to_bits(),
                    g.d.to_bits(),
                    "{} block {b} of {blocks}: d",
                    k.isa.name()
                );
                assert_eq!(w.qs, g.qs, "{} block {b} of {blocks}: values", k.isa.name());
            }
            let (mut want_s, mut got_s) =
                (vec![Q8Sum::default(); blocks], vec![Q8Sum::default(); blocks]);
            q8_sums_scalar(&want, &mut want_s);
            (k.q8_sums)(&want, &mut got_s);
            for (w, g) in want_s.iter().zip(&got_s) {
                assert_eq!((w.d.to_bits(), w.corr), (g.d.to_bits(), g.corr), "{}", k.isa.name());
            }
        }
    }
}

/// The scalar twin is llama.cpp's rule: d = f16(amax / 127), q = round half to even of
/// x * 127 / amax; and the sums are exact.
#[test]
fn q8_0_scalar_twin_follows_llama_cpps_rule() {
    let x = activations(40, 3);
    let mut q = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; 40];
    quantize_q8_0_activations_scalar(&x, &mut q);
    let mut sums = vec![Q8Sum::default(); 40];
    q8_sums_scalar(&q, &mut sums);
    for (b, (xb, qb)) in x.chunks_exact(QK).zip(&q).enumerate() {
        let amax = xb.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        assert_eq!(qb.d, f16::from_f64(amax as f32 as f64 / 127.0), "block {b}");
        for (v, &got) in xb.iter().zip(&qb.qs) {
            let want =
                if amax == 0.0 { 0.0 } else { (*v * (127.0 / amax as f32)).round_ties_even() };
            assert_eq!(got as f32, want, "block {b} value {v}");
        }
        let total: i32 = qb.qs.iter().map(|&v| v as i32).sum();
        assert_eq!(sums[b].corr, 8 * total);
        assert_eq!(sums[b].d, qb.d.to_f32());
    }
}

/// Gate values over the whole range, including where `e^-x` overflows, goes subnormal and
/// flushes to zero, on odd lengths (the SIMD tails run the twin).
#[test]
fn swiglu_matches_the_scalar_twin_bit_for_bit() {
    for k in isas() {
        for (i, n) in [1usize, 3, 7, 8, 9, 15, 17, 31, 33, 100, 257, 6147].into_iter().enumerate() {
            let mut r = rng(40 + i as u64);
            let gate: Vec<f32> = (0..n)
                .map(|j| match j % 7 {
                    0 => r() * 200.0,
                    1 => r() * 100.0 - 95.0,
                    _ => r() * 12.0,
                })
                .collect();
            let up: Vec<f32> = (0..n).map(|_| r() * 3.0).collect();
            let (mut want, mut got) = (vec![0.0; n], vec![0.0; n]);
            swiglu_scalar(&gate, &up, &mut want);
            (k.swiglu)(&gate, &up, &mut got);
            for j in 0..n {
                assert_eq!(
                    want[j].to_bits(),
                    got[j].to_bits(),
                    "{} n {n} at {j}: gate {} up {}",
                    k.isa.name(),
                    gate[j],
                    up[j]
                );
            }
        }
    }
    // The public entry runs the detected kernel: same bits again.
    let gate: Vec<f32> = (0..101).map(|i| i as f32 * 0.37 - 18.0).collect();
    let up = vec![1.5f32; 101];
    let (mut a, mut b) = (vec![0.0; 101], vec![0.0; 101]);
    swiglu(&gate, &up, &mut a);
    swiglu_scalar(&gate, &up, &mut b);
    assert_eq!(a, b);
}

/// The distance from `got` to `want` in units of the f32 spacing at `want` (subnormal spacing
/// below the normal range).
fn ulps(got: f32, want: f64) -> f64 {
    let spacing = if want.abs() < f32::MIN_POSITIVE as f64 {
        f64::from(f32::from_bits(1))
    } else {
        let w = want as f32;
        f64::from(f32::from_bits(w.abs().to_bits() + 1)) - f64::from(w.abs())
    };
    (got as f64 - want).abs() / spacing
}

/// ggml's `exp` is within 1.5 ulp in the normal range (ARM's stated bound: 1.45 + 0.5 for the
/// final rounding); it keeps that absolute accuracy down into the subnormals, overflows to
/// infinity past `ln(f32::MAX)` and flushes to zero far below.
#[test]
fn exp_fast_is_within_two_ulp_of_f64() {
    let mut worst: f64 = 0.0;
    let mut x = -103.0f32;
    while x < 88.7 {
        let u = ulps(exp_fast(x), (x as f64).exp());
        assert!(u <= 2.0, "exp_fast({x}) = {} is {u} ulp from {}", exp_fast(x), (x as f64).exp());
        worst = worst.max(u);
        x += 0.001_37;
    }
    eprintln!("exp_fast: worst {worst:.3} ulp");
    assert_eq!(exp_fast(0.0), 1.0);
    assert_eq!(exp_fast(89.0), f32::INFINITY);
    assert_eq!(exp_fast(1000.0), f32::INFINITY);
    assert_eq!(exp_fast(-110.0), 0.0);
    assert_eq!(exp_fast(-1000.0), 0.0);
    assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    assert!(exp_fast(f32::NAN).is_nan());
}

/// The twin's SiLU against f64: a few ulp, and exact limits (0 for very negative gates, the
/// gate itself for very positive ones).
#[test]
fn silu_fast_matches_f64() {
    let mut x = -120.0f32;
    while x < 120.0 {
        let want = x as f64 / (1.0 + (-(x as f64)).exp());
        let got = silu_fast(x) as f64;
        // Past e^88.7 the denominator overflows, as with libm: the true value there is at most
        // 89 e^-88.7, below 1e-36.
        assert!(
            (got - want).abs() <= 4e-7 * want.abs() + 1e-36,
            "silu_fast({x}) = {got}, f64 {want}"
        );
        x += 0.0113;
    }
    assert_eq!(silu_fast(-200.0), -0.0);
    assert_eq!(silu_fast(200.0), 200.0);
}
