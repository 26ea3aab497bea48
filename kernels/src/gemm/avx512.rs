//! AVX-512 (F, BW, VNNI) GEMM tiles: up to 4 weight rows x 4 tokens, one 512-bit accumulator
//! per output. Quantised tiles take two blocks per register and `vpdpbusd` (u8 x i8 -> i32):
//! the weights are offset to unsigned once per row and block pair, the offset's contribution
//! starts the accumulation (the token's negated group sums, shifted), so each output costs one
//! `vpdpbusd`, one conversion, one scale product and one FMA per block pair. Only reachable
//! through `KERNELS`, which `GemmKernels::avx512` hands out after checking the CPU.

use std::arch::x86_64::*;

use half::{bf16, f16};

use super::{GemmKernels, PackedF32, PackedQ8, Q8Pair, RowsOut, TILE_ROWS, TILE_TOKENS};
use crate::quant::{BlockQ4_0, BlockQ8_0};

pub(super) const KERNELS: GemmKernels = GemmKernels {
    q8_0: |w, first, m, x, out| quant_rows(w, first, m, x, out),
    q4_0: |w, first, m, x, out| quant_rows(w, first, m, x, out),
    f32: |w, first, m, x, out| float_rows(w, first, m, x, out),
    f16: |w, first, m, x, out| float_rows(w, first, m, x, out),
    bf16: |w, first, m, x, out| float_rows(w, first, m, x, out),
    q4_k: super::kquant::k_rows::<crate::quant::BlockQ4K>,
    q5_k: super::kquant::k_rows::<crate::quant::BlockQ5K>,
    q6_k: super::kquant::k_rows::<crate::quant::BlockQ6K>,
};

/// A quantised weight block format the tiles can read: a block pair as unsigned bytes and lane
/// scales, and how the offset that made them unsigned is corrected.
trait QuantBlock: Copy {
    /// Blocks `2p` and `2p + 1` of `row` (a zero block past the end) as unsigned bytes, and
    /// their scales in lanes 0..8 and 8..16.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW and F16C.
    unsafe fn pair(row: &[Self], p: usize) -> (__m512i, __m512);
    /// log2 of the offset that made the values unsigned (128 for Q8_0, 8 for Q4_0).
    const SHIFT: u32;
}

#[inline]
#[target_feature(enable = "avx512f,avx2,f16c")]
fn lane_scales(d0: f16, d1: f16) -> __m512 {
    let bits = |x: f16| _mm_set1_epi16(x.to_bits() as i16);
    _mm512_cvtph_ps(_mm256_set_m128i(bits(d1), bits(d0)))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

impl QuantBlock for BlockQ8_0 {
    const SHIFT: u32 = 7;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    unsafe fn pair(row: &[Self], p: usize) -> (__m512i, __m512) {
        let load = |b: &BlockQ8_0| {
            // SAFETY: qs is 32 bytes; an unaligned 256-bit load reads exactly them.
            unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) }
        };
        let a0 = &row[2 * p];
        let (q1, d1) = match row.get(2 * p + 1) {
            Some(a1) => (load(a1), a1.d),
            None => (_mm256_setzero_si256(), f16::ZERO),
        };
        let q = join(load(a0), q1);
        // xor 0x80: i8 -> u8 with +128.
        (_mm512_xor_si512(q, _mm512_set1_epi8(-128)), lane_scales(a0.d, d1))
    }
}

impl QuantBlock for BlockQ4_0 {
    const SHIFT: u32 = 3;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
    unsafe fn pair(row: &[Self], p: usize) -> (__m512i, __m512) {
        let nibbles = |b: &BlockQ4_0| {
            // SAFETY: qs is 16 bytes; an unaligned 128-bit load reads exactly them.
            let v = unsafe { _mm_loadu_si128(b.qs.as_ptr() as *const __m128i) };
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(v), v), _mm256_set1_epi8(0x0F))
        };
        let a0 = &row[2 * p];
        let (q1, d1) = match row.get(2 * p + 1) {
            Some(a1) => (nibbles(a1), a1.d),
            None => (_mm256_setzero_si256(), f16::ZERO),
        };
        // Nibbles are already unsigned: value = q - 8.
        (join(nibbles(a0), q1), lane_scales(a0.d, d1))
    }
}

/// One weight row's block pair, ready for the tile: the 64 values as unsigned bytes and the two
/// scales as f32, eight lanes each. A chunk's rows are unpacked once into these and then read by
/// every token tile (the unpacking costs about as much as the products of four tokens).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct RowPair {
    ua: [u8; 64],
    d: [f32; 16],
}

