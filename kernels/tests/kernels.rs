//! Every SIMD kernel against its scalar twin and both against an f64 reference, on odd lengths
//! and shapes, with named tolerances.

mod common;

use common::{isas, vecf};
use floe_kernels::dot::{DotKernels, Isa};
use floe_kernels::ops::{self, AttentionShape, KvDType, KvFormat, KvView, RopeStyle};
use floe_kernels::quant::{dequantize_q4_0, dequantize_q8_0, quantize_q4_0, quantize_q8_0, QK};
use floe_kernels::{matmul, matvec, BlockQ4_0, BlockQ8_0, DType, KernelPool, Matrix};
use half::{bf16, f16};

/// f32 dot products: relative to sum |w x|. Float sums of n terms in any order differ from the
/// exact sum by at most about n * 2^-24 of sum |w x|; 1e-5 covers n up to ~160 with margin and
/// is loose enough for blockwise reassociation of longer rows (errors grow like sqrt(n)).
const DOT_REL_TOL: f64 = 1e-5;
/// SIMD against scalar for the same inputs: only summation order differs.
const SIMD_VS_SCALAR_REL_TOL: f64 = 1e-5;
/// Q8_0 round trip: |x - x'| <= d/2 from rounding, plus the f16 rounding of d (2^-11 relative,
/// times up to 127 steps).
const Q8_ROUNDTRIP_SCALE_FACTOR: f64 = 0.5 + 127.0 / 2048.0 + 1e-6;
/// Q4_0 round trip: the value opposite in sign to the largest clamps from 16 to 15 steps, so
/// |x - x'| <= |d|, plus f16 rounding of d (8 steps x 2^-11).
const Q4_ROUNDTRIP_SCALE_FACTOR: f64 = 1.0 + 8.0 / 2048.0 + 1e-6;
/// matvec against an f64 reference from the same (dequantised) weights and activations.
const MATVEC_F32_REL_TOL: f64 = 1e-5;
/// Q8_0 activations: each activation is off by up to d/2 of its block (about 0.4 % of the
/// block's largest value), so the product is off by about that much of sum |w| |x|.
const MATVEC_Q8_ACT_REL_TOL: f64 = 8e-3;
/// Small ops (norm, softmax, rope, swiglu, attention) against f64: a few f32 ulps.
const OPS_ABS_TOL: f64 = 2e-5;

/// The f64 dot product of `w` and `x`, and the sum of its terms' magnitudes (the error scale).
fn dot_f64(w: &[f32], x: &[f32]) -> (f64, f64) {
    let terms = w.iter().zip(x).map(|(a, b)| *a as f64 * *b as f64);
    (terms.clone().sum(), terms.map(f64::abs).sum())
}

fn close(got: f64, want: f64, scale: f64, tol: f64) -> bool {
    (got - want).abs() <= tol * scale.max(1e-30)
}

const ODD_LENGTHS: &[usize] = &[1, 3, 7, 15, 17, 31, 33, 63, 100, 257, 1001, 4099];
const ODD_BLOCKS: &[usize] = &[1, 2, 3, 5, 7, 17, 33, 129];

/// `y += a x` (attention's value sums) on every ISA equals the scalar twin bit for bit: both
/// use one fused multiply-add per element.
#[test]
fn axpy_matches_scalar_bit_for_bit() {
    let scalar = DotKernels::for_isa(Isa::Scalar).unwrap();
    for k in isas() {
        for &n in ODD_LENGTHS {
            let (x, y0) = (vecf(n, 3 * n as u64), vecf(n, 5 * n as u64));
            let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            for a in [0.37f32, -2.5] {
                let (mut got, mut want) = (y0.clone(), y0.clone());
                (k.axpy_f32)(a, &x, &mut got);
                (scalar.axpy_f32)(a, &x, &mut want);
                assert_eq!(got, want, "{} axpy_f32 n={n}", k.isa.name());
                let exact = y0[n / 2] as f64 + a as f64 * x[n / 2] as f64;
                assert!((want[n / 2] as f64 - exact).abs() < 1e-6 * (1.0 + exact.abs()));
                let (mut got, mut want) = (y0.clone(), y0.clone());
                (k.axpy_f16)(a, &xh, &mut got);
                (scalar.axpy_f16)(a, &xh, &mut want);
                assert_eq!(got, want, "{} axpy_f16 n={n}", k.isa.name());
            }
        }
    }
}

