//! AVX-512 (F, BW) GEMM tiles for the K-quants (Q4_K, Q5_K, Q6_K) against Q8_K activations,
//! with llama.cpp's integer arithmetic: per super-block, the codes (unsigned) times the
//! activations summed in pairs (`vpmaddubsw`), times the sub-block scales (`vpmaddwd`), summed
//! exactly in i32; then one scale product per super-block, and the mins (or Q6_K's -32 offset)
//! from the activations' 16-value sums. A chunk's rows are unpacked once into [`KRow`]s (codes in
//! value order, scales per value pair) and read by every token tile.
//!
//! The i32 lanes are folded to the eight lanes the AVX2 dot products (`dot/avx2_k.rs`) hold before
//! anything is rounded, and every float step is theirs in their order, so a token's prefill
//! outputs equal its decode outputs bit for bit: the K-quant results stay those that match
//! llama.cpp (the golden `k_quant_gguf_matches_llama_cpp`).

use std::arch::x86_64::*;

use super::RowsOut;
use crate::quant::{codes_q6_k, scales_mins_k4, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};

/// Tokens per K-quant tile (two: the i32 sums of a super-block and the f32 accumulators of
/// every output must fit the 32 registers).
const K_TILE_TOKENS: usize = 2;
/// Rows per K-quant tile.
const K_TILE_ROWS: usize = 4;

/// One super-block of one weight row, unpacked.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct KRow {
    /// The 256 codes, unsigned, in value order.
    q: [u8; QK_K],
    /// The scale of each pair of values (their sub-block's).
    sc: [i16; QK_K / 2],
    /// Per 16 values: what multiplies the activations' sum (Q4_K/Q5_K: the sub-block min, a
    /// separate f32 term; Q6_K: the scale, whose products x 32 are the offset of its codes,
    /// subtracted in the i32 lanes).
    mm: [i16; 16],
    /// Scale of the code products.
    d: f32,
    /// Scale of the mins (Q4_K/Q5_K).
    dm: f32,
}

const _: () = assert!(std::mem::size_of::<KRow>() == 576);

impl KRow {
    pub(crate) const ZERO: KRow =
        KRow { q: [0; QK_K], sc: [0; QK_K / 2], mm: [0; 16], d: 0.0, dm: 0.0 };

    /// The codes, unsigned, in value order.
    pub(crate) fn codes(&self) -> &[u8; QK_K] {
        &self.q
    }
    /// The scale of each value pair.
    pub(crate) fn pair_scales(&self) -> &[i16; QK_K / 2] {
        &self.sc
    }
    /// Per 16 values, what multiplies the activations' sum (see the field).
    pub(crate) fn sum_factors(&self) -> &[i16; 16] {
        &self.mm
    }
    /// The scale of the code products and of the minima.
    pub(crate) fn scales(&self) -> (f32, f32) {
        (self.d, self.dm)
    }
}

/// A K-quant block format the tiles can read.
pub(crate) trait KBlock: Copy {
    /// Q6_K: the codes' offset is subtracted in the i32 lanes (else: mins as an f32 term).
    const OFFSET: bool = false;
    fn unpack(&self, out: &mut KRow);
}

/// Q4_K and Q5_K: codes from the nibbles (and Q5_K's high bits), 8 sub-blocks of 32.
fn unpack_k4(
    d: half::f16,
    dmin: half::f16,
    scales: &[u8; 12],
    qs: &[u8; 128],
    qh: Option<&[u8; 32]>,
    out: &mut KRow,
) {
    let (sc, m) = scales_mins_k4(scales);
    for c in 0..4 {
        for l in 0..32 {
            let high = |bit: usize| qh.map_or(0, |h| ((h[l] >> bit) & 1) << 4);
            out.q[64 * c + l] = (qs[32 * c + l] & 0xF) | high(2 * c);
            out.q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) | high(2 * c + 1);
        }
    }
    for (p, s) in out.sc.iter_mut().enumerate() {
        *s = sc[2 * p / 32] as i16;
    }
    for (g, mm) in out.mm.iter_mut().enumerate() {
        *mm = m[g / 2] as i16;
    }
    (out.d, out.dm) = (d.to_f32(), dmin.to_f32());
}

impl KBlock for BlockQ4K {
    fn unpack(&self, out: &mut KRow) {
        unpack_k4(self.d, self.dmin, &self.scales, &self.qs, None, out)
    }
}

impl KBlock for BlockQ5K {
    fn unpack(&self, out: &mut KRow) {
        unpack_k4(self.d, self.dmin, &self.scales, &self.qs, Some(&self.qh), out)
    }
}

