//! K-quant kernels: every ISA's Q2_K..Q6_K x Q8_K dot product against the scalar twin and both
//! against an f64 reference over the dequantised blocks, on odd block counts; the Q8_K and
//! Q8_0 activation quantisers against their rules (ties to even); matvec with K-quant weights
//! against f64. (Bit-exact dequantisation against ggml's is tests/tests/kquant.rs in the
//! workspace, which has the GGUF reader.)

use floe_kernels::dot::{DotKernels, Isa};
use floe_kernels::quant::{
    dequantize_q4_k, dequantize_q5_k, dequantize_q6_k, dequantize_q8_k, quantize_q8_0_activations,
    quantize_q8_k, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK, QK_K,
};
use floe_kernels::{matvec, BlockQ8_0, DType, KernelPool, Matrix};
use half::f16;

/// A K-quant dot product against f64 over the same dequantised values, relative to
/// Σ |w x| + Σ |dmin m x| (the min term is computed apart and may cancel against the scaled
/// sum). The kernels sum integers exactly within a super-block, then do about 4 f32 roundings
/// per super-block and one add per super-block: a few 2^-24 of the scale; 2e-6 leaves margin.
const KDOT_REL_TOL: f64 = 2e-6;
/// matvec with Q8_K activations against f64 with f32 activations: each activation moves by
/// up to d/2 = amax/254 of its 256-block, so the product moves by up to ~0.4% of Σ|w||x|.
const MATVEC_Q8K_ACT_REL_TOL: f64 = 4e-3;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn unit(r: &mut impl FnMut() -> u64) -> f32 {
    ((r() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// `n` blocks of random bytes (every bit pattern of the codes and packed scales is a valid
/// block) with finite, realistically small f16 super-block scales written over `scale_at`.
fn random_blocks<B: bytemuck::Pod>(n: usize, seed: u64, scale_at: &[usize]) -> Vec<B> {
    let mut r = rng(seed);
    let mut v: Vec<B> = vec![bytemuck::Zeroable::zeroed(); n];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
    let size = std::mem::size_of::<B>();
    for (i, b) in bytes.iter_mut().enumerate() {
        let _ = i;
        *b = r() as u8;
    }
    for blk in bytes.chunks_exact_mut(size) {
        for &off in scale_at {
            let d = f16::from_f32(unit(&mut r) * 1e-3);
            blk[off..off + 2].copy_from_slice(&d.to_le_bytes());
        }
    }
    v
}

fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n).map(|_| unit(&mut r) * 3.0).collect()
}

fn q8k(x: &[f32]) -> Vec<BlockQ8K> {
    let mut q = vec![BlockQ8K::ZERO; x.len() / QK_K];
    quantize_q8_k(x, &mut q);
    q
}

fn isas() -> Vec<DotKernels> {
    Isa::ALL.into_iter().filter_map(DotKernels::for_isa).collect()
}

const ODD_SUPERBLOCKS: &[usize] = &[1, 2, 3, 5, 7, 11];

/// A K-quant dot-product kernel.
type KDot<B> = fn(&[B], &[BlockQ8K]) -> f32;

/// Checks `dot(w, x)` of every ISA against f64 and the scalar twin.
fn check<B: bytemuck::Pod>(
    name: &str,
    w: &[B],
    x: &[BlockQ8K],
    deq: fn(&[B], &mut [f32]),
    dot: fn(&DotKernels) -> KDot<B>,
    min_mag: f64,
    tol: f64,
) {
    let n = w.len() * QK_K;
    let (mut wd, mut xd) = (vec![0.0f32; n], vec![0.0f32; n]);
    deq(w, &mut wd);
    dequantize_q8_k(x, &mut xd);
    let exact: f64 = wd.iter().zip(&xd).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mag: f64 =
        wd.iter().zip(&xd).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum::<f64>() + min_mag;
    let scalar = dot(&DotKernels::for_isa(Isa::Scalar).unwrap())(w, x) as f64;
    for k in isas() {
        let got = dot(&k)(w, x) as f64;
        assert!(
            (got - exact).abs() <= tol * mag,
            "{} {name} x{}: {got} vs f64 {exact} (scale {mag})",
            k.isa.name(),
            w.len()
        );
        assert!(
            (got - scalar).abs() <= tol * mag,
            "{} {name} x{}: {got} vs scalar {scalar}",
            k.isa.name(),
            w.len()
        );
        if k.isa == Isa::Neon {
            // NEON takes the scalar twin's float steps around exact integer lanes.
            assert_eq!(got.to_bits(), scalar.to_bits(), "neon {name} x{}", w.len());
        }
    }
}

/// Σ |dmin * m * x| of a Q4_K/Q5_K-style row, the part computed apart from the codes.
fn min_mag(dmin: impl Fn(usize) -> (f32, [u8; 12]), blocks: usize, x: &[f32]) -> f64 {
    let mut s = 0.0;
    for b in 0..blocks {
        let (dm, packed) = dmin(b);
        let (_, m) = floe_kernels::quant::scales_mins_k4(&packed);
        for (i, v) in x[b * QK_K..(b + 1) * QK_K].iter().enumerate() {
            s += (dm as f64 * m[i / 32] as f64 * *v as f64).abs();
        }
    }
    s
}

#[test]
fn k_quant_dots_match_scalar_and_f64_on_odd_lengths() {
    for &nb in ODD_SUPERBLOCKS {
        let x = activations(nb * QK_K, 17 + nb as u64);
        let xq = q8k(&x);
        let mut xd = vec![0.0; x.len()];
        dequantize_q8_k(&xq, &mut xd);

        let w4: Vec<BlockQ4K> = random_blocks(nb, 1 + nb as u64, &[0, 2]);
        let mm = min_mag(|b| (w4[b].dmin.to_f32(), w4[b].scales), nb, &xd);
        check("q4_k", &w4, &xq, dequantize_q4_k, |k| k.q4_k, mm, KDOT_REL_TOL);

        let w5: Vec<BlockQ5K> = random_blocks(nb, 2 + nb as u64, &[0, 2]);
        let mm = min_mag(|b| (w5[b].dmin.to_f32(), w5[b].scales), nb, &xd);
        check("q5_k", &w5, &xq, dequantize_q5_k, |k| k.q5_k, mm, KDOT_REL_TOL);

        let w6: Vec<BlockQ6K> = random_blocks(nb, 3 + nb as u64, &[208]);
        check("q6_k", &w6, &xq, dequantize_q6_k, |k| k.q6_k, 0.0, KDOT_REL_TOL);
    }
}

#[test]
fn q8_k_follows_ggml_rule_with_ties_to_even() {
    // max is the *signed* value of largest magnitude (here negative): iscale = -127/max = 1.
    let mut x = vec![0.0f32; QK_K];
    x[0] = 2.5; // ties to even: 2
    x[1] = 3.5; // 4
    x[2] = -0.5; // -0 -> 0
    x[3] = -127.0;
    x[4] = 126.5; // 126
    x[20] = 1.5; // 2
    let q = q8k(&x);
    assert_eq!(q[0].d, 1.0);
    assert_eq!(&q[0].qs[..5], &[2, 4, 0, -127, 126]);
    assert_eq!(q[0].qs[20], 2);
    assert_eq!(q[0].bsums[0], 2 + 4 - 127 + 126);
    assert_eq!(q[0].bsums[1], 2);
    assert!(q[0].bsums[2..].iter().all(|&s| s == 0));

    // A positive max flips the sign of every code: iscale = -127/max < 0, d < 0.
    let y: Vec<f32> = (0..QK_K).map(|i| i as f32 / 255.0).collect();
    let q = q8k(&y);
    assert_eq!(q[0].qs[255], -127);
    assert!(q[0].d < 0.0);
    for (i, &v) in y.iter().enumerate() {
        let back = q[0].qs[i] as f32 * q[0].d;
        assert!((back - v).abs() <= q[0].d.abs() * 0.5 * (1.0 + 1e-6), "at {i}");
    }
    // All zero: d = 0 and zero codes, not NaN.
    let z = q8k(&[0.0; QK_K]);
    assert_eq!(z[0].d, 0.0);
    assert!(z[0].qs.iter().all(|&q| q == 0));
}

#[test]
fn q8_0_activations_round_like_llama_cpp_x86() {
    let mut x = [0.0f32; QK];
    x[0] = 127.0; // amax: id = 127/127 = 1
    x[1] = 2.5; // ties to even: 2 (the reference weight quantiser would give 3)
    x[2] = -3.5; // -4
    x[3] = 0.5; // 0
    let mut b = [BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }];
    quantize_q8_0_activations(&x, &mut b);
    assert_eq!(b[0].d, f16::from_f32(1.0));
    assert_eq!(&b[0].qs[..4], &[127, 2, -4, 0]);
}