#[test]
fn float_dots_match_scalar_and_f64() {
    let scalar = DotKernels::for_isa(Isa::Scalar).unwrap();
    for k in isas() {
        for &n in ODD_LENGTHS {
            let (w, x) = (vecf(n, n as u64), vecf(n, 7 * n as u64));
            let exact: f64 = w.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let mag: f64 = w.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
            let got = (k.f32)(&w, &x) as f64;
            assert!(
                close(got, exact, mag, DOT_REL_TOL),
                "{} f32 n={n}: {got} vs {exact}",
                k.isa.name()
            );
            let s = (scalar.f32)(&w, &x) as f64;
            assert!(
                close(got, s, mag, SIMD_VS_SCALAR_REL_TOL),
                "{} f32 vs scalar n={n}",
                k.isa.name()
            );

            let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
            let exact: f64 = wh.iter().zip(&x).map(|(a, b)| a.to_f64() * *b as f64).sum();
            let got = (k.f16)(&wh, &x) as f64;
            assert!(
                close(got, exact, mag, DOT_REL_TOL),
                "{} f16 n={n}: {got} vs {exact}",
                k.isa.name()
            );
            assert!(close(got, (scalar.f16)(&wh, &x) as f64, mag, SIMD_VS_SCALAR_REL_TOL));

            let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
            let exact: f64 = wb.iter().zip(&x).map(|(a, b)| a.to_f64() * *b as f64).sum();
            let got = (k.bf16)(&wb, &x) as f64;
            assert!(
                close(got, exact, mag, DOT_REL_TOL),
                "{} bf16 n={n}: {got} vs {exact}",
                k.isa.name()
            );
            assert!(close(got, (scalar.bf16)(&wb, &x) as f64, mag, SIMD_VS_SCALAR_REL_TOL));
        }
    }
}

fn q8(x: &[f32]) -> Vec<BlockQ8_0> {
    let mut b = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; x.len() / QK];
    quantize_q8_0(x, &mut b);
    b
}

fn q4(x: &[f32]) -> Vec<BlockQ4_0> {
    let mut b = vec![BlockQ4_0 { d: f16::ZERO, qs: [0; QK / 2] }; x.len() / QK];
    quantize_q4_0(x, &mut b);
    b
}

#[test]
fn quant_dots_match_scalar_and_f64() {
    let scalar = DotKernels::for_isa(Isa::Scalar).unwrap();
    for k in isas() {
        for &nb in ODD_BLOCKS {
            let n = nb * QK;
            let (w, x) = (vecf(n, 3 + nb as u64), vecf(n, 11 * nb as u64));
            let (wq8, wq4, xq) = (q8(&w), q4(&w), q8(&x));
            let (mut w8d, mut w4d, mut xd) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            dequantize_q8_0(&wq8, &mut w8d);
            dequantize_q4_0(&wq4, &mut w4d);
            dequantize_q8_0(&xq, &mut xd);
            for (name, wd, got, s) in [
                ("q8_0", &w8d, (k.q8_0)(&wq8, &xq), (scalar.q8_0)(&wq8, &xq)),
                ("q4_0", &w4d, (k.q4_0)(&wq4, &xq), (scalar.q4_0)(&wq4, &xq)),
            ] {
                let exact: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = wd.iter().zip(&xd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                assert!(
                    close(got as f64, exact, mag, DOT_REL_TOL),
                    "{} {name} blocks={nb}: {got} vs {exact}",
                    k.isa.name()
                );
                assert!(
                    close(got as f64, s as f64, mag, SIMD_VS_SCALAR_REL_TOL),
                    "{} {name} vs scalar",
                    k.isa.name()
                );
            }
        }
    }
}

#[test]
fn quantisation_round_trip_error_bounds() {
    // Include blocks of zeros, of one spike, and of negative-dominated values.
    let mut x = vecf(32 * 64, 5);
    x[..32].fill(0.0);
    x[32..64].fill(0.0);
    x[40] = -3.0;
    x[64..96].iter_mut().for_each(|v| *v = -v.abs() * 10.0);
    let (b8, b4) = (q8(&x), q4(&x));
    let (mut y8, mut y4) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    dequantize_q8_0(&b8, &mut y8);
    dequantize_q4_0(&b4, &mut y4);
    for (i, &v) in x.iter().enumerate() {
        let (d8, d4) = (b8[i / QK].d.to_f64().abs(), b4[i / QK].d.to_f64().abs());
        let amax = x[i / QK * QK..][..QK].iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
        assert!(
            (v as f64 - y8[i] as f64).abs() <= Q8_ROUNDTRIP_SCALE_FACTOR * d8 + amax * 1e-7,
            "q8 at {i}"
        );
        assert!(
            (v as f64 - y4[i] as f64).abs() <= Q4_ROUNDTRIP_SCALE_FACTOR * d4 + amax * 1e-7,
            "q4 at {i}"
        );
    }
    assert!(y8[..32].iter().all(|&v| v == 0.0) && y4[..32].iter().all(|&v| v == 0.0));
    // The largest magnitude survives Q4_0 exactly up to the f16 scale: it maps to -8 * d.
    assert!((y4[40] as f64 + 3.0).abs() <= 3.0 / 2048.0);
}

/// `bytes` in 4-byte words (so f32 matrices view them aligned); the tail word zero-padded.
fn aligned_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect()
}

fn bytes_of(dtype: DType, w: &[f32]) -> Vec<u8> {
    match dtype {
        DType::F32 => bytemuck::cast_slice(w).to_vec(),
        DType::F16 => w.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::Bf16 => w.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::Q8_0 => bytemuck::cast_slice(&q8(w)).to_vec(),
        DType::Q4_0 => bytemuck::cast_slice(&q4(w)).to_vec(),
        DType::Iq4Nl => iq4_nl(w),
        k => k.quantize(w).unwrap_or_else(|| panic!("{k}: floe has no quantiser for it")).unwrap(),
    }
}

