//! Bytes of weights streamed per second by matvec in each format, beside a plain memory-read
//! baseline over the same bytes, in the same run (`Throughput::Bytes` = weight bytes).
//!
//! Decode reads every active weight once per token and a big model's weights never stay in
//! cache, so each iteration uses the next of several copies of the matrix (at least 1 GiB in
//! all, beyond the last-level cache) for both the kernels and the baseline. Single thread, and
//! every core (a pool made once). `FLOE_ISA` forces an ISA; `FLOE_BENCH_TYPES` picks types; `FLOE_BENCH_SHAPES=small` skips the
//! 151936x2048 lm_head shape.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe::kernels::quant::{quantize_q4_0, quantize_q8_0, QK};
use floe::kernels::{matmul, matvec, BlockQ4_0, BlockQ8_0, DType, KernelPool, Matrix};
use half::{bf16, f16};

/// Bytes of weight copies cycled through (`FLOE_BENCH_WORKING_SET` overrides, e.g. 1MiB to
/// measure from cache).
fn working_set() -> usize {
    std::env::var("FLOE_BENCH_WORKING_SET")
        .ok()
        .and_then(|s| s.parse::<bytesize::ByteSize>().ok())
        .map(|b| b.as_u64() as usize)
        .unwrap_or(1 << 30)
}

/// A weight row of `cols` values in `dtype`, from a deterministic pseudo-random f32 row.
fn row_bytes(dtype: DType, cols: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let x: Vec<f32> = (0..cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    match dtype {
        DType::F32 => bytemuck::cast_slice(&x).to_vec(),
        DType::F16 => x.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
        DType::Bf16 => x.iter().flat_map(|v| bf16::from_f32(*v).to_le_bytes()).collect(),
        DType::Q8_0 => {
            let mut b = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; cols / QK];
            quantize_q8_0(&x, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        DType::Q4_0 => {
            let mut b = vec![BlockQ4_0 { d: f16::ZERO, qs: [0; QK / 2] }; cols / QK];
            quantize_q4_0(&x, &mut b);
            bytemuck::cast_slice(&b).to_vec()
        }
        k => {
            // Pseudo-random codes, grid indices and packed scales (every bit pattern is a valid
            // block) with small finite f16 scales where the type keeps them.
            let mut out: Vec<u8> = (0..k.row_bytes(cols).unwrap())
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s >> 32) as u8
                })
                .collect();
            if k == DType::Mxfp4 {
                // The exponent byte a real model's weights have (2^-8): a random one is a
                // subnormal or huge scale for some blocks, and the float steps of those take
                // microcode assists that no model file would cause.
                for block in out.chunks_exact_mut(k.block_bytes()) {
                    block[0] = 120;
                }
            } else if !k.set_scales(&mut out, 1e-3, -1e-3) {
                // The K-quants' super-block scales.
                let scale_at: &[usize] = match k {
                    DType::Q6K => &[208],
                    DType::Q3K => &[108],
                    DType::Q2K => &[80, 82],
                    DType::Q4K | DType::Q5K => &[0, 2],
                    _ => &[],
                };
                for block in out.chunks_exact_mut(k.block_bytes()) {
                    for &o in scale_at {
                        block[o..o + 2].copy_from_slice(&f16::from_f32(1e-3).to_le_bytes());
                    }
                }
            }
            out
        }
    }
}

/// The types to measure: `FLOE_BENCH_TYPES` (comma-separated names, as `floe synth --dtype`
/// spells them), or every type floe runs.
fn types() -> Vec<DType> {
    match std::env::var("FLOE_BENCH_TYPES") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().unwrap_or_else(|e| panic!("FLOE_BENCH_TYPES: {e}")))
            .collect(),
        Err(_) => DType::ALL.to_vec(),
    }
}

/// `copies` copies of a rows x cols matrix, back to back in one 64-byte aligned buffer. Rows
/// repeat a few distinct patterns (the values do not matter for speed; denormals are avoided).
fn matrix_copies(dtype: DType, rows: usize, cols: usize, copies: usize) -> (Vec<u64>, usize) {
    let patterns: Vec<Vec<u8>> = (0..7).map(|i| row_bytes(dtype, cols, 11 + i)).collect();
    let rb = patterns[0].len();
    let bytes = rows * rb;
    let mut buf = vec![0u64; (bytes * copies).div_ceil(8) + 8];
    let raw: &mut [u8] = bytemuck::cast_slice_mut(&mut buf);
    for c in 0..copies {
        for r in 0..rows {
            raw[c * bytes + r * rb..][..rb].copy_from_slice(&patterns[(r + c) % patterns.len()]);
        }
    }
    (buf, bytes)
}

fn read_baseline(bytes: &[u8]) -> u64 {
    // Summing u64 lanes vectorises to full-width loads: as fast as memory delivers.
    let words: &[u64] = bytemuck::cast_slice(&bytes[..bytes.len() / 8 * 8]);
    words.iter().fold(0u64, |a, &w| a.wrapping_add(w))
}

