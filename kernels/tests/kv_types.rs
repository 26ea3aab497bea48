//! KV cache types: the rotation is orthogonal, the TurboQuant codebooks are the Lloyd-Max
//! quantisers of the rotated coordinate's law (checked by an independent fit on sampled
//! vectors, and against the Gaussian's known levels), each SIMD kernel equals its scalar twin,
//! round trips stay within each type's error, and attention over K and V of different types
//! and over MLA's two-part rows matches an f64 softmax over what the cache holds.

mod common;

use common::rng;
use floe_kernels::dot::Isa;
use floe_kernels::kv::codebook::{codebook, lloyd_max};
use floe_kernels::kv::rotation::{block_for, padded, rotate, unrotate};
use floe_kernels::kv::{scalar_q4_0_axpy, scalar_q8_0_axpy, tq, KvKernels};
use floe_kernels::ops::{self, AttentionShape, KvDType, KvFormat, KvPart, KvView};
use floe_kernels::quant::{quantize_q4_0, quantize_q8_0};
use floe_kernels::{BlockQ4_0, BlockQ8_0, KernelPool};
use half::f16;

/// Standard normal samples (Box-Muller).
fn gauss(seed: u64) -> impl FnMut() -> f32 {
    let mut u = rng(seed);
    move || {
        let (a, b) = (((u() + 1.0) / 2.0).max(1e-7) as f64, ((u() + 1.0) / 2.0) as f64);
        ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
    }
}

#[test]
fn rotation_is_orthogonal_and_inverts() {
    for p in [32usize, 64, 96, 128, 192, 576, 1024] {
        let b = block_for(p);
        assert!(b.is_power_of_two() && p.is_multiple_of(b) && (32..=128).contains(&b), "{p}: {b}");
        // Columns of the rotation: rotate each basis vector; R R^T must be the identity.
        let cols: Vec<Vec<f32>> = (0..p)
            .map(|i| {
                let mut e = vec![0.0f32; p];
                e[i] = 1.0;
                rotate(&mut e);
                e
            })
            .collect();
        for i in (0..p).step_by(7) {
            for j in (0..p).step_by(5) {
                let d: f64 = cols[i].iter().zip(&cols[j]).map(|(a, b)| *a as f64 * *b as f64).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-5, "{p}: <R e{i}, R e{j}> = {d}");
            }
        }
        let mut r = rng(p as u64);
        let x: Vec<f32> = (0..p).map(|_| r()).collect();
        let mut y = x.clone();
        rotate(&mut y);
        unrotate(&mut y);
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-5), "{p}: unrotate(rotate(x))");
    }
    assert_eq!((padded(80), padded(64), padded(576)), (96, 64, 576));
}

/// Lloyd's algorithm on sampled coordinates of random unit vectors (scaled by sqrt(B)): an
/// independent fit the computed codebook must match.
fn sampled_lloyd(block: usize, bits: u32) -> Vec<f64> {
    let mut g = gauss(block as u64 * 31 + bits as u64);
    let mut z = Vec::new();
    for _ in 0..(1 << 17) / block {
        let v: Vec<f64> = (0..block).map(|_| g() as f64).collect();
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        z.extend(v.iter().map(|x| (x / n * (block as f64).sqrt()).abs()));
    }
    z.sort_by(f64::total_cmp);
    let half = 1usize << (bits - 1);
    // Start from quantiles (not from the codebook under test).
    let mut m: Vec<f64> = (0..half).map(|k| z[(2 * k + 1) * z.len() / (2 * half)]).collect();
    for _ in 0..200 {
        let (mut sum, mut cnt) = (vec![0.0; half], vec![0usize; half]);
        // The samples ascend, so each one's cell is the previous one's or a later one.
        let mut c = 0;
        for &x in &z {
            while c + 1 < half && x > (m[c] + m[c + 1]) / 2.0 {
                c += 1;
            }
            sum[c] += x;
            cnt[c] += 1;
        }
        for k in 0..half {
            m[k] = sum[k] / cnt[k].max(1) as f64;
        }
    }
    m
}