#[test]
fn k_quant_matvec_matches_f64_with_threads() {
    let (rows, cols) = (37, 3 * QK_K);
    let x = activations(cols, 99);
    let pool = KernelPool::new(2).unwrap();
    for dtype in [DType::Q2K, DType::Q3K, DType::Q4K, DType::Q5K, DType::Q6K] {
        let bytes: Vec<u8> = match dtype {
            DType::Q2K => {
                bytemuck::cast_slice(&random_blocks::<BlockQ2K>(rows * 3, 7, &[80, 82])).to_vec()
            }
            DType::Q3K => {
                bytemuck::cast_slice(&random_blocks::<BlockQ3K>(rows * 3, 7, &[108])).to_vec()
            }
            DType::Q4K => {
                bytemuck::cast_slice(&random_blocks::<BlockQ4K>(rows * 3, 7, &[0, 2])).to_vec()
            }
            DType::Q5K => {
                bytemuck::cast_slice(&random_blocks::<BlockQ5K>(rows * 3, 7, &[0, 2])).to_vec()
            }
            _ => bytemuck::cast_slice(&random_blocks::<BlockQ6K>(rows * 3, 7, &[208])).to_vec(),
        };
        let m = Matrix::new(dtype, rows, cols, &bytes).unwrap();
        let mut wd = vec![0.0f32; rows * cols];
        dtype.dequantize(&bytes, &mut wd).unwrap();
        for threads in [None, Some(&pool)] {
            let mut y = vec![0.0f32; rows];
            matvec(&m, &x, &mut y, threads).unwrap();
            for r in 0..rows {
                let row = &wd[r * cols..(r + 1) * cols];
                let exact: f64 = row.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = row.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                assert!(
                    (y[r] as f64 - exact).abs() <= MATVEC_Q8K_ACT_REL_TOL * mag,
                    "{dtype} row {r}: {} vs {exact} (scale {mag})",
                    y[r]
                );
            }
        }
        // Prefill (the tiled GEMM where the CPU has one): every token's outputs within a
        // rounding of that token's matvec; with `TokenKernels::PerToken` (decode over several
        // sequences) equal to it bit for bit (the same Q8_K activations, integer sums and f32
        // steps), for token counts a tile leaves over.
        for n in [2usize, 3, 5, 17, 40] {
            let xs = activations(n * cols, 40 + n as u64);
            let mut ys = vec![0.0f32; n * rows];
            floe_kernels::matmul(&m, &xs, &mut ys, n, Some(&pool)).unwrap();
            let mut bufs = floe_kernels::InputBuffers::default();
            bufs.set_kernels(floe_kernels::TokenKernels::PerToken);
            let mut exact = vec![0.0f32; n * rows];
            let mut input = bufs.input(&xs, n, Default::default());
            floe_kernels::matmul_input(&m, &mut input, &mut exact, Some(&pool)).unwrap();
            for t in 0..n {
                let mut y = vec![0.0f32; rows];
                matvec(&m, &xs[t * cols..(t + 1) * cols], &mut y, None).unwrap();
                for r in 0..rows {
                    let row = &wd[r * cols..(r + 1) * cols];
                    let x = &xs[t * cols..(t + 1) * cols];
                    let mag: f64 =
                        row.iter().zip(x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                    let got = ys[t * rows + r] as f64;
                    assert!(
                        (got - y[r] as f64).abs() <= 1e-5 * mag,
                        "{dtype} n={n} token {t} row {r}: matmul {got} vs matvec {}",
                        y[r]
                    );
                    assert_eq!(
                        exact[t * rows + r].to_bits(),
                        y[r].to_bits(),
                        "{dtype} n={n} token {t} row {r}: per-token bits"
                    );
                }
            }
        }
    }
}

#[test]
fn k_quant_rows_must_be_whole_superblocks() {
    let bytes = vec![0u8; 144];
    assert!(Matrix::new(DType::Q4K, 1, 128, &bytes).is_err());
    assert!(Matrix::new(DType::Q4K, 1, 256, &bytes).is_ok());
    assert_eq!(DType::Q6K.row_bytes(512).unwrap(), 420);
    assert_eq!("q5_k".parse::<DType>().unwrap(), DType::Q5K);
}