fn kernels(c: &mut Criterion) {
    let mut shapes = vec![(2048usize, 768usize), (768, 2048), (4096, 1024)];
    if std::env::var("FLOE_BENCH_SHAPES").as_deref() != Ok("small") {
        shapes.push((151_936, 2048));
    }
    let pool = KernelPool::new(0).expect("pool");
    let all = pool.threads();
    let k = floe::kernels::dot::kernels();
    eprintln!("kernels: ISA {} (type table {}), {} threads", k.isa.name(), k.table_isa.name(), all);
    for &(rows, cols) in &shapes {
        let mut group = c.benchmark_group(format!("kernels/{rows}x{cols}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let x: Vec<f32> = (0..cols).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let mut y = vec![0.0f32; rows];
        for dtype in types() {
            if dtype.row_bytes(cols).is_err() {
                continue;
            }
            let per = rows * dtype.row_bytes(cols).unwrap();
            let copies = working_set().div_ceil(per).max(2);
            let (buf, bytes) = matrix_copies(dtype, rows, cols, copies);
            let raw: &[u8] = bytemuck::cast_slice(&buf);
            let mats: Vec<Matrix> = (0..copies)
                .map(|i| Matrix::new(dtype, rows, cols, &raw[i * bytes..][..bytes]).unwrap())
                .collect();
            group.throughput(Throughput::Bytes(bytes as u64));
            // Q4_0 also interleaved eight rows at a time, where the kernels in use have a kernel
            // for that layout (as resident weights are run there).
            if dtype == DType::Q4_0 && floe::kernels::interleave_q4_0_here() {
                let mut ibuf = buf.clone();
                let iraw: &mut [u8] = bytemuck::cast_slice_mut(&mut ibuf);
                for c in 0..copies {
                    floe::kernels::quant::interleave_q4_0(
                        &mut iraw[c * bytes..][..bytes],
                        rows,
                        cols,
                    )
                    .unwrap();
                }
                let iraw: &[u8] = bytemuck::cast_slice(&ibuf);
                let imats: Vec<Matrix> = (0..copies)
                    .map(|i| {
                        Matrix::new(dtype, rows, cols, &iraw[i * bytes..][..bytes])
                            .and_then(|m| m.interleaved8())
                            .unwrap()
                    })
                    .collect();
                for (label, p) in [("x8_1t", None), ("x8_all", Some(&pool))] {
                    let mut i = 0;
                    group.bench_function(BenchmarkId::new(format!("{dtype}/{label}"), ""), |b| {
                        b.iter(|| {
                            i = (i + 1) % copies;
                            matvec(&imats[i], black_box(&x), &mut y, p).unwrap();
                            black_box(y[0])
                        })
                    });
                }
            }
            for (label, p) in [("1t", None), ("all", Some(&pool))] {
                let mut i = 0;
                group.bench_function(BenchmarkId::new(format!("{dtype}/{label}"), ""), |b| {
                    b.iter(|| {
                        i = (i + 1) % copies;
                        matvec(&mats[i], black_box(&x), &mut y, p).unwrap();
                        black_box(y[0])
                    })
                });
                // The same bytes, plainly read, single thread (the yardstick of the 1t figures).
                if p.is_none() {
                    let mut j = 0;
                    group.bench_function(BenchmarkId::new(format!("{dtype}/memread"), ""), |b| {
                        b.iter(|| {
                            j = (j + 1) % copies;
                            black_box(read_baseline(&raw[j * bytes..][..bytes]))
                        })
                    });
                }
            }
        }
        group.finish();
    }
}

/// Prefill: one matrix against a prompt's worth of tokens (an expert's share of a 512-token
/// prompt), one thread; throughput in multiply-adds. The matrix stays in cache: this measures
/// the tile, not memory.
fn prefill(c: &mut Criterion) {
    const TOKENS: usize = 64;
    let shapes = [(768usize, 1024usize), (1024, 768)];
    for &(rows, cols) in &shapes {
        let mut group = c.benchmark_group(format!("prefill/{rows}x{cols}x{TOKENS}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        let xs: Vec<f32> = (0..cols * TOKENS).map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.01).collect();
        let mut ys = vec![0.0f32; rows * TOKENS];
        group.throughput(Throughput::Elements((rows * cols * TOKENS) as u64));
        for dtype in types() {
            if dtype.row_bytes(cols).is_err() {
                continue;
            }
            let (buf, bytes) = matrix_copies(dtype, rows, cols, 1);
            let raw: &[u8] = bytemuck::cast_slice(&buf);
            let w = Matrix::new(dtype, rows, cols, &raw[..bytes]).unwrap();
            group.bench_function(BenchmarkId::new(format!("{dtype}/1t"), ""), |b| {
                b.iter(|| {
                    matmul(&w, black_box(&xs), &mut ys, TOKENS, None).unwrap();
                    black_box(ys[0])
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, kernels, prefill);
criterion_main!(benches);