#[test]
fn codebooks_are_lloyd_max_fits() {
    for block in [32usize, 64, 128] {
        for bits in [2u32, 3, 4] {
            let book = codebook(block, bits);
            let fit = sampled_lloyd(block, bits);
            assert_eq!(book.len, fit.len());
            for (k, (a, b)) in book.mags.iter().zip(&fit).enumerate() {
                let tol = 0.02 * b.max(0.3);
                assert!(
                    (*a as f64 - b).abs() < tol,
                    "B{block} {bits} bits level {k}: {a} vs sampled {b}"
                );
            }
        }
    }
    // As the block grows the law tends to the standard normal, whose Lloyd-Max levels are known
    // (Max, 1960): the grid fit at a large block must land on them.
    let gauss_levels: [(u32, &[f64]); 3] = [
        (2, &[0.4528, 1.5104]),
        (3, &[0.2451, 0.7560, 1.3440, 2.1520]),
        (4, &[0.1284, 0.3881, 0.6568, 0.9424, 1.2562, 1.6180, 2.0690, 2.7326]),
    ];
    for (bits, want) in gauss_levels {
        let got = lloyd_max(1 << 16, bits);
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 2e-3, "{bits} bits: {a} vs the normal's {b}");
        }
    }
}

#[test]
fn kv_kernels_match_their_scalar_twins() {
    let scalar = KvKernels::for_isa(Isa::Scalar).unwrap();
    let all: Vec<KvKernels> = Isa::ALL.into_iter().filter_map(KvKernels::for_isa).collect();
    eprintln!("testing ISAs: {:?}", all.iter().map(|k| k.isa.name()).collect::<Vec<_>>());
    for k in &all {
        // Padded widths with odd numbers of rotation blocks, and each block size.
        for p in [32usize, 96, 160, 64, 192, 128, 384] {
            let block = block_for(p);
            for bits in [2u32, 3, 4] {
                let book = codebook(block, bits);
                let mut r = rng(p as u64 * 10 + bits as u64);
                let x: Vec<f32> = (0..p).map(|_| r()).collect();
                let q: Vec<f32> = (0..p).map(|_| r()).collect();
                let mut bytes = vec![0u8; p / block * tq::block_bytes(block, bits)];
                tq::quantize(&x, bits, block, book, &mut bytes);
                let (a, b) = (
                    (scalar.tq_dot)(&bytes, bits, block, book, &q),
                    (k.tq_dot)(&bytes, bits, block, book, &q),
                );
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
                    "{:?} dot {p} {bits}: {a} vs {b}",
                    k.isa
                );
                let (mut ya, mut yb) = (q.clone(), q.clone());
                (scalar.tq_axpy)(0.7, &bytes, bits, block, book, &mut ya);
                (k.tq_axpy)(0.7, &bytes, bits, block, book, &mut yb);
                assert!(
                    ya.iter().zip(&yb).all(|(a, b)| (a - b).abs() < 1e-5),
                    "{:?} axpy {p} {bits}",
                    k.isa
                );
                // The dot is the dequantised vector's dot.
                let mut deq = vec![0.0f32; p];
                tq::dequantize(&bytes, bits, block, book, &mut deq);
                let want: f64 = deq.iter().zip(&q).map(|(a, b)| *a as f64 * *b as f64).sum();
                assert!((a as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "dot vs dequantised");
            }
            let mut r = rng(p as u64);
            let x: Vec<f32> = (0..p).map(|_| r()).collect();
            let mut q8 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; p / 32];
            let mut q4 = vec![BlockQ4_0 { d: f16::ZERO, qs: [0; 16] }; p / 32];
            quantize_q8_0(&x, &mut q8);
            quantize_q4_0(&x, &mut q4);
            let (mut a8, mut b8, mut a4, mut b4) = (x.clone(), x.clone(), x.clone(), x.clone());
            scalar_q8_0_axpy(-1.3, &q8, &mut a8);
            (k.q8_0_axpy)(-1.3, &q8, &mut b8);
            scalar_q4_0_axpy(-1.3, &q4, &mut a4);
            (k.q4_0_axpy)(-1.3, &q4, &mut b4);
            assert!(
                a8.iter().zip(&b8).all(|(a, b)| (a - b).abs() < 1e-5),
                "{:?} q8_0 axpy {p}",
                k.isa
            );
            assert!(
                a4.iter().zip(&b4).all(|(a, b)| (a - b).abs() < 1e-5),
                "{:?} q4_0 axpy {p}",
                k.isa
            );
        }
    }
}