/// IQ4_NL blocks of `w` (floe has no IQ4_NL quantiser; llama.cpp's needs an imatrix search):
/// each value's nearest level at a scale that maps the block's largest magnitude to 127.
fn iq4_nl(w: &[f32]) -> Vec<u8> {
    use floe_kernels::quant::{BlockIq4Nl, KVALUES_IQ4NL};
    let blocks: Vec<BlockIq4Nl> = w
        .chunks_exact(32)
        .map(|c| {
            let amax = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let level = |v: f32| {
                (0..16u8)
                    .min_by(|&a, &b| {
                        let da = (KVALUES_IQ4NL[a as usize] as f32 * d - v).abs();
                        let db = (KVALUES_IQ4NL[b as usize] as f32 * d - v).abs();
                        da.total_cmp(&db)
                    })
                    .unwrap()
            };
            let qs = std::array::from_fn(|j| level(c[j]) | (level(c[j + 16]) << 4));
            BlockIq4Nl { d: f16::from_f32(d), qs }
        })
        .collect();
    bytemuck::cast_slice(&blocks).to_vec()
}

fn dequant(dtype: DType, w: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    match dtype {
        DType::F32 => out.copy_from_slice(w),
        DType::F16 => out.iter_mut().zip(w).for_each(|(o, v)| *o = f16::from_f32(*v).to_f32()),
        DType::Bf16 => out.iter_mut().zip(w).for_each(|(o, v)| *o = bf16::from_f32(*v).to_f32()),
        DType::Q8_0 => dequantize_q8_0(&q8(w), &mut out),
        DType::Q4_0 => dequantize_q4_0(&q4(w), &mut out),
        k => panic!("{k}: floe has no quantiser for it (tests/kquant.rs covers K-quants)"),
    }
    out
}

