//! Every type the table dispatches: each ISA's dot product against the scalar twin on odd
//! block counts, and the scalar twin against an f64 sum over the dequantised weights and
//! activations; the quantisers' round trips.

use super::*;
use crate::matvec::Prepared;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn normals(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let u = (r() >> 11) as f64 / (1u64 << 53) as f64;
            let v = (r() >> 11) as f64 / (1u64 << 53) as f64;
            ((-2.0 * (u + 1e-12).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Weight bytes for `blocks` blocks of `dtype`: its quantiser on random values where floe has
/// one, else random codes, grid indices and scales, with every f16 scale set finite (as
/// `bench/scripts/make_quant_vectors.py` makes the dequantisation vectors).
fn weights(dtype: DType, blocks: usize, seed: u64) -> Vec<u8> {
    let n = blocks * dtype.block_values();
    if let Some(q) = dtype.quantize(&normals(n, seed)) {
        return q.unwrap();
    }
    let mut r = rng(seed);
    let mut bytes: Vec<u8> = (0..blocks * dtype.block_bytes()).map(|_| r() as u8).collect();
    for b in bytes.chunks_exact_mut(dtype.block_bytes()) {
        let sign = if r().is_multiple_of(2) { 1.0 } else { -1.0 };
        let d = half::f16::from_f32(sign * (0.001 + (r() % 1000) as f32 * 1e-5)).to_bits();
        match dtype {
            DType::Iq1M => {
                for k in 0..4 {
                    let at = 48 + 2 * k;
                    b[at + 1] = (b[at + 1] & 0x0F) | ((((d >> (4 * k)) & 0xF) as u8) << 4);
                }
            }
            DType::Tq1_0 => b[52..54].copy_from_slice(&d.to_le_bytes()),
            DType::Tq2_0 => b[64..66].copy_from_slice(&d.to_le_bytes()),
            DType::Q2K => {
                b[80..82].copy_from_slice(&d.to_le_bytes());
                b[82..84].copy_from_slice(&d.to_le_bytes());
            }
            DType::Q3K => b[108..110].copy_from_slice(&d.to_le_bytes()),
            DType::Q4K | DType::Q5K => {
                b[..2].copy_from_slice(&d.to_le_bytes());
                b[2..4].copy_from_slice(&d.to_le_bytes());
            }
            DType::Q6K => b[208..210].copy_from_slice(&d.to_le_bytes()),
            _ => b[..2].copy_from_slice(&d.to_le_bytes()),
        }
    }
    bytes
}

struct Acts {
    q8: Vec<BlockQ8_0>,
    q8_1: Vec<BlockQ8_1>,
    q8k: Vec<BlockQ8K>,
}

impl Acts {
    fn new(x: &[f32]) -> Self {
        let mut q8 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; x.len() / QK];
        quantize_q8_0_activations(x, &mut q8);
        let mut q8_1 = vec![BlockQ8_1::ZERO; x.len() / QK];
        quantize_q8_1_activations(x, &mut q8_1);
        let mut q8k = vec![BlockQ8K::ZERO; x.len() / QK_K];
        quantize_q8_k(x, &mut q8k);
        Self { q8, q8_1, q8k }
    }

    fn prepared(&self, form: ActForm) -> Prepared<'_> {
        match form {
            ActForm::Q8_0 => Prepared::Q8(&self.q8),
            ActForm::Q8_1 => Prepared::Q8_1(&self.q8_1),
            ActForm::Q8K => Prepared::Q8K(&self.q8k),
            ActForm::F32 => unreachable!("float types have no table dots"),
        }
    }

    /// The activations as the kernels see them, in f64.
    fn values(&self, form: ActForm) -> Vec<f64> {
        match form {
            ActForm::Q8_0 => {
                self.q8.iter().flat_map(|b| b.qs.map(|q| q as f64 * b.d.to_f64())).collect()
            }
            ActForm::Q8_1 => {
                self.q8_1.iter().flat_map(|b| b.qs.map(|q| q as f64 * b.d.to_f64())).collect()
            }
            ActForm::Q8K => {
                self.q8k.iter().flat_map(|b| b.qs.map(|q| q as f64 * b.d as f64)).collect()
            }
            ActForm::F32 => unreachable!(),
        }
    }
}

#[test]
fn table_dots_match_their_scalar_twins_and_f64() {
    let table: Vec<&TypeTraits> = TYPES.iter().filter(|t| t.dots.is_some()).collect();
    assert!(table.len() >= 14, "the legacy, IQ and TQ types are table-dispatched");
    for t in table {
        let dots = t.dots.unwrap();
        // Several draws per length: a kernel that sums its lanes in another order than its
        // scalar twin differs in the last bit only now and then.
        let lengths = [1usize, 2, 3, 5, 7, 9].into_iter().cycle().take(48);
        for (case, blocks) in lengths.enumerate() {
            // 256-value rows for the 32-value types too, so Q8_K exists alongside.
            let n = (blocks * t.block_values).next_multiple_of(QK_K);
            let blocks = n / t.block_values;
            let w = weights(t.dtype, blocks, 7 + case as u64);
            let x = normals(n, 100 + case as u64);
            let acts = Acts::new(&x);
            let prepared = acts.prepared(t.act);
            let scalar = (dots.scalar)(&w, &prepared) as f64;
            let mut wf = vec![0.0f32; n];
            t.dtype.dequantize(&w, &mut wf).unwrap();
            let xv = acts.values(t.act);
            let exact: f64 = wf.iter().zip(&xv).map(|(a, b)| *a as f64 * b).sum();
            let mut mag: f64 = wf.iter().zip(&xv).map(|(a, b)| (*a as f64 * b).abs()).sum();
            if t.act == ActForm::Q8_1 {
                // The minimum meets `s = f16(d * sum q)`, made from the unrounded `d`: allow
                // for both roundings on each block's minimum (at most its largest weight).
                for (wb, ab) in wf.chunks_exact(QK).zip(&acts.q8_1) {
                    let wmax = wb.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
                    mag += wmax * ab.s.to_f64().abs() * 2.0f64.powi(-9) / 1e-5;
                }
            }
            assert!(
                (scalar - exact).abs() <= 1e-5 * mag + 1e-6,
                "{} {blocks} blocks: scalar {scalar} vs f64 {exact}",
                t.name
            );
            // Every ISA keeps the scalar twin's integer lanes and roundings: the same bits.
            for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                let got = (dots.for_isa(isa))(&w, &prepared) as f64;
                assert_eq!(
                    got.to_bits(),
                    scalar.to_bits(),
                    "{} {} {blocks} blocks: {got} vs scalar {scalar}",
                    t.name,
                    isa.name()
                );
                // Many rows at once (pairs, and an odd last row): each row exactly its
                // one-row result.
                if let Some(many) = dots.rows_for_isa(isa) {
                    let w2 = weights(t.dtype, blocks, 1000 + case as u64);
                    let scalar2 = (dots.scalar)(&w2, &prepared) as f64;
                    let (a, b) = (&w[..], &w2[..]);
                    for (rows, want) in [
                        (vec![a, b], vec![scalar, scalar2]),
                        (vec![b, a, b], vec![scalar2, scalar, scalar2]),
                        (vec![a], vec![scalar]),
                    ] {
                        let mut got = vec![0.0f32; rows.len()];
                        many(&rows.concat(), &prepared, &mut got);
                        assert_eq!(
                            got.iter().map(|v| (*v as f64).to_bits()).collect::<Vec<_>>(),
                            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{} {} {} rows, {blocks} blocks",
                            t.name,
                            isa.name(),
                            rows.len()
                        );
                    }
                }
            }
        }
    }
}