/// Relative MSE of a round trip through each type on Gaussian heads: within the quantiser's
/// theory (Lloyd-Max MSE of the normal at 2/3/4 bits: 0.1175, 0.03454, 0.009497; Q4_0 and Q8_0
/// by their step), and exact for f32.
#[test]
fn round_trips_stay_within_each_types_error() {
    let mut g = gauss(5);
    for dim in [64usize, 80, 128, 576] {
        let x: Vec<f32> = (0..dim * 64).map(|_| g()).collect();
        for (t, bound) in [
            (KvDType::F32, 0.0),
            (KvDType::F16, 1e-6),
            (KvDType::Q8_0, 1e-4),
            (KvDType::Q4_0, 0.012),
            (KvDType::Tq4, 0.009497 * 1.1),
            (KvDType::Tq3, 0.03454 * 1.1),
            (KvDType::Tq2, 0.1175 * 1.1),
        ] {
            let mut bytes = vec![0u8; t.head_bytes(dim).unwrap()];
            let (mut num, mut den) = (0.0f64, 0.0f64);
            let mut back = vec![0.0f32; dim];
            for h in x.chunks_exact(dim) {
                t.store(h, &mut bytes);
                t.load(&bytes, &mut back);
                num +=
                    h.iter().zip(&back).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>();
                den += h.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
            }
            let rel = num / den;
            assert!(rel <= bound, "{t:?} at {dim}: relative MSE {rel} above {bound}");
        }
    }
}

/// f64 causal attention of `q` over rows read back from a cache: the reference.
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    heads: usize,
    kv_heads: usize,
    kd: usize,
    vd: usize,
    scale: f32,
    first: usize,
    n: usize,
) -> Vec<f64> {
    let mut out = vec![0.0f64; n * heads * vd];
    for t in 0..n {
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            let len = first + t + 1;
            let sc: Vec<f64> = (0..len)
                .map(|p| {
                    (0..kd)
                        .map(|i| {
                            q[(t * heads + h) * kd + i] as f64
                                * k[(p * kv_heads + kvh) * kd + i] as f64
                        })
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for i in 0..vd {
                out[(t * heads + h) * vd + i] = (0..len)
                    .map(|p| (sc[p] - m).exp() / z * v[(p * kv_heads + kvh) * vd + i] as f64)
                    .sum();
            }
        }
    }
    out
}

/// Keys and values of different types (K sensitive, V not), with and without a pool, bit for
/// bit the same either way, and against the f64 reference over what the caches hold.
#[test]
fn attention_over_keys_and_values_of_different_types() {
    let pool = KernelPool::new(2).unwrap();
    let (heads, kv_heads, first, n) = (4usize, 2usize, ops::KEY_TILE + 11, 3usize);
    for (kt, vt, d) in [
        (KvDType::F16, KvDType::Tq3, 64usize),
        (KvDType::Tq4, KvDType::Q4_0, 96),
        (KvDType::Tq3, KvDType::F32, 80),
        (KvDType::Tq2, KvDType::Tq4, 128),
        (KvDType::F32, KvDType::Q8_0, 112),
    ] {
        let positions = first + n;
        let (kf, vf) = (KvFormat::one(kt, d).unwrap(), KvFormat::one(vt, d).unwrap());
        let mut r = rng(d as u64);
        let kx: Vec<f32> = (0..positions * kv_heads * d).map(|_| r()).collect();
        let vx: Vec<f32> = (0..positions * kv_heads * d).map(|_| r()).collect();
        let q: Vec<f32> = (0..n * heads * d).map(|_| 2.0 * r()).collect();
        let (mut kb, mut vb) =
            (vec![0u8; kx.len() / d * kf.bytes()], vec![0u8; vx.len() / d * vf.bytes()]);
        let (mut kback, mut vback) = (vec![0.0f32; kx.len()], vec![0.0f32; vx.len()]);
        for (i, h) in kx.chunks_exact(d).enumerate() {
            kf.store(h, &mut kb[i * kf.bytes()..][..kf.bytes()]);
            kf.load(&kb[i * kf.bytes()..][..kf.bytes()], &mut kback[i * d..][..d]);
        }
        for (i, h) in vx.chunks_exact(d).enumerate() {
            vf.store(h, &mut vb[i * vf.bytes()..][..vf.bytes()]);
            vf.load(&vb[i * vf.bytes()..][..vf.bytes()], &mut vback[i * d..][..d]);
        }
        let kv = KvView {
            k_format: kf,
            v_format: vf,
            k: &kb,
            v: &vb,
            k_stride: kf.bytes(),
            v_stride: vf.bytes(),
        };
        let shape = AttentionShape { heads, kv_heads, head_dim: d, scale: 0.3, window: None };
        let (mut out, mut pooled) = (vec![0.0f32; q.len()], vec![0.0f32; q.len()]);
        ops::attention(shape, &q, kv, first, n, &mut out, None, None);
        ops::attention(shape, &q, kv, first, n, &mut pooled, None, Some(&pool));
        assert!(
            out.iter().zip(&pooled).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{kt:?}/{vt:?}: pool"
        );
        let want = reference(&q, &kback, &vback, heads, kv_heads, d, d, 0.3, first, n);
        let tol = 1e-4;
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!((*g as f64 - w).abs() < tol, "{kt:?}/{vt:?} d{d} [{i}]: {g} vs {w}");
        }
    }
}