const _: () = assert!(std::mem::size_of::<RowPair>() == 128);

/// Unpacks `rows` rows of `per_row` blocks starting at block `w[0]` into `out` (`rows x pairs`).
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
fn unpack_rows<B: QuantBlock>(w: &[B], per_row: usize, rows: usize, out: &mut Vec<RowPair>) {
    let pairs = per_row.div_ceil(2);
    out.clear();
    for r in 0..rows {
        let row = &w[r * per_row..(r + 1) * per_row];
        for p in 0..pairs {
            // SAFETY: this function's target features include everything `pair` needs.
            let (ua, d) = unsafe { B::pair(row, p) };
            let mut rp = RowPair { ua: [0; 64], d: [0.0; 16] };
            // SAFETY: both fields are 64 bytes; unaligned 512-bit stores write exactly them.
            unsafe {
                _mm512_storeu_si512(rp.ua.as_mut_ptr() as *mut _, ua);
                _mm512_storeu_ps(rp.d.as_mut_ptr(), d);
            }
            out.push(rp);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn quant_tile<const SHIFT: u32, const RM: usize, const RN: usize>(
    rows: [&[RowPair]; RM],
    xs: [&[Q8Pair]; RN],
) -> [[f32; RN]; RM] {
    let pairs = xs[0].len();
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    for p in 0..pairs {
        let mut ua = [_mm512_setzero_si512(); RM];
        let mut da = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            let w = &rows[r][p];
            // SAFETY: each field is 64 bytes; unaligned 512-bit loads read exactly them.
            unsafe {
                ua[r] = _mm512_loadu_si512(w.ua.as_ptr() as *const _);
                da[r] = _mm512_loadu_ps(w.d.as_ptr());
            }
        }
        for t in 0..RN {
            let x = &xs[t][p];
            // SAFETY: each field is 64 bytes; unaligned 512-bit loads read exactly them.
            let (qb, neg, db) = unsafe {
                (
                    _mm512_loadu_si512(x.qs.as_ptr() as *const _),
                    _mm512_loadu_si512(x.neg_sums.as_ptr() as *const _),
                    _mm512_loadu_ps(x.d.as_ptr()),
                )
            };
            // The offset's contribution: offset x sum of the activations, per lane.
            let init = _mm512_sllv_epi32(neg, _mm512_set1_epi32(SHIFT as i32));
            for r in 0..RM {
                let dot = _mm512_dpbusd_epi32(init, ua[r], qb);
                let d = _mm512_mul_ps(da[r], db);
                acc[r][t] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), acc[r][t]);
            }
        }
    }
    let mut out = [[0.0; RN]; RM];
    for r in 0..RM {
        for t in 0..RN {
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]);
        }
    }
    out
}

/// A float weight format: sixteen values widened to f32 lanes.
trait FloatElem: Copy {
    /// `row[k..k + 16]` as f32.
    ///
    /// # Safety
    /// `k + 16 <= row.len()` and the CPU has AVX-512 F and F16C.
    unsafe fn load16(row: &[Self], k: usize) -> __m512;
    fn to_f32(self) -> f32;
}

impl FloatElem for f32 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len().
        unsafe { _mm512_loadu_ps(row.as_ptr().add(k)) }
    }
    fn to_f32(self) -> f32 {
        self
    }
}

impl FloatElem for f16 {
    #[inline]
    #[target_feature(enable = "avx512f,f16c")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len(); 16 f16 are 32 bytes.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(row.as_ptr().add(k) as *const __m256i)) }
    }
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl FloatElem for bf16 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(row: &[Self], k: usize) -> __m512 {
        // SAFETY: the caller guarantees k + 16 <= row.len(); 16 bf16 are 32 bytes.
        let v = unsafe { _mm256_loadu_si256(row.as_ptr().add(k) as *const __m256i) };
        // bf16 is the top half of an f32: widen and shift (exact).
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v)))
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn float_tile<E: FloatElem, const RM: usize, const RN: usize>(
    rows: [&[E]; RM],
    xs: [&[f32]; RN],
) -> [[f32; RN]; RM] {
    let cols = xs[0].len();
    let main = cols / 16 * 16;
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let mut k = 0;
    while k < main {
        let mut w = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            // SAFETY: k + 16 <= main <= cols = every row's length (checked by the caller).
            w[r] = unsafe { E::load16(rows[r], k) };
        }
        for t in 0..RN {
            // SAFETY: as above, for the token's row of `cols` floats.
            let x = unsafe { _mm512_loadu_ps(xs[t].as_ptr().add(k)) };
            for r in 0..RM {
                acc[r][t] = _mm512_fmadd_ps(w[r], x, acc[r][t]);
            }
        }
        k += 16;
    }
    let mut out = [[0.0; RN]; RM];
    for r in 0..RM {
        for t in 0..RN {
            let tail: f32 = (main..cols).map(|k| rows[r][k].to_f32() * xs[t][k]).sum();
            out[r][t] = _mm512_reduce_add_ps(acc[r][t]) + tail;
        }
    }
    out
}