/// Prefill's many-token kernels give each token exactly its one-token dot product, on odd
/// super-block and token counts (tails of the eight-token passes, more than one block of
/// tokens), over a range of rows that
/// does not start at the first.
#[test]
fn many_token_kernels_equal_one_token_dots() {
    use crate::gemm::RowsOut;
    use crate::quant::unpacked::UnpackedActs;
    // The super-block types with their dots in this table (the 32-value types read other
    // activations, and Q4_K..Q6_K have dedicated dot fields: `tests/kernels.rs` and
    // `tests/kquant.rs` check theirs).
    let table: Vec<&TypeTraits> = TYPES
        .iter()
        .filter(|t| t.tokens.is_some() && t.dots.is_some() && t.act == ActForm::Q8K)
        .collect();
    assert!(table.len() >= 10, "the grid types, IQ4_XS, Q2_K, Q3_K and TQ have many-token kernels");
    for t in table {
        let (dots, tokens_kernels) = (t.dots.unwrap(), t.tokens.unwrap());
        for (case, (blocks, tokens)) in
            [(1usize, 1usize), (3, 5), (2, 9), (5, 4), (2, 17), (1, 70)].into_iter().enumerate()
        {
            // Three rows with their own weights, so a row mixed up with its neighbour shows.
            let rows: Vec<Vec<u8>> =
                (0..3).map(|r| weights(t.dtype, blocks, 50 + 10 * r + case as u64)).collect();
            let matrix = rows.concat();
            let acts: Vec<Acts> =
                (0..tokens).map(|i| Acts::new(&normals(blocks * QK_K, 70 + i as u64))).collect();
            let q8k: Vec<BlockQ8K> = acts.iter().flat_map(|a| a.q8k.iter().copied()).collect();
            for isa in Isa::ALL.into_iter().filter(|i| i.supported()) {
                // The minima and stored-offset types have AVX2 kernels only.
                // Each kernel, also one that gives way to the AVX-512 column where that runs.
                let Some((kernel, offset)) = tokens_kernels.for_isa(isa, Isa::Avx2) else {
                    continue;
                };
                let mut laid = UnpackedActs::default();
                laid.fill_q8k(&q8k, blocks, offset);
                let mut out = vec![f32::NAN; tokens * 3];
                // Rows 1 and 2 only: row 0 must stay untouched.
                kernel(&matrix, 1, 2, &laid, blocks, &RowsOut::new(&mut out, 3));
                for (i, a) in acts.iter().enumerate() {
                    assert!(out[3 * i].is_nan(), "{}: row 0 written", t.name);
                    for r in 1..3 {
                        let got = out[3 * i + r];
                        let one = (dots.for_isa(isa))(&rows[r], &Prepared::Q8K(&a.q8k));
                        assert_eq!(
                            got.to_bits(),
                            one.to_bits(),
                            "{} {} {blocks} blocks, row {r}, token {i} of {tokens}: {got} vs {one}",
                            t.name,
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn quantisers_round_trip_within_half_a_step() {
    for d in [DType::Q4_1, DType::Q5_0, DType::Q5_1] {
        let x = normals(QK * 64, 3);
        let q = d.quantize(&x).unwrap().unwrap();
        let mut y = vec![0.0f32; x.len()];
        d.dequantize(&q, &mut y).unwrap();
        let levels = match d {
            DType::Q4_1 => 15.0,
            DType::Q5_1 => 31.0,
            _ => 16.0,
        };
        for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact(QK)) {
            let lo = xb.iter().cloned().fold(f32::MAX, f32::min);
            let hi = xb.iter().cloned().fold(f32::MIN, f32::max);
            let amax = lo.abs().max(hi.abs());
            let step = if d == DType::Q5_0 { amax / levels } else { (hi - lo) / levels };
            for (a, b) in xb.iter().zip(yb) {
                // Half a step, plus the f16 rounding of scale and minimum; Q5_0 maps the
                // largest magnitude to -16 and clamps the other side at +15: a whole step.
                let bound = if d == DType::Q5_0 { step } else { 0.5 * step };
                assert!((a - b).abs() <= bound + 2e-3 * amax, "{d}: {a} -> {b}");
            }
        }
    }
}

#[test]
fn every_row_is_in_dtype_order_and_named_both_ways() {
    for d in DType::ALL {
        assert_eq!(d.traits().dtype, d);
        assert_eq!(d.name().parse::<DType>().unwrap(), d);
        assert_eq!(DType::from_ggml_id(d.ggml_id()), Some(d));
    }
    assert!("iq9_zz".parse::<DType>().is_err());
}

/// Every type with a GEMM tile, through `matmul` (the tiles where this CPU runs them) against
/// each token's `matvec`, on odd row, block and token counts: the super-block tiles bit for bit,
/// the others (Q8_0-pair and float tiles, whose sums run in another order) within a rounding of
/// the products' magnitude.
#[test]
fn tiles_equal_matvec_per_token() {
    let pool = crate::KernelPool::new(2).unwrap();
    let tiled: Vec<&TypeTraits> = TYPES.iter().filter(|t| t.tile.is_some()).collect();
    #[cfg(target_arch = "x86_64")]
    for d in [D::Iq2Xxs, D::Iq3Xxs, D::Iq4Xs, D::Q5_0, D::Q4K, D::Q8_0] {
        assert!(tiled.iter().any(|t| t.dtype == d), "{d} has a tile");
    }
    for t in tiled {
        let exact = t.tile.is_some_and(Tile::exact);
        let blocks = if t.block_values >= QK_K { 3 } else { 7 };
        let (rows, cols) = (9, blocks * t.block_values.max(32));
        let w: Vec<u8> = match t.dtype {
            D::F32 => normals(rows * cols, 91).iter().flat_map(|v| v.to_le_bytes()).collect(),
            D::F16 => normals(rows * cols, 91)
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
            D::Bf16 => normals(rows * cols, 91)
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => weights(t.dtype, rows * cols / t.block_values, 91),
        };
        let m = crate::Matrix::new(t.dtype, rows, cols, &w).unwrap();
        let mut wd = vec![0.0f32; rows * cols];
        t.dtype.dequantize(&w, &mut wd).unwrap();
        for n in [2usize, 3, 5, 17] {
            let xs = normals(n * cols, 17 + n as u64);
            let mut ys = vec![f32::NAN; n * rows];
            crate::matmul(&m, &xs, &mut ys, n, Some(&pool)).unwrap();
            // Per token (decode over several sequences): the exact tile or the row kernels.
            let mut bufs = crate::InputBuffers::default();
            bufs.set_kernels(crate::TokenKernels::PerToken);
            let mut per_token = vec![f32::NAN; n * rows];
            let mut input = bufs.input(&xs, n, Default::default());
            crate::matmul_input(&m, &mut input, &mut per_token, Some(&pool)).unwrap();
            // Prompt rows (`Tiles`): each token's outputs are the ones it gets alone.
            let tiles = |xs: &[f32], n: usize| {
                let mut out = vec![f32::NAN; n * rows];
                let mut bufs = crate::InputBuffers::default();
                bufs.set_kernels(crate::TokenKernels::Tiles);
                let mut input = bufs.input(xs, n, Default::default());
                crate::matmul_input(&m, &mut input, &mut out, Some(&pool)).unwrap();
                out
            };
            let all = tiles(&xs, n);
            for tok in 0..n {
                let x = &xs[tok * cols..(tok + 1) * cols];
                let one = tiles(x, 1);
                let company = &all[tok * rows..(tok + 1) * rows];
                for (a, b) in company.iter().zip(&one) {
                    assert_eq!(a.to_bits(), b.to_bits(), "{} n={n} token {tok}: company", t.name);
                }
                let mut y = vec![f32::NAN; rows];
                crate::matvec(&m, x, &mut y, None).unwrap();
                for r in 0..rows {
                    let got = ys[tok * rows + r];
                    let row = &wd[r * cols..(r + 1) * cols];
                    let mag: f64 =
                        row.iter().zip(x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                    if t.act != ActForm::F32 && t.dtype != D::Q4_0 && t.dtype != D::Q8_0 {
                        // Their row kernels (and exact tiles) equal matvec bit for bit.
                        let p = per_token[tok * rows + r];
                        assert_eq!(
                            p.to_bits(),
                            y[r].to_bits(),
                            "{} per token: {p} vs {}",
                            t.name,
                            y[r]
                        );
                    }
                    if exact {
                        assert_eq!(
                            got.to_bits(),
                            y[r].to_bits(),
                            "{} n={n} token {tok} row {r}: {got} vs {}",
                            t.name,
                            y[r]
                        );
                    } else {
                        assert!(
                            (got as f64 - y[r] as f64).abs() <= 1e-5 * mag,
                            "{} n={n} token {tok} row {r}: {got} vs {} (scale {mag})",
                            t.name,
                            y[r]
                        );
                    }
                }
            }
        }
    }
}
