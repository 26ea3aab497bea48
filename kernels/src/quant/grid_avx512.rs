//! AVX-512 dot products of the grid types (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//! IQ3_S) with Q8_K activations, bit-identical to the scalar twin in `codes.rs`.
//!
//! The AVX2 kernels, like ggml's, fetch each group's grid entry and sign byte with scalar
//! loads and build registers from them element by element; those inserts, not arithmetic, bound
//! them. Here two runs (64 values) are one register: their grid entries arrive in one gather,
//! their signs are one 64-bit mask that negates the activations, and `vpdpwssd` applies the
//! run scales. The integer lanes are the AVX2 kernel's (value `v` of a run into lane
//! `(v % 32) / 4`: the register's two halves are added before the float step), so the result is
//! the same bit for bit. The signed grids (IQ1) have their own layout, in `signed.rs`.

use std::arch::x86_64::*;

use super::codes::GridBlock;
use super::iq_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::{BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, QK_K};

mod kernel;
mod signed;
pub(crate) use kernel::{dot, dot_rows};

/// Two runs of a grid type as one 512-bit register each.
#[derive(Clone, Copy)]
pub(crate) struct Pair {
    /// The 64 grid magnitudes, in value order.
    grid: __m512i,
    /// Bit `v` set: value `v` is negative.
    signs: u64,
    /// Per group of four values (an i32 lane), its scale in both i16 halves.
    scales: __m512i,
}

/// An unsigned grid type, whose runs the AVX-512 kernel loads two at a time.
pub(crate) trait GridPairs: GridBlock {
    /// The four pairs of runs of this super-block.
    ///
    /// # Safety
    /// The CPU must have what `crate::dot::avx512_table_supported()` checks.
    unsafe fn pairs(&self) -> [Pair; 4];
}

impl Pair {
    /// A blank pair for `pairs` to fill.
    const BLANK: Pair = Pair {
        // SAFETY: an all-zero `__m512i` is a valid value (plain bits).
        grid: unsafe { std::mem::zeroed() },
        signs: 0,
        // SAFETY: as for `grid`.
        scales: unsafe { std::mem::zeroed() },
    };
}

/// Four blank pairs for `pairs` to fill.
fn blank() -> [Pair; 4] {
    [Pair::BLANK; 4]
}

/// The sign bits of eight runs whose signs are four 7-bit indices each (the low 28 bits of
/// each word of `words`), each completed to even parity by an eighth bit (ggml's
/// `ksigns_iq2xs`): one 64-bit mask per pair of runs.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
fn ksign_bits(words: __m256i) -> [u64; 4] {
    // Per 64-bit lane (two words), the bytes at bits 0, 7, 14, 21 of each word.
    let fields = _mm256_multishift_epi64_epi8(_mm256_set1_epi64x(0x352E_2720_150E_0700), words);
    even_parity(_mm256_and_si256(fields, _mm256_set1_epi8(0x7F)))
}

/// 32 sign indices of 7 bits (one per byte) with each byte's eighth bit set to make its
/// parity even, as four 64-bit masks.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512bitalg,avx2")]
fn even_parity(x: __m256i) -> [u64; 4] {
    // Bit 0 of each byte's count to its bit 7 (the 16-bit shift moves the low byte's bits 1..8
    // into the high byte's low bits, which the mask drops).
    let parity = _mm256_slli_epi16::<7>(_mm256_popcnt_epi8(x));
    let signs = _mm256_or_si256(x, _mm256_and_si256(parity, _mm256_set1_epi8(0x80u8 as i8)));
    // SAFETY: `__m256i` and `[u64; 4]` are both 32 plain bytes.
    unsafe { std::mem::transmute::<__m256i, [u64; 4]>(signs) }
}

/// Per pair of runs, from eight run scales (one per 32-bit word of `s`, as the lanes take
/// them): run `2k`'s for lanes 0..8, run `2k + 1`'s for 8..16.
#[inline]
#[target_feature(enable = "avx512f")]
fn run_scales(s: __m256i, k: usize) -> __m512i {
    let (a, b) = (2 * k as i32, 2 * k as i32 + 1);
    let pick = _mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a);
    _mm512_permutexvar_epi32(pick, _mm512_castsi256_si512(s))
}

/// Eight 4-bit scales at bits 28..32 of each word of `w` as `2 * n + 1` in both halves.
#[inline]
#[target_feature(enable = "avx2")]
fn top_nibble_scales(w: __m256i) -> __m256i {
    let s = _mm256_or_si256(_mm256_srli_epi32::<27>(w), _mm256_set1_epi32(1));
    _mm256_or_si256(s, _mm256_slli_epi32::<16>(s))
}