/// Runs `tile(r0, rm, t0)` over a chunk of `m` rows and `n` tokens, tokens outer so a tile's
/// activations stay in L1 while the chunk's rows pass over them.
fn drive(m: usize, n: usize, tile: impl Fn(usize, usize, usize)) {
    let mut t0 = 0;
    while t0 < n {
        let mut r0 = 0;
        while r0 < m {
            let rm = if m - r0 >= TILE_ROWS { TILE_ROWS } else { 1 };
            tile(r0, rm, t0);
            r0 += rm;
        }
        t0 += TILE_TOKENS;
    }
}

/// Dispatches a runtime (rows, tokens) tile size to its compiled twin.
macro_rules! dispatch {
    ($kernel:ident [$($pre:tt)*], $row:expr, $tok:expr, $rm:expr, $rn:expr, $write:expr) => {{
        macro_rules! go {
            ($m:literal, $k:literal) => {{
                let rows: [_; $m] = std::array::from_fn(|i| $row(i));
                let xs: [_; $k] = std::array::from_fn(|i| $tok(i));
                // SAFETY: KERNELS is only handed out when the CPU has AVX-512 F/BW/VNNI with
                // AVX2, FMA and F16C (GemmKernels::avx512).
                let v = unsafe { $kernel::<$($pre)* $m, $k>(rows, xs) };
                for (r, vr) in v.iter().enumerate() {
                    for (t, &y) in vr.iter().enumerate() {
                        $write(r, t, y);
                    }
                }
            }};
        }
        match ($rm, $rn) {
            (4, 4) => go!(4, 4),
            (4, 3) => go!(4, 3),
            (4, 2) => go!(4, 2),
            (4, 1) => go!(4, 1),
            (1, 4) => go!(1, 4),
            (1, 3) => go!(1, 3),
            (1, 2) => go!(1, 2),
            _ => go!(1, 1),
        }
    }};
}

fn quant_rows<B: QuantBlock>(w: &[B], first: usize, m: usize, x: &PackedQ8, out: &RowsOut) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<RowPair>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (n, per_row) = (x.tokens, x.blocks);
    let pairs = per_row.div_ceil(2);
    ROWS.with_borrow_mut(|unpacked| {
        // SAFETY: KERNELS is only handed out when the CPU has AVX-512 F/BW with AVX2 and F16C.
        unsafe { unpack_rows(&w[first * per_row..(first + m) * per_row], per_row, m, unpacked) };
        let row = |r: usize| &unpacked[r * pairs..(r + 1) * pairs];
        drive(m, n, |r0, rm, t0| {
            let rn = (n - t0).min(TILE_TOKENS);
            // SAFETY: rows first..first + m are this task's (GemmKernels callers hand out
            // disjoint row ranges).
            let write = |r, t, y| unsafe { out.write(t0 + t, first + r0 + r, y) };
            if B::SHIFT == 7 {
                dispatch!(quant_tile [7,], |i| row(r0 + i), |i| x.token(t0 + i), rm, rn, write)
            } else {
                dispatch!(quant_tile [3,], |i| row(r0 + i), |i| x.token(t0 + i), rm, rn, write)
            }
        });
    });
}

fn float_rows<E: FloatElem>(w: &[E], first: usize, m: usize, x: &PackedF32, out: &RowsOut) {
    let (n, cols) = (x.tokens(), x.cols);
    let row = |r: usize| &w[(first + r) * cols..(first + r + 1) * cols];
    drive(m, n, |r0, rm, t0| {
        let rn = (n - t0).min(TILE_TOKENS);
        // SAFETY: as in quant_rows.
        let write = |r, t, y| unsafe { out.write(t0 + t, first + r0 + r, y) };
        dispatch!(float_tile [_,], |i| row(r0 + i), |i| x.token(t0 + i), rm, rn, write)
    });
}
