//! Q4_0 matrices interleaved eight rows at a time (how resident weights run where the kernels
//! have an interleaved kernel): every ISA's kernel against the scalar twin bit for bit, and
//! products of interleaved matrices against f64, against the plain layout, across thread counts
//! and token counts.

use floe_kernels::dot::{DotKernels, Isa};
use floe_kernels::quant::{
    dequantize_q4_0, interleave_q4_0, q8_sums, quantize_q4_0, quantize_q8_0_activations,
    rows8_q4_0, rows8x4_q4_0, BlockQ4_0x8, Q8Sum, QK,
};
use floe_kernels::QuantActivations;
use floe_kernels::{matmul, matmul_with, matvec, BlockQ4_0, BlockQ8_0, DType, KernelPool, Matrix};
use half::f16;

/// Q8_0 activations against f64 of the dequantised weights and f32 activations: each
/// activation is off by up to half a step of its block (about 0.4 % of the block's largest
/// value), so the product is off by about that much of sum |w| |x|.
const Q8_ACT_REL_TOL: f64 = 8e-3;

fn vecf(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn q4_bytes(w: &[f32]) -> Vec<u16> {
    let mut b = vec![BlockQ4_0 { d: f16::ZERO, qs: [0; QK / 2] }; w.len() / QK];
    quantize_q4_0(w, &mut b);
    // u16 storage: the blocks' alignment.
    bytemuck::cast_slice::<BlockQ4_0, u16>(&b).to_vec()
}

#[test]
fn every_isas_interleaved_kernel_equals_the_scalar_twin_bit_for_bit() {
    let tables: Vec<DotKernels> = Isa::ALL.into_iter().filter_map(DotKernels::for_isa).collect();
    let with_kernel: Vec<_> = tables.iter().filter(|k| k.q4_0_rows8.is_some()).collect();
    eprintln!(
        "interleaved kernels: {:?}",
        with_kernel.iter().map(|k| k.isa.name()).collect::<Vec<_>>()
    );
    for nb in [1usize, 2, 3, 5, 7, 17, 33, 129] {
        let cols = nb * QK;
        let mut w = q4_bytes(&vecf(8 * cols, nb as u64));
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut w);
        interleave_q4_0(bytes, 8, cols).unwrap();
        let groups: &[BlockQ4_0x8] = bytemuck::cast_slice(bytes);
        let mut x = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; nb];
        let mut xv = vecf(cols, 100 + nb as u64);
        xv[0] = -4.0; // a block whose largest magnitude is negative: values reach -127
        quantize_q8_0_activations(&xv, &mut x);
        let mut sums = vec![Q8Sum::default(); nb];
        q8_sums(&x, &mut sums);
        let start = vecf(8, 7);
        let mut want: [f32; 8] = start.clone().try_into().unwrap();
        rows8_q4_0(groups, &x, &sums, &mut want);
        for k in &with_kernel {
            let mut got: [f32; 8] = start.clone().try_into().unwrap();
            (k.q4_0_rows8.unwrap())(groups, &x, &sums, &mut got);
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{} nb={nb}", k.isa.name());
        }
        // Four tokens at once: each token's bits are its own one-token result.
        let tokens: Vec<(Vec<BlockQ8_0>, Vec<Q8Sum>)> = (0..4)
            .map(|t| {
                let mut q = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; nb];
                quantize_q8_0_activations(&vecf(cols, 200 + 7 * t + nb as u64), &mut q);
                let mut s = vec![Q8Sum::default(); nb];
                q8_sums(&q, &mut s);
                (q, s)
            })
            .collect();
        let xs: [&[BlockQ8_0]; 4] = std::array::from_fn(|t| tokens[t].0.as_slice());
        let ss: [&[Q8Sum]; 4] = std::array::from_fn(|t| tokens[t].1.as_slice());
        let mut want4 = [[0.0f32; 8]; 4];
        rows8x4_q4_0(groups, xs, ss, &mut want4);
        for t in 0..4 {
            let mut one = [0.0f32; 8];
            rows8_q4_0(groups, xs[t], ss[t], &mut one);
            assert_eq!(one.map(f32::to_bits), want4[t].map(f32::to_bits), "scalar x4 nb={nb}");
        }
        for k in tables.iter().filter(|k| k.q4_0_rows8_x4.is_some()) {
            let mut got = [[0.0f32; 8]; 4];
            (k.q4_0_rows8_x4.unwrap())(groups, xs, ss, &mut got);
            assert_eq!(
                got.map(|a| a.map(f32::to_bits)),
                want4.map(|a| a.map(f32::to_bits)),
                "{} x4 nb={nb}",
                k.isa.name()
            );
        }
    }
}