/// The scales of runs with one 4-bit scale per half of 16 values (`bytes`: one byte per run,
/// low nibble first), each `2 * n + 1` in both halves of a word, one word per half-run.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
fn half_run_scales(bytes: [u8; 8]) -> __m512i {
    let v = _mm_cvtsi64_si128(i64::from_le_bytes(bytes));
    let nibble = _mm_set1_epi8(0xF);
    let halves =
        _mm_unpacklo_epi8(_mm_and_si128(v, nibble), _mm_and_si128(_mm_srli_epi16::<4>(v), nibble));
    let s =
        _mm512_or_si512(_mm512_slli_epi32::<1>(_mm512_cvtepu8_epi32(halves)), _mm512_set1_epi32(1));
    _mm512_or_si512(s, _mm512_slli_epi32::<16>(s))
}

/// Pair `k`'s scales from [`half_run_scales`]: half-runs `4k..4k + 4`, four lanes each.
#[inline]
#[target_feature(enable = "avx512f")]
fn pair_half_scales(s: __m512i, k: usize) -> __m512i {
    let h = 4 * k as i32;
    let (a, b, c, d) = (h, h + 1, h + 2, h + 3);
    let pick = _mm512_set_epi32(d, d, d, d, c, c, c, c, b, b, b, b, a, a, a, a);
    _mm512_permutexvar_epi32(pick, s)
}

/// `T` read from `bytes` at `at` (unaligned).
///
/// # Safety
/// `at + size_of::<T>()` must be within `bytes`.
#[inline(always)]
unsafe fn read<T: Copy>(bytes: &[u8], at: usize) -> T {
    debug_assert!(at + std::mem::size_of::<T>() <= bytes.len());
    // SAFETY: the caller keeps the read inside `bytes`; unaligned read.
    unsafe { (bytes.as_ptr().add(at) as *const T).read_unaligned() }
}

impl GridPairs for BlockIq2Xxs {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        let qs: &[u8] = bytemuck::cast_slice(&self.qs);
        // SAFETY: qs is 64 bytes; unaligned load.
        let all = unsafe { _mm512_loadu_si512(qs.as_ptr() as *const _) };
        // Per run: four index bytes, then its sign/scale word (word `2r + 1` of the block).
        let odd = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 15, 13, 11, 9, 7, 5, 3, 1);
        let words = _mm512_castsi512_si256(_mm512_permutexvar_epi32(odd, all));
        let (signs, scales) = (ksign_bits(words), top_nibble_scales(words));
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // SAFETY: 16 * k + 16 <= 64.
            let v: __m128i = unsafe { read(qs, 16 * k) };
            let idx = _mm_shuffle_epi8(v, _mm_set_epi64x(-1, 0x0B0A_0908_0302_0100));
            // SAFETY: the indices are bytes, inside the 256-entry grid.
            p.grid = unsafe {
                _mm512_i64gather_epi64::<8>(_mm512_cvtepu8_epi64(idx), IQ2XXS_GRID.as_ptr() as _)
            };
            p.signs = signs[k];
            p.scales = run_scales(scales, k);
        }
        out
    }
}

impl GridPairs for BlockIq2Xs {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        // SAFETY: qs is 32 words, 64 bytes; unaligned load.
        let all = unsafe { _mm512_loadu_si512(self.qs.as_ptr() as *const _) };
        // Each word: a 9-bit grid index, then 7 sign bits.
        let signs = even_parity(_mm512_cvtepi16_epi8(_mm512_srli_epi16::<9>(all)));
        let scales = half_run_scales(self.scales);
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // SAFETY: 8 * k + 8 <= 32 = qs's length in words.
            let v = unsafe { _mm_loadu_si128(self.qs.as_ptr().add(8 * k) as *const __m128i) };
            let idx = _mm512_cvtepu16_epi64(_mm_and_si128(v, _mm_set1_epi16(511)));
            // SAFETY: the indices are 9 bits, inside the 512-entry grid.
            p.grid = unsafe { _mm512_i64gather_epi64::<8>(idx, IQ2XS_GRID.as_ptr() as _) };
            p.signs = signs[k];
            p.scales = pair_half_scales(scales, k);
        }
        out
    }
}