#[test]
fn matvec_and_matmul_match_f64_for_every_format() {
    let pool = KernelPool::new(2).unwrap();
    for dtype in [DType::F32, DType::F16, DType::Bf16, DType::Q8_0, DType::Q4_0] {
        for &(rows, cols) in &[(1usize, 32usize), (37, 96), (130, 160), (17, 1024)] {
            let w = vecf(rows * cols, (rows * cols) as u64);
            let bytes = bytes_of(dtype, &w);
            // Keep the bytes 4-aligned for f32 views.
            let aligned = aligned_words(&bytes);
            let data = &bytemuck::cast_slice::<u32, u8>(&aligned)[..bytes.len()];
            let m = Matrix::new(dtype, rows, cols, data).unwrap();
            let wd = dequant(dtype, &w);
            let n = 3;
            let xs = vecf(n * cols, 99);
            let quant_act = matches!(dtype, DType::Q8_0 | DType::Q4_0);
            let tol = if quant_act { MATVEC_Q8_ACT_REL_TOL } else { MATVEC_F32_REL_TOL };
            for t in 0..n {
                let x = &xs[t * cols..][..cols];
                for p in [None, Some(&pool)] {
                    let mut y = vec![0.0; rows];
                    matvec(&m, x, &mut y, p).unwrap();
                    for r in 0..rows {
                        let wr = &wd[r * cols..][..cols];
                        let (exact, mag) = dot_f64(wr, x);
                        assert!(
                            close(y[r] as f64, exact, mag, tol),
                            "{dtype} {rows}x{cols} row {r}: {} vs {exact}",
                            y[r]
                        );
                    }
                }
            }
            // Prefill (the tiled GEMM where the CPU has one): every token count a tile can
            // leave over, and more than one block of the many-token row kernels, against the
            // same f64 reference.
            for n in [2usize, 3, 5, 9, 67] {
                let xs = vecf(n * cols, 7 + n as u64);
                let mut ys = vec![0.0; n * rows];
                matmul(&m, &xs, &mut ys, n, Some(&pool)).unwrap();
                let mut single = vec![0.0; n * rows];
                matmul(&m, &xs, &mut single, n, None).unwrap();
                for t in 0..n {
                    let x = &xs[t * cols..][..cols];
                    for r in 0..rows {
                        let wr = &wd[r * cols..][..cols];
                        let (exact, mag) = dot_f64(wr, x);
                        let got = ys[t * rows + r];
                        assert!(
                            close(got as f64, exact, mag, tol),
                            "{dtype} {rows}x{cols} matmul n={n} token {t} row {r}: {got} vs {exact}"
                        );
                        assert_eq!(got.to_bits(), single[t * rows + r].to_bits(), "threads");
                    }
                }
                // The exact mode keeps f32 activations against the dequantised weights.
                let mut exact_mode = vec![0.0; n * rows];
                floe_kernels::matmul_with(
                    &m,
                    &xs,
                    &mut exact_mode,
                    n,
                    Some(&pool),
                    floe_kernels::QuantActivations::F32,
                )
                .unwrap();
                for t in 0..n {
                    let x = &xs[t * cols..][..cols];
                    for r in 0..rows {
                        let wr = &wd[r * cols..][..cols];
                        let (exact, mag) = dot_f64(wr, x);
                        let got = exact_mode[t * rows + r] as f64;
                        assert!(
                            close(got, exact, mag, MATVEC_F32_REL_TOL),
                            "{dtype} exact mode n={n}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
    // Shapes a block format cannot hold, and wrong sizes, are errors.
    assert!(Matrix::new(DType::Q4_0, 2, 33, &[0u8; 100]).is_err());
    assert!(Matrix::new(DType::F32, 2, 4, &[0u8; 31]).is_err());
}

/// A group of products over one input (mixed formats, one and several tokens) gives each
/// product's result bit for bit, with and without a pool.
#[test]
fn matmul_group_equals_its_products() {
    let pool = KernelPool::new(2).unwrap();
    let cols = 96;
    let specs = [(DType::Q8_0, 37usize), (DType::Bf16, 20), (DType::F32, 3), (DType::Q4_0, 64)];
    let store: Vec<(DType, usize, Vec<u32>, usize)> = specs
        .iter()
        .map(|&(dtype, rows)| {
            let bytes = bytes_of(dtype, &vecf(rows * cols, rows as u64));
            (dtype, rows, aligned_words(&bytes), bytes.len())
        })
        .collect();
    let mats: Vec<Matrix> = store
        .iter()
        .map(|(dtype, rows, words, len)| {
            Matrix::new(*dtype, *rows, cols, &bytemuck::cast_slice::<u32, u8>(words)[..*len])
                .unwrap()
        })
        .collect();
    for n in [1usize, 2, 5] {
        let xs = vecf(n * cols, 40 + n as u64);
        for p in [None, Some(&pool)] {
            let mut outs: Vec<Vec<f32>> = mats.iter().map(|m| vec![0.0; n * m.rows()]).collect();
            let mut bufs = floe_kernels::InputBuffers::default();
            let mut input = bufs.input(&xs, n, Default::default());
            let mut group: Vec<(&Matrix, &mut [f32])> =
                mats.iter().zip(outs.iter_mut()).map(|(m, o)| (m, o.as_mut_slice())).collect();
            floe_kernels::matmul_group(&mut group, &mut input, p).unwrap();
            for (m, got) in mats.iter().zip(&outs) {
                let mut want = vec![0.0; n * m.rows()];
                matmul(m, &xs, &mut want, n, None).unwrap();
                assert!(
                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} n={n}",
                    m.dtype()
                );
            }
        }
    }
}

/// Per-token inputs (what a decode step over several sequences uses) give every token exactly
/// its own matvec's result, for every 32-value format, any token count and row count, with and
/// without a pool (so the many-token kernels equal matvec); and the default (GEMM) path is what the per-token switch turns off, not the rows path.
#[test]
fn per_token_inputs_equal_each_tokens_matvec_bit_for_bit() {
    let pool = KernelPool::new(2).unwrap();
    let cols = 160;
    let types = [DType::F32, DType::F16, DType::Bf16, DType::Q8_0, DType::Q4_0, DType::Q4_1];
    for dtype in types.into_iter().chain([DType::Q5_0, DType::Q5_1, DType::Mxfp4, DType::Iq4Nl]) {
        for rows in [1usize, 7, 37, 130] {
            let bytes = bytes_of(dtype, &vecf(rows * cols, rows as u64 + 5));
            let words = aligned_words(&bytes);
            let data = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
            let m = Matrix::new(dtype, rows, cols, data).unwrap();
            // More than one block of tokens for the many-token kernels, too.
            for n in [2usize, 3, 8, 9, 70] {
                let xs = vecf(n * cols, 70 + n as u64);
                for p in [None, Some(&pool)] {
                    let mut got = vec![0.0; n * rows];
                    let mut bufs = floe_kernels::InputBuffers::default();
                    bufs.set_kernels(floe_kernels::TokenKernels::PerToken);
                    let mut input = bufs.input(&xs, n, Default::default());
                    floe_kernels::matmul_input(&m, &mut input, &mut got, p).unwrap();
                    for t in 0..n {
                        let mut want = vec![0.0; rows];
                        matvec(&m, &xs[t * cols..(t + 1) * cols], &mut want, p).unwrap();
                        let row = &got[t * rows..(t + 1) * rows];
                        assert!(
                            row.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{dtype} rows={rows} n={n} token {t}"
                        );
                    }
                }
            }
        }
    }
}

/// Tiles inputs (prompt rows) give every token the same result whatever other tokens share
/// its product: n tokens at once equal each token alone, for every format and row count, with
/// and without a pool (so a prompt split into chunks, or batched with other prompts, runs each
/// row as it runs whole).
#[test]
fn tiles_inputs_give_each_token_the_same_result_in_any_company() {
    let pool = KernelPool::new(2).unwrap();
    let cols = 160;
    for dtype in [DType::F32, DType::F16, DType::Bf16, DType::Q8_0, DType::Q4_0] {
        for rows in [1usize, 7, 37, 130] {
            let bytes = bytes_of(dtype, &vecf(rows * cols, rows as u64 + 9));
            let words = aligned_words(&bytes);
            let data = &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()];
            let m = Matrix::new(dtype, rows, cols, data).unwrap();
            let tiles = |xs: &[f32], n: usize, p: Option<&KernelPool>| {
                let mut out = vec![0.0; n * rows];
                let mut bufs = floe_kernels::InputBuffers::default();
                bufs.set_kernels(floe_kernels::TokenKernels::Tiles);
                let mut input = bufs.input(xs, n, Default::default());
                floe_kernels::matmul_input(&m, &mut input, &mut out, p).unwrap();
                out
            };
            for n in [2usize, 3, 5, 8, 9] {
                let xs = vecf(n * cols, 90 + n as u64);
                for p in [None, Some(&pool)] {
                    let all = tiles(&xs, n, p);
                    for t in 0..n {
                        let one = tiles(&xs[t * cols..(t + 1) * cols], 1, p);
                        let row = &all[t * rows..(t + 1) * rows];
                        assert!(
                            row.iter().zip(&one).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{dtype} rows={rows} n={n} token {t}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn ops_match_f64_references() {
    // RMSNorm
    let x = vecf(131, 1);
    let g = vecf(131, 2);
    let mut y = vec![0.0; 131];
    ops::rms_norm(&x, &g, 1e-6, &mut y);
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 131.0;
    for i in 0..131 {
        let want = x[i] as f64 / (ms + 1e-6).sqrt() * g[i] as f64;
        assert!((y[i] as f64 - want).abs() < OPS_ABS_TOL, "rms_norm {i}");
    }
    // Softmax
    let mut s = vecf(77, 3).iter().map(|v| v * 20.0).collect::<Vec<_>>();
    let orig = s.clone();
    ops::softmax(&mut s);
    let m = orig.iter().fold(f64::MIN, |a, b| a.max(*b as f64));
    let z: f64 = orig.iter().map(|v| (*v as f64 - m).exp()).sum();
    for i in 0..77 {
        assert!((s[i] as f64 - (orig[i] as f64 - m).exp() / z).abs() < OPS_ABS_TOL);
    }
    let mut masked = vec![f32::NEG_INFINITY; 4];
    ops::softmax(&mut masked);
    assert!(masked.iter().all(|v| *v == 0.0));
    // SwiGLU
    let (ga, up) = (vecf(33, 4), vecf(33, 5));
    let mut o = vec![0.0; 33];
    ops::swiglu(&ga, &up, &mut o);
    for i in 0..33 {
        let gv = ga[i] as f64;
        assert!((o[i] as f64 - gv / (1.0 + (-gv).exp()) * up[i] as f64).abs() < OPS_ABS_TOL);
    }
    // Top-k: against a full sort; ties go to the lower index.
    let mut v = vecf(100, 6);
    v[10] = 5.0;
    v[20] = 5.0;
    let tk = ops::top_k(&v, 7);
    let mut idx: Vec<usize> = (0..100).collect();
    idx.sort_by(|a, b| v[*b].total_cmp(&v[*a]).then(a.cmp(b)));
    assert_eq!(tk.iter().map(|t| t.0).collect::<Vec<_>>(), idx[..7].to_vec());
    assert_eq!(tk[0].0, 10);
    // top_k_into gives the same list, NaNs and every k included.
    v[30] = f32::NAN;
    let mut into = Vec::new();
    for k in [0, 1, 7, 99, 100, 150] {
        ops::top_k_into(&v, k, &mut into);
        let want = ops::top_k(&v, k);
        assert_eq!(into.len(), want.len(), "k={k}");
        assert!(into.iter().zip(&want).all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits()));
    }
}

/// RoPE from a position table rotates exactly as the direct form.
#[test]
fn rope_table_matches_rope_bit_for_bit() {
    let inv = ops::rope_inv_freq(48, 10000.0);
    let mut table = Vec::new();
    ops::rope_table(995, 10, &inv, &mut table);
    for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
        for (i, row) in table.chunks_exact(inv.len()).enumerate() {
            let x = vecf(64, i as u64);
            let (mut a, mut b) = (x.clone(), x.clone());
            ops::rope(&mut a, 995 + i, &inv, style);
            ops::rope_from_table(&mut b, row, style);
            assert_eq!(a, b, "{style:?} position {}", 995 + i);
        }
    }
}

#[test]
fn rope_matches_f64_in_both_layouts() {
    let d = 64;
    let inv = ops::rope_inv_freq(48, 10000.0); // partial rotary: 48 of 64 channels
    for style in [RopeStyle::Neox, RopeStyle::Interleaved] {
        for pos in [0usize, 1, 17, 1000] {
            let x = vecf(d, pos as u64 + 1);
            let mut y = x.clone();
            ops::rope(&mut y, pos, &inv, style);
            let half = inv.len();
            for (i, f) in inv.iter().enumerate() {
                let ang = pos as f64 * *f as f64;
                let (a, b) = match style {
                    RopeStyle::Neox => (i, i + half),
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                };
                let (x0, x1) = (x[a] as f64, x[b] as f64);
                // f32 angles for large positions carry ~pos * 2^-24 rad of error.
                let tol = OPS_ABS_TOL + pos as f64 * 1e-7;
                assert!(
                    (y[a] as f64 - (x0 * ang.cos() - x1 * ang.sin())).abs() < tol,
                    "{style:?} {pos} {i}"
                );
                assert!((y[b] as f64 - (x1 * ang.cos() + x0 * ang.sin())).abs() < tol);
            }
            assert_eq!(y[48..], x[48..], "channels past the rotary dim are untouched");
        }
    }
}

/// Stores `x` (`positions x kv_heads x head_dim`) as a cache of `dtype` and reads it back as
/// f64, the values attention actually sees.
fn kv_cache(dtype: KvDType, x: &[f32], d: usize) -> (Vec<u64>, usize, Vec<f64>) {
    let hb = dtype.head_bytes(d).unwrap();
    let heads = x.len() / d;
    let mut store = vec![0u64; (heads * hb).div_ceil(8)];
    let bytes = bytemuck::cast_slice_mut::<u64, u8>(&mut store);
    let mut back = vec![0.0f32; x.len()];
    for (i, (h, o)) in x.chunks_exact(d).zip(back.chunks_exact_mut(d)).enumerate() {
        dtype.store(h, &mut bytes[i * hb..(i + 1) * hb]);
        dtype.load(&bytes[i * hb..(i + 1) * hb], o);
    }
    (store, heads * hb, back.into_iter().map(|v| v as f64).collect())
}

/// A view of separate key and value caches of one part each.
fn view<'a>(k: (KvDType, &'a [u8]), v: (KvDType, &'a [u8]), d: usize) -> KvView<'a> {
    let (kf, vf) = (KvFormat::one(k.0, d).unwrap(), KvFormat::one(v.0, d).unwrap());
    KvView {
        k_format: kf,
        v_format: vf,
        k: k.1,
        v: v.1,
        k_stride: kf.bytes(),
        v_stride: vf.bytes(),
    }
}

/// Attention over every cache type, with and without a pool, against an f64 softmax over the
/// values the cache holds; a context of several key tiles exercises the online softmax.
#[test]
fn grouped_query_attention_matches_f64() {
    let pool = KernelPool::new(2).unwrap();
    for (dtype, d, tol) in [
        (KvDType::F32, 24, OPS_ABS_TOL),
        (KvDType::F16, 24, OPS_ABS_TOL),
        (KvDType::F32, 64, OPS_ABS_TOL),
        (KvDType::F16, 64, OPS_ABS_TOL),
        // Every row is decoded once to f32 and scored in f32, whatever its type.
        (KvDType::Q8_0, 64, OPS_ABS_TOL),
        (KvDType::Q8_0, 24, OPS_ABS_TOL),
        (KvDType::Q4_0, 80, OPS_ABS_TOL),
        (KvDType::Tq4, 96, OPS_ABS_TOL),
        (KvDType::Tq3, 64, OPS_ABS_TOL),
        (KvDType::Tq2, 128, OPS_ABS_TOL),
    ] {
        let shape = AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            window: None,
        };
        let (first, n) = (2 * ops::KEY_TILE + 9, 3usize);
        let kv_len = first + n;
        let stride = shape.kv_heads * d;
        let (kc, klen, k) = kv_cache(dtype, &vecf(kv_len * stride, 21), d);
        let (vc, vlen, v) = kv_cache(dtype, &vecf(kv_len * stride, 22), d);
        let kv = view(
            (dtype, &bytemuck::cast_slice::<u64, u8>(&kc)[..klen]),
            (dtype, &bytemuck::cast_slice::<u64, u8>(&vc)[..vlen]),
            d,
        );
        let q = vecf(n * shape.heads * d, 23);
        let scale = shape.scale;
        let mut out = vec![0.0; q.len()];
        ops::attention(shape, &q, kv, first, n, &mut out, None, None);
        let mut pooled = vec![0.0; q.len()];
        ops::attention(shape, &q, kv, first, n, &mut pooled, None, Some(&pool));
        assert!(
            out.iter().zip(&pooled).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{dtype:?}: pool"
        );
        for t in 0..n {
            for h in 0..shape.heads {
                let kvh = h / (shape.heads / shape.kv_heads);
                let len = first + t + 1;
                let sc: Vec<f64> = (0..len)
                    .map(|p| {
                        (0..d)
                            .map(|i| {
                                q[(t * shape.heads + h) * d + i] as f64
                                    * k[p * stride + kvh * d + i]
                            })
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                for i in 0..d {
                    let want: f64 =
                        (0..len).map(|p| (sc[p] - m).exp() / z * v[p * stride + kvh * d + i]).sum();
                    let got = out[(t * shape.heads + h) * d + i] as f64;
                    assert!((got - want).abs() < tol, "{dtype:?} t{t} h{h} i{i}: {got} vs {want}");
                }
            }
        }
    }
    assert_eq!(KvDType::Q8_0.head_bytes(24), Some(34), "Q8_0 pads to whole blocks");
    assert_eq!(KvDType::Tq3.head_bytes(2000), None, "wider than the cache takes");
}

/// A sliding window limits what each query sees, and sinks (one logit per head, no value) join
/// the softmax's denominator: against the f64 softmax over the same set, with and without a pool.
#[test]
fn sliding_window_and_sinks_match_f64() {
    let pool = KernelPool::new(2).unwrap();
    let d = 32;
    let (first, n) = (ops::KEY_TILE + 20, 4usize);
    let kv_len = first + n;
    let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: d, scale: 0.2, window: Some(70) };
    let stride = shape.kv_heads * d;
    let (k, v) = (vecf(kv_len * stride, 31), vecf(kv_len * stride, 32));
    let kv =
        view((KvDType::F32, bytemuck::cast_slice(&k)), (KvDType::F32, bytemuck::cast_slice(&v)), d);
    let q = vecf(n * shape.heads * d, 33);
    let sinks = [0.5f32, -1.0, 2.0, 0.0];
    for (window, sink) in [(Some(70), None), (None, Some(&sinks[..])), (Some(70), Some(&sinks[..]))]
    {
        let shape = AttentionShape { window, ..shape };
        let (mut out, mut pooled) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        ops::attention(shape, &q, kv, first, n, &mut out, sink, None);
        ops::attention(shape, &q, kv, first, n, &mut pooled, sink, Some(&pool));
        assert_eq!(out, pooled);
        for t in 0..n {
            for h in 0..shape.heads {
                let kvh = h / 2;
                let end = first + t + 1;
                let start = window.map_or(0, |w| end - w);
                let sc: Vec<f64> = (start..end)
                    .map(|p| {
                        (0..d)
                            .map(|i| {
                                q[(t * 4 + h) * d + i] as f64 * k[p * stride + kvh * d + i] as f64
                            })
                            .sum::<f64>()
                            * 0.2
                    })
                    .collect();
                let s_h = sink.map(|s| s[h] as f64);
                let m = sc.iter().cloned().chain(s_h).fold(f64::MIN, f64::max);
                let z: f64 = sc.iter().map(|s| (s - m).exp()).sum::<f64>()
                    + s_h.map_or(0.0, |s| (s - m).exp());
                for i in 0..d {
                    let want: f64 = (start..end)
                        .map(|p| (sc[p - start] - m).exp() / z * v[p * stride + kvh * d + i] as f64)
                        .sum();
                    let got = out[(t * 4 + h) * d + i] as f64;
                    assert!(
                        (got - want).abs() < OPS_ABS_TOL,
                        "{window:?} t{t} h{h} i{i}: {got} vs {want}"
                    );
                }
            }
        }
    }
}

/// Sparse attention (`attention_at`, DeepSeek's indexer picks the positions): a scattered,
/// unordered selection against the f64 softmax over exactly those positions, with and without a
/// pool; and the whole causal span in order gives dense attention's result bit for bit.
#[test]
fn attention_over_selected_positions_matches_f64_and_dense() {
    let pool = KernelPool::new(2).unwrap();
    let d = 40;
    let shape = AttentionShape { heads: 8, kv_heads: 1, head_dim: d, scale: 0.15, window: None };
    let len = 2 * ops::KEY_TILE + 11;
    for dtype in [KvDType::F32, KvDType::Q8_0] {
        let (kc, klen, k) = kv_cache(dtype, &vecf(len * d, 41), d);
        let (vc, vlen, v) = kv_cache(dtype, &vecf(len * d, 42), d);
        let kv = view(
            (dtype, &bytemuck::cast_slice::<u64, u8>(&kc)[..klen]),
            (dtype, &bytemuck::cast_slice::<u64, u8>(&vc)[..vlen]),
            d,
        );
        let q = vecf(shape.heads * d, 43);
        // More than a key tile of positions, scattered and out of order, the last one included.
        let picked: Vec<usize> = (0..len).map(|i| (i * 37 + 5) % len).step_by(2).collect();
        assert!(picked.len() > ops::KEY_TILE && picked.contains(&(len - 1)));
        let (mut out, mut pooled) = (vec![0.0; q.len()], vec![0.0; q.len()]);
        ops::attention_at(shape, &q, kv, &picked, &mut out, None);
        ops::attention_at(shape, &q, kv, &picked, &mut pooled, Some(&pool));
        assert_eq!(out, pooled, "{dtype:?}: pool");
        for h in 0..shape.heads {
            let sc: Vec<f64> = picked
                .iter()
                .map(|&p| (0..d).map(|i| q[h * d + i] as f64 * k[p * d + i]).sum::<f64>() * 0.15)
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for i in 0..d {
                let want: f64 =
                    picked.iter().zip(&sc).map(|(&p, s)| (s - m).exp() / z * v[p * d + i]).sum();
                let got = out[h * d + i] as f64;
                assert!((got - want).abs() < OPS_ABS_TOL, "{dtype:?} h{h} i{i}: {got} vs {want}");
            }
        }
        let every: Vec<usize> = (0..len).collect();
        let mut dense = vec![0.0; q.len()];
        ops::attention(shape, &q, kv, len - 1, 1, &mut dense, None, None);
        ops::attention_at(shape, &q, kv, &every, &mut out, None);
        assert!(out.iter().zip(&dense).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?}");
    }
}

/// Every ISA's f16 path converts edge values exactly: subnormals, the largest normal, signed
/// zeros, infinities (NaN stays NaN). A one-hot activation picks each value out.
#[test]
fn f16_edge_values_convert_exactly_on_every_isa() {
    let values = [
        f16::from_bits(0x0001), // smallest subnormal
        f16::from_bits(0x03FF), // largest subnormal
        f16::from_bits(0x0400), // smallest normal
        f16::MAX,
        f16::MIN,
        f16::NEG_ZERO,
        f16::from_f32(-1.5),
        f16::INFINITY,
        f16::NEG_INFINITY,
        f16::NAN,
    ];
    for k in isas() {
        for &v in &values {
            for at in [0usize, 5, 13] {
                let mut w = vec![f16::ZERO; 16];
                w[at] = v;
                let mut x = vec![0.0f32; 16];
                x[at] = 1.0;
                // Other lanes are 0 x 0; an infinite weight times 0 would be NaN, so they are 0.
                let got = (k.f16)(&w, &x);
                let want = v.to_f32();
                assert!(
                    got == want || (got.is_nan() && want.is_nan()),
                    "{}: f16 {:#06x} at {at} gave {got}, want {want}",
                    k.isa.name(),
                    v.to_bits()
                );
            }
        }
    }
}

/// YaRN's frequencies: the highest (many rotations in the original context) stay as they are,
/// the lowest are divided by the factor, a factor of 1 changes nothing.
#[test]
fn yarn_keeps_fast_frequencies_and_interpolates_slow_ones() {
    use floe_kernels::ops::{rope_inv_freq, yarn_inv_freq};
    let plain = rope_inv_freq(64, 150_000.0);
    let same = yarn_inv_freq(64, 150_000.0, 1.0, 4096, 32.0, 1.0, false);
    for (a, b) in plain.iter().zip(&same) {
        assert!((a - b).abs() <= 1e-6 * a, "{a} {b}");
    }
    let y = yarn_inv_freq(64, 150_000.0, 32.0, 4096, 32.0, 1.0, false);
    assert!((y[0] - plain[0]).abs() <= 1e-6 * plain[0]);
    let last = plain.len() - 1;
    assert!((y[last] - plain[last] / 32.0).abs() <= 1e-6 * plain[last]);
    assert!(y.windows(2).all(|w| w[1] < w[0]), "still decreasing");
}

/// MXFP4 against gguf-py's reference (`bench/scripts/make_mxfp4_vectors.py`): floe's quantiser
/// writes its bytes, floe's dequantisation gives its values, bit for bit.
#[test]
fn mxfp4_matches_gguf_py_bit_for_bit() {
    use floe_kernels::quant::{dequantize_mxfp4, quantize_mxfp4, BlockMxfp4};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/mxfp4/vectors.bin");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let (x, rest) = bytes.split_at(1024 * 4);
    let (q, y) = rest.split_at(32 * 17);
    let (x, y) = (f32s(x), f32s(y));
    let mut blocks = vec![BlockMxfp4 { e: 0, qs: [0; 16] }; 32];
    quantize_mxfp4(&x, &mut blocks);
    assert!(bytemuck::cast_slice::<BlockMxfp4, u8>(&blocks) == q, "quantised bytes differ");
    let mut out = vec![0.0f32; 1024];
    dequantize_mxfp4(bytemuck::cast_slice(q), &mut out);
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out), bits(&y), "dequantised values differ");
}

/// The MXFP4 . Q8_0 dot product of every ISA against the scalar twin (and the scalar one against
/// an f64 sum over the dequantised blocks), on odd block counts.
#[test]
fn mxfp4_dot_kernels_match_the_scalar_twin_on_odd_lengths() {
    use floe_kernels::dot::scalar;
    use floe_kernels::quant::{
        dequantize_mxfp4, dequantize_q8_0, quantize_q8_0, BlockMxfp4, BlockQ8_0,
    };
    let mut seed = 11u64;
    let mut next = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    for blocks in [1usize, 3, 7, 33] {
        let w: Vec<BlockMxfp4> = (0..blocks)
            .map(|_| {
                let mut qs = [0u8; 16];
                qs.iter_mut().for_each(|b| *b = next() as u8);
                BlockMxfp4 { e: 118 + (next() % 16) as u8, qs }
            })
            .collect();
        let xs: Vec<f32> =
            (0..blocks * 32).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let mut x = vec![BlockQ8_0 { d: half::f16::ZERO, qs: [0; 32] }; blocks];
        quantize_q8_0(&xs, &mut x);
        let (mut wf, mut xf) = (vec![0.0; blocks * 32], vec![0.0; blocks * 32]);
        dequantize_mxfp4(&w, &mut wf);
        dequantize_q8_0(&x, &mut xf);
        let exact: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
        let s = scalar::dot_mxfp4(&w, &x);
        assert!(
            (s as f64 - exact).abs() <= 1e-4 * exact.abs().max(1e-3),
            "{blocks}: {s} vs {exact}"
        );
        for k in isas() {
            let v = (k.mxfp4)(&w, &x);
            assert!((v - s).abs() <= 1e-5 * s.abs().max(1e-3), "{:?} {blocks}: {v} vs {s}", k.isa);
            if k.isa == Isa::Neon {
                // NEON takes the scalar twin's float steps around exact integer lanes.
                assert_eq!(v.to_bits(), s.to_bits(), "neon {blocks}");
            }
        }
    }
}