/// MLA's shared rows: a latent part and a RoPE key part of their own types, scored as one key,
/// the latent part summed as the value.
#[test]
fn attention_over_two_part_mla_rows() {
    let (heads, latent, rope, first, n) = (3usize, 512usize, 64usize, 40usize, 2usize);
    for (lt, rt) in
        [(KvDType::Tq3, KvDType::F16), (KvDType::Q8_0, KvDType::Q4_0), (KvDType::F32, KvDType::Tq4)]
    {
        let f = KvFormat::two(KvPart { dtype: lt, dim: latent }, KvPart { dtype: rt, dim: rope })
            .unwrap();
        let row = latent + rope;
        let positions = first + n;
        let mut r = rng(7);
        let x: Vec<f32> = (0..positions * row).map(|_| r()).collect();
        let q: Vec<f32> = (0..n * heads * row).map(|_| r()).collect();
        let mut bytes = vec![0u8; positions * f.bytes()];
        let mut back = vec![0.0f32; x.len()];
        for (i, h) in x.chunks_exact(row).enumerate() {
            f.store(h, &mut bytes[i * f.bytes()..][..f.bytes()]);
            f.load(&bytes[i * f.bytes()..][..f.bytes()], &mut back[i * row..][..row]);
        }
        let values: Vec<f32> = back.chunks_exact(row).flat_map(|h| h[..latent].to_vec()).collect();
        let kv = KvView {
            k_format: f,
            v_format: f.first(),
            k: &bytes,
            v: &bytes,
            k_stride: f.bytes(),
            v_stride: f.bytes(),
        };
        let shape = AttentionShape { heads, kv_heads: 1, head_dim: row, scale: 0.05, window: None };
        let mut out = vec![0.0f32; n * heads * latent];
        ops::attention(shape, &q, kv, first, n, &mut out, None, None);
        let want = reference(&q, &back, &values, heads, 1, row, latent, 0.05, first, n);
        let tol = 1e-4;
        for (i, (g, w)) in out.iter().zip(&want).enumerate() {
            assert!((*g as f64 - w).abs() < tol, "{lt:?}+{rt:?} [{i}]: {g} vs {w}");
        }
    }
    assert!(KvFormat::two(
        KvPart { dtype: KvDType::F32, dim: 1000 },
        KvPart { dtype: KvDType::F32, dim: 64 }
    )
    .is_none());
}