impl GridPairs for BlockIq2S {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        let scales = half_run_scales(self.scales);
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // SAFETY: 8 * k + 8 <= 32 (the index bytes); 32 + 8 * k + 8 <= 64 = qs's length.
            let (lo, signs): (u64, u64) =
                unsafe { (read(&self.qs, 8 * k), read(&self.qs, 32 + 8 * k)) };
            // The high index bits of group `l` of a run are bits `2l..2l + 2` of its `qh` byte.
            let qh = _mm512_mask_blend_epi64(
                0xF0,
                _mm512_set1_epi64(self.qh[2 * k] as i64),
                _mm512_set1_epi64(self.qh[2 * k + 1] as i64),
            );
            let hi = _mm512_srlv_epi64(qh, _mm512_set_epi64(6, 4, 2, 0, 6, 4, 2, 0));
            let hi = _mm512_slli_epi64::<8>(_mm512_and_si512(hi, _mm512_set1_epi64(3)));
            let idx = _mm512_or_si512(_mm512_cvtepu8_epi64(_mm_cvtsi64_si128(lo as i64)), hi);
            // SAFETY: the indices are 10 bits, inside the 1024-entry grid.
            p.grid = unsafe { _mm512_i64gather_epi64::<8>(idx, IQ2S_GRID.as_ptr() as _) };
            p.signs = signs;
            p.scales = pair_half_scales(scales, k);
        }
        out
    }
}

impl GridPairs for BlockIq3Xxs {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        // SAFETY: the sign/scale words are qs[64..96]; unaligned load.
        let words = unsafe { read::<__m256i>(&self.qs, 64) };
        let (signs, scales) = (ksign_bits(words), top_nibble_scales(words));
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // SAFETY: 16 * k + 16 <= 64, the index bytes.
            let v: __m128i = unsafe { read(&self.qs, 16 * k) };
            // SAFETY: the indices are bytes, inside the 256-entry grid.
            p.grid = unsafe {
                _mm512_i32gather_epi32::<4>(_mm512_cvtepu8_epi32(v), IQ3XXS_GRID.as_ptr() as _)
            };
            p.signs = signs[k];
            p.scales = run_scales(scales, k);
        }
        out
    }
}

impl GridPairs for BlockIq3S {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // SAFETY: 16 * k + 16 <= 64 = qs's length; 8 * k + 8 <= 32 = signs' length.
            let (v, signs): (__m128i, u64) =
                unsafe { (read(&self.qs, 16 * k), read(&self.signs, 8 * k)) };
            // The ninth index bit of group-of-four `j` of a run is bit `j` of its `qh` byte.
            let qh = _mm512_mask_blend_epi32(
                0xFF00,
                _mm512_set1_epi32(self.qh[2 * k] as i32),
                _mm512_set1_epi32(self.qh[2 * k + 1] as i32),
            );
            let shifts = _mm512_set_epi32(7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0);
            let bit = _mm512_and_si512(_mm512_srlv_epi32(qh, shifts), _mm512_set1_epi32(1));
            let idx = _mm512_or_si512(_mm512_cvtepu8_epi32(v), _mm512_slli_epi32::<8>(bit));
            // SAFETY: the indices are 9 bits, inside the 512-entry grid.
            p.grid = unsafe { _mm512_i32gather_epi32::<4>(idx, IQ3S_GRID.as_ptr() as _) };
            p.signs = signs;
            let sc = self.scales[k] as i32;
            let (a, b) = ((2 * (sc & 0xF) + 1) * 0x1_0001, (2 * (sc >> 4) + 1) * 0x1_0001);
            p.scales = _mm512_mask_blend_epi32(0xFF00, _mm512_set1_epi32(a), _mm512_set1_epi32(b));
        }
        out
    }
}

/// A super-block of an unsigned grid type as the prefill tiles read it (`gemm/wide.rs`): its
/// 256 codes with their signs applied, each offset by 128 to an unsigned byte, and the scale of
/// each half-run of 16 values.
///
/// # Safety
/// The CPU must have what `crate::dot::avx512_table_supported()` checks.
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2,bmi2")]
pub(crate) unsafe fn biased_codes<B: GridPairs>(b: &B, q: &mut [u8; QK_K], per16: &mut [i32; 16]) {
    debug_assert!(!B::SIGNED, "signed grids carry a shift and have no wide tile");
    // SAFETY: this function's contract is `pairs`'.
    let pairs = unsafe { b.pairs() };
    for (k, p) in pairs.iter().enumerate() {
        let codes = _mm512_mask_sub_epi8(p.grid, p.signs, _mm512_setzero_si512(), p.grid);
        let biased = _mm512_xor_si512(codes, _mm512_set1_epi8(-128));
        // SAFETY: q holds 256 bytes: a 64-byte store at 64 * k stays inside.
        unsafe { _mm512_storeu_si512(q.as_mut_ptr().add(64 * k) as *mut _, biased) };
        // SAFETY: `__m512i` and `[i32; 16]` are both 64 plain bytes.
        let lanes = unsafe { std::mem::transmute::<__m512i, [i32; 16]>(p.scales) };
        // Four lanes (groups of four values) per half-run; each lane holds its scale twice.
        for h in 0..4 {
            per16[4 * k + h] = lanes[4 * h] as i16 as i32;
        }
    }
}