/// An interleaved matrix in every product path: matvec against f64, the same bits with and
/// without pools of 2 and 3 threads, each token of a batch equal to its matvec, and the exact
/// reference mode (f32 activations) equal to the plain matrix's bit for bit.
#[test]
fn interleaved_products_match_f64_and_the_plain_layout() {
    let pools = [KernelPool::new(2).unwrap(), KernelPool::new(3).unwrap()];
    for (rows, cols) in [(1usize, 64usize), (7, 96), (8, 32), (9, 160), (37, 4128), (130, 256)] {
        let wf = vecf(rows * cols, rows as u64 * 31 + cols as u64);
        let plain = q4_bytes(&wf);
        let mut inter = plain.clone();
        interleave_q4_0(bytemuck::cast_slice_mut(&mut inter), rows, cols).unwrap();
        let pm = Matrix::new(DType::Q4_0, rows, cols, bytemuck::cast_slice(&plain)).unwrap();
        let im = Matrix::new(DType::Q4_0, rows, cols, bytemuck::cast_slice(&inter))
            .unwrap()
            .interleaved8()
            .unwrap();
        let mut deq = vec![0.0f32; rows * cols];
        dequantize_q4_0(bytemuck::cast_slice(&plain), &mut deq);
        let x = vecf(cols, 9 + rows as u64);
        let mut alone = vec![0.0f32; rows];
        matvec(&im, &x, &mut alone, None).unwrap();
        for r in 0..rows {
            let terms =
                deq[r * cols..(r + 1) * cols].iter().zip(&x).map(|(w, x)| *w as f64 * *x as f64);
            let (want, scale): (f64, f64) = (terms.clone().sum(), terms.map(f64::abs).sum());
            let got = alone[r] as f64;
            assert!(
                (got - want).abs() <= Q8_ACT_REL_TOL * scale,
                "{rows}x{cols} row {r}: {got} vs {want}"
            );
        }
        for p in &pools {
            let mut pooled = vec![0.0f32; rows];
            matvec(&im, &x, &mut pooled, Some(p)).unwrap();
            assert_eq!(bits(&pooled), bits(&alone), "{rows}x{cols} on {} threads", p.threads());
        }
        // 70 tokens: more than one block of the many-token kernels.
        for n in [2usize, 5, 9, 70] {
            let xs = vecf(n * cols, 50 + n as u64);
            let mut ys = vec![0.0f32; n * rows];
            matmul(&im, &xs, &mut ys, n, Some(&pools[0])).unwrap();
            for t in 0..n {
                let mut one = vec![0.0f32; rows];
                matvec(&im, &xs[t * cols..(t + 1) * cols], &mut one, None).unwrap();
                assert_eq!(
                    bits(&ys[t * rows..(t + 1) * rows]),
                    bits(&one),
                    "{rows}x{cols} n={n} t={t}"
                );
            }
        }
        let (mut a, mut b) = (vec![0.0f32; rows], vec![0.0f32; rows]);
        matmul_with(&im, &x, &mut a, 1, Some(&pools[0]), QuantActivations::F32).unwrap();
        matmul_with(&pm, &x, &mut b, 1, Some(&pools[0]), QuantActivations::F32).unwrap();
        assert_eq!(bits(&a), bits(&b), "{rows}x{cols} exact mode");
    }
    let q8_row = [0u16; 17];
    let q8 = Matrix::new(DType::Q8_0, 1, 32, bytemuck::cast_slice(&q8_row)).unwrap();
    assert!(q8.interleaved8().is_err(), "only Q4_0 has an interleaved layout");
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