impl KBlock for BlockQ6K {
    const OFFSET: bool = true;
    fn unpack(&self, out: &mut KRow) {
        out.q = codes_q6_k(self);
        for (p, s) in out.sc.iter_mut().enumerate() {
            *s = self.scales[2 * p / 16] as i16;
        }
        for (g, mm) in out.mm.iter_mut().enumerate() {
            *mm = self.scales[g] as i16;
        }
        let d = self.d.to_f32();
        (out.d, out.dm) = (d, d);
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
fn k_tile<const OFFSET: bool, const RM: usize, const RN: usize>(
    rows: [&[KRow]; RM],
    xs: [&[BlockQ8K]; RN],
) -> [[f32; RN]; RM] {
    let blocks = xs[0].len();
    let mut acc = [[_mm256_setzero_ps(); RN]; RM];
    let mut mins = [[0.0f32; RN]; RM];
    for s in 0..blocks {
        let mut isum = [[_mm512_setzero_si512(); RN]; RM];
        for c in 0..4 {
            let mut q = [_mm512_setzero_si512(); RM];
            let mut sc = [_mm512_setzero_si512(); RM];
            for r in 0..RM {
                let w = &rows[r][s];
                // SAFETY: q holds 256 bytes and sc 128 i16: 64-byte loads at 64c and 32c stay
                // inside them.
                unsafe {
                    q[r] = _mm512_loadu_si512(w.q.as_ptr().add(64 * c) as *const _);
                    sc[r] = _mm512_loadu_si512(w.sc.as_ptr().add(32 * c) as *const _);
                }
            }
            for t in 0..RN {
                // SAFETY: qs holds 256 bytes: a 64-byte load at 64c stays inside.
                let qx =
                    unsafe { _mm512_loadu_si512(xs[t][s].qs.as_ptr().add(64 * c) as *const _) };
                for r in 0..RM {
                    // u8 codes x i8 activations, adjacent pairs summed in i16 (at most
                    // 2 x 63 x 127: no saturation), then times the pair's scale into i32.
                    let p16 = _mm512_maddubs_epi16(q[r], qx);
                    isum[r][t] = _mm512_add_epi32(isum[r][t], _mm512_madd_epi16(p16, sc[r]));
                }
            }
        }
        for r in 0..RM {
            let w = &rows[r][s];
            // SAFETY: mm is 16 i16 (32 bytes).
            let mm = unsafe { _mm256_loadu_si256(w.mm.as_ptr() as *const __m256i) };
            for t in 0..RN {
                let x = &xs[t][s];
                // Lane k of the AVX2 kernels holds values 4k..4k+3 of every 32: this register's
                // lanes k and k + 8.
                let v = isum[r][t];
                let mut sumi =
                    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v));
                // SAFETY: bsums is 16 i16 (32 bytes).
                let bs = unsafe { _mm256_loadu_si256(x.bsums.as_ptr() as *const __m256i) };
                let prod = _mm256_madd_epi16(mm, bs);
                if OFFSET {
                    sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32::<5>(prod));
                } else {
                    mins[r][t] += w.dm * x.d * crate::dot::avx2_k::hsum_i32(prod) as f32;
                }
                let d = _mm256_set1_ps(w.d * x.d);
                acc[r][t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc[r][t]);
            }
        }
    }
    let mut out = [[0.0; RN]; RM];
    for r in 0..RM {
        for t in 0..RN {
            out[r][t] = crate::dot::avx2::hsum(acc[r][t]) - mins[r][t];
        }
    }
    out
}

/// Rows `first..first + m` of a K-quant matrix (`per_row` super-blocks each) against every
/// token of `xs` (`n` tokens of `per_row` Q8_K blocks), into `out`.
pub(crate) fn k_rows<B: KBlock>(
    w: &[B],
    first: usize,
    m: usize,
    xs: &[BlockQ8K],
    per_row: usize,
    out: &RowsOut,
) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<KRow>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let n = xs.len() / per_row.max(1);
    ROWS.with_borrow_mut(|unpacked| {
        unpacked.clear();
        unpacked.resize(m * per_row, KRow::ZERO);
        for (src, dst) in w[first * per_row..(first + m) * per_row].iter().zip(unpacked.iter_mut())
        {
            src.unpack(dst);
        }
        let row = |r: usize| &unpacked[r * per_row..(r + 1) * per_row];
        let tok = |t: usize| &xs[t * per_row..(t + 1) * per_row];
        let mut t0 = 0;
        while t0 < n {
            let rn = (n - t0).min(K_TILE_TOKENS);
            let mut r0 = 0;
            while r0 < m {
                let rm = if m - r0 >= K_TILE_ROWS { K_TILE_ROWS } else { 1 };
                macro_rules! go {
                    ($m:literal, $k:literal) => {{
                        let rows: [_; $m] = std::array::from_fn(|i| row(r0 + i));
                        let toks: [_; $k] = std::array::from_fn(|i| tok(t0 + i));
                        // SAFETY: these tiles are only handed out when the CPU has AVX-512
                        // F/BW with AVX2 and FMA (`super::enabled`).
                        let v = unsafe {
                            if B::OFFSET {
                                k_tile::<true, $m, $k>(rows, toks)
                            } else {
                                k_tile::<false, $m, $k>(rows, toks)
                            }
                        };
                        for (r, vr) in v.iter().enumerate() {
                            for (t, &y) in vr.iter().enumerate() {
                                // SAFETY: rows first..first + m are this task's.
                                unsafe { out.write(t0 + t, first + r0 + r, y) };
                            }
                        }
                    }};
                }
                match (rm, rn) {
                    (4, 2) => go!(4, 2),
                    (4, _) => go!(4, 1),
                    (_, 2) => go!(1, 2),
                    _ => go!(1, 1),
                }
                r0 += rm;
            }
            t0 += rn;
        }
    });
}
