//! Prefill products of one weight matrix with a chunk of tokens, per format: milliseconds and
//! multiply-adds per second, 2 threads. Run it twice to see what the GEMM tiles buy:
//! `cargo run --release -p floe-bench --example prefill_gemm` (tiles where the CPU has AVX-512)
//! and the same with `FLOE_ISA=avx2` (no tiles: the four-row kernels over every token).

use floe_kernels::{matmul, DType, KernelPool, Matrix};

fn main() {
    let (rows, cols, n) = (2048usize, 2048usize, 64usize);
    let pool = KernelPool::new(2).expect("a pool");
    let mut state = 12345u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // (format, block bytes, offsets of its f16 scales): random codes, small finite scales.
    let formats: [(DType, usize, &[usize]); 20] = [
        (DType::Q4_0, 18, &[0]),
        (DType::Q8_0, 34, &[0]),
        (DType::Q4_1, 20, &[0, 2]),
        (DType::Q5_0, 22, &[0]),
        (DType::Q5_1, 24, &[0, 2]),
        (DType::Q3K, 110, &[108]),
        (DType::Q4K, 144, &[0, 2]),
        (DType::Q5K, 176, &[0, 2]),
        (DType::Q6K, 210, &[208]),
        (DType::Iq2Xxs, 66, &[0]),
        (DType::Iq2Xs, 74, &[0]),
        (DType::Iq2S, 82, &[0]),
        (DType::Iq3Xxs, 98, &[0]),
        (DType::Iq3S, 110, &[0]),
        (DType::Iq4Xs, 136, &[0]),
        (DType::Q2K, 84, &[80, 82]),
        (DType::Iq1S, 50, &[0]),
        // IQ1_M's f16 is the top nibbles of its four scale words (set below).
        (DType::Iq1M, 56, &[]),
        (DType::Tq1_0, 54, &[52]),
        (DType::Tq2_0, 66, &[64]),
    ];
    // FLOE_BENCH_TYPES=q5_0,iq2_xxs picks formats by name.
    let only = std::env::var("FLOE_BENCH_TYPES").ok();
    for (dtype, block, scales) in formats {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|n| n.trim() == dtype.name())) {
            continue;
        }
        let len = rows * dtype.row_bytes(cols).expect("a valid shape");
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for b in bytes.chunks_exact_mut(block) {
            let d = half::f16::from_f32(0.01);
            for &o in scales {
                b[o..o + 2].copy_from_slice(&d.to_le_bytes());
            }
            if dtype == DType::Iq1M {
                for k in 0..4 {
                    let nibble = ((d.to_bits() >> (4 * k)) & 0xF) as u8;
                    b[49 + 2 * k] = (b[49 + 2 * k] & 0x0F) | (nibble << 4);
                }
            }
        }
        let m = Matrix::new(dtype, rows, cols, &bytes).expect("a matrix");
        let xs: Vec<f32> = (0..n * cols).map(|_| (next() % 1000) as f32 / 500.0 - 1.0).collect();
        let mut ys = vec![0.0; n * rows];
        matmul(&m, &xs, &mut ys, n, Some(&pool)).expect("shapes match");
        let reps = 10;
        let start = std::time::Instant::now();
        for _ in 0..reps {
            matmul(&m, &xs, &mut ys, n, Some(&pool)).expect("shapes match");
        }
        let s = start.elapsed().as_secs_f64() / reps as f64;
        println!(
            "{dtype} {rows}x{cols}, {n} tokens: {:.2} ms, {:.1} G multiply-adds/s",
            s * 1e3,
            (rows * cols * n) as f64 / s / 1e9
        );
    }
}
