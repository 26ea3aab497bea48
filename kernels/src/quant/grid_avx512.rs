//! AVX-512 dot products of the grid types (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS,
//! IQ3_S) with Q8_K activations, bit-identical to the scalar twin in `codes.rs`.
//!
//! The AVX2 kernels, like ggml's, fetch each group's grid entry and sign byte with scalar
//! loads and build registers from them element by element; those inserts, not arithmetic, bound
//! them. Here two runs (64 values) are one register: their grid entries arrive in one gather,
//! their signs are one 64-bit mask that negates the activations, and `vpdpwssd` applies the
//! run scales. The integer lanes are the AVX2 kernel's (value `v` of a run into lane
//! `(v % 32) / 4`: the register's two halves are added before the float step), so the result is
//! the same bit for bit.

use std::arch::x86_64::*;

use super::codes::GridBlock;
use super::iq_grids::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use super::{
    BlockIq1M, BlockIq1S, BlockIq2S, BlockIq2Xs, BlockIq2Xxs, BlockIq3S, BlockIq3Xxs, BlockQ8K,
    QK_K,
};

mod kernel;
pub(crate) use kernel::{dot, dot2};

/// Two runs of a grid type as one 512-bit register each.
#[derive(Clone, Copy)]
pub(crate) struct Pair {
    /// The 64 grid magnitudes, in value order; for the signed grids, the values plus one
    /// ([`IQ1S_GRID_BIASED`]).
    grid: __m512i,
    /// Bit `v` set: value `v` is negative. The signed grids (IQ1), whose values carry their
    /// signs: in pair `2c`, bit `w` set: word `w` of its `scales` belongs to a group of four
    /// whose shift is negative (IQ1_M); 0 in pair `2c + 1`.
    signs: u64,
    /// Per group of four values (an i32 lane), its scale in both i16 halves. The signed
    /// grids: pairs `2c` and `2c + 1` (a couple) share one register, in pair `2c`: word `2i`
    /// holds pair `2c`'s lane `i`'s scale, word `2i + 1` pair `2c + 1`'s; 0 in pair `2c + 1`.
    scales: __m512i,
}

/// A grid type whose runs the AVX-512 kernel loads two at a time.
pub(crate) trait GridPairs: GridBlock {
    /// The four pairs of runs of this super-block.
    ///
    /// # Safety
    /// The CPU must have what `crate::dot::avx512_table_supported()` checks.
    unsafe fn pairs(&self) -> [Pair; 4];

    /// [`Delta::PerRun`]: per run (one 16-bit word each) the factor [`GridBlock::delta_run`]
    /// multiplies its activations' sum by; zero for the types without a per-run shift, as
    /// `delta_run` is.
    ///
    /// # Safety
    /// As for `pairs`.
    #[inline(always)]
    unsafe fn shift_factors(&self) -> __m128i {
        // SAFETY: SSE2, which every x86_64 CPU has.
        unsafe { _mm_setzero_si128() }
    }
}

/// The sum over the runs of [`GridBlock::delta_run`], from [`GridPairs::shift_factors`].
#[inline]
#[target_feature(enable = "avx2")]
fn shift_sum(factors: __m128i, y: &BlockQ8K) -> i32 {
    // SAFETY: bsums is 16 i16, 32 bytes; unaligned load.
    let bsums = unsafe { _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i) };
    // Each run's factor against both of its halves' sums.
    let per_half = _mm256_set_m128i(
        _mm_unpackhi_epi16(factors, factors),
        _mm_unpacklo_epi16(factors, factors),
    );
    let runs = _mm256_madd_epi16(per_half, bsums);
    let s = _mm_add_epi32(_mm256_castsi256_si128(runs), _mm256_extracti128_si256::<1>(runs));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<1>(s)))
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

/// For the signed grids' couples of pairs: per word of couple `c`'s scale register, the
/// word of the block's scales it takes (word `2i`: pair `2c`'s lane `i`, word `2i + 1`: pair
/// `2c + 1`'s). A lane of pair `k` is in run `2k` (lanes 0..8) or `2k + 1`; IQ1_S has one scale
/// per run, IQ1_M one per half-run (`2 run + (lane % 8) / 4`).
const fn couple_words(c: usize, half_runs: bool) -> [i16; 32] {
    let mut t = [0i16; 32];
    let mut w = 0;
    while w < 32 {
        let (k, lane) = (2 * c + w % 2, w / 2);
        let run = 2 * k + lane / 8;
        t[w] = if half_runs { 2 * run + (lane % 8) / 4 } else { run } as i16;
        w += 1;
    }
    t
}

static IQ1S_COUPLE_WORDS: [[i16; 32]; 2] = [couple_words(0, false), couple_words(1, false)];
static IQ1M_COUPLE_WORDS: [[i16; 32]; 2] = [couple_words(0, true), couple_words(1, true)];

/// Couple `c`'s scales from `words` (one scale per word), by `pick`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn couple_scales(words: __m512i, pick: &[[i16; 32]; 2], c: usize) -> __m512i {
    // SAFETY: 64 bytes; unaligned load.
    let pick = unsafe { _mm512_loadu_si512(pick[c].as_ptr() as *const _) };
    _mm512_permutexvar_epi16(pick, words)
}

/// IQ1_S's (and IQ1_M's) grid with one added to every value (-1, 0, 1 become 0, 1, 2): unsigned
/// bytes `maddubs` multiplies directly.
static IQ1S_GRID_BIASED: [u64; 2048] = {
    let mut t = [0u64; 2048];
    let mut i = 0;
    while i < 2048 {
        let mut j = 0;
        while j < 8 {
            let v = ((IQ1S_GRID[i] >> (8 * j)) as u8).wrapping_add(1);
            t[i] |= (v as u64) << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

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

impl GridPairs for BlockIq1S {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2,bmi2")]
    unsafe fn shift_factors(&self) -> __m128i {
        // Per run `±(2s + 1)` from its word (scale at bits 12..15, the shift's sign at 15).
        // SAFETY: qh is 8 words, 16 bytes; unaligned load.
        let qh = unsafe { _mm_loadu_si128(self.qh.as_ptr() as *const __m128i) };
        let ls = _mm_and_si128(_mm_srli_epi16::<11>(qh), _mm_set1_epi16(0xE));
        let ls = _mm_or_si128(ls, _mm_set1_epi16(1));
        // Negated where the word's top bit is set (the word or 1 is never zero).
        _mm_sign_epi16(ls, _mm_or_si128(qh, _mm_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        // SAFETY: qs is 32 bytes, qh 8 words (16 bytes); unaligned loads.
        let (lo, qh): (__m256i, __m128i) =
            unsafe { (read(&self.qs, 0), read(bytemuck::cast_slice(&self.qh), 0)) };
        // All 32 indices as 16-bit words: group `g`'s high bits are bits `3 (g % 4)..` of its
        // run's word `g / 4`.
        let run_of = _mm512_set_epi16(
            7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0,
            0, 0, 0,
        );
        let at = _mm512_set_epi16(
            9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9,
            6, 3, 0,
        );
        let words = _mm512_permutexvar_epi16(run_of, _mm512_castsi128_si512(qh));
        let hi = _mm512_and_si512(_mm512_srlv_epi16(words, at), _mm512_set1_epi16(7));
        let idx = _mm512_or_si512(_mm512_cvtepu8_epi16(lo), _mm512_slli_epi16::<8>(hi));
        // Run scales `2 * s + 1` from bits 12..15 of each word.
        let ls = _mm_and_si128(_mm_srli_epi16::<11>(qh), _mm_set1_epi16(0xE));
        let ls = _mm512_castsi128_si512(_mm_or_si128(ls, _mm_set1_epi16(1)));
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // Words 8k..8k + 8, one per 64-bit lane.
            let from = _mm512_add_epi64(
                _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                _mm512_set1_epi64(8 * k as i64),
            );
            let gidx = _mm512_maskz_permutexvar_epi16(0x1111_1111, from, idx);
            // SAFETY: the indices are 11 bits, inside the 2048-entry grid.
            p.grid = unsafe { _mm512_i64gather_epi64::<8>(gidx, IQ1S_GRID_BIASED.as_ptr() as _) };
            if k % 2 == 0 {
                p.scales = couple_scales(ls, &IQ1S_COUPLE_WORDS, k / 2);
            }
        }
        out
    }
}

impl GridPairs for BlockIq1M {
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vbmi,avx512bitalg,avx2,bmi2")]
    unsafe fn pairs(&self) -> [Pair; 4] {
        let scales = iq1_m_scales(self);
        // SAFETY: qs is 32 bytes, qh 16; unaligned loads.
        let (lo, qh): (__m256i, __m128i) = unsafe { (read(&self.qs, 0), read(&self.qh, 0)) };
        // All 32 indices as 16-bit words: group `g`'s nibble is nibble `g % 2` of qh[g / 2]:
        // three high index bits, then its shift's sign.
        let byte_of = _mm512_set_epi16(
            15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8, 7, 7, 6, 6, 5, 5, 4, 4, 3,
            3, 2, 2, 1, 1, 0, 0,
        );
        let at = _mm512_set_epi16(
            4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4,
            0, 4, 0,
        );
        let bytes = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(qh));
        let nibbles = _mm512_srlv_epi16(_mm512_permutexvar_epi16(byte_of, bytes), at);
        let hi = _mm512_and_si512(nibbles, _mm512_set1_epi16(7));
        let idx = _mm512_or_si512(_mm512_cvtepu8_epi16(lo), _mm512_slli_epi16::<8>(hi));
        let negative = _mm512_test_epi16_mask(nibbles, _mm512_set1_epi16(8));
        let mut out = blank();
        for (k, p) in out.iter_mut().enumerate() {
            // Words 8k..8k + 8, one per 64-bit lane.
            let from = _mm512_add_epi64(
                _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                _mm512_set1_epi64(8 * k as i64),
            );
            let gidx = _mm512_maskz_permutexvar_epi16(0x1111_1111, from, idx);
            // SAFETY: the indices are 11 bits, inside the 2048-entry grid.
            p.grid = unsafe { _mm512_i64gather_epi64::<8>(gidx, IQ1S_GRID_BIASED.as_ptr() as _) };
            if k % 2 == 0 {
                p.scales = couple_scales(scales, &IQ1M_COUPLE_WORDS, k / 2);
                // Pair k's lane `i` (words `2i`) and pair k + 1's (words `2i + 1`) read group
                // `i / 2` of their pair: each group's sign on four words.
                let (a, b) = ((negative >> (8 * k)) & 0xFF, (negative >> (8 * k + 8)) & 0xFF);
                let signs = _pdep_u32(a, 0x1111_1111) | _pdep_u32(b, 0x2222_2222);
                p.signs = (signs * 5) as u64;
            }
        }
        out
    }
}

/// IQ1_M's 16 half-run scales `2 n + 1`, one per 16-bit word.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
fn iq1_m_scales(b: &BlockIq1M) -> __m512i {
    // The 3-bit scales of the 16 half-runs, three per 16-bit word from its bit 0 (the top
    // nibbles are the super-block scale's): half-run `h` is field `h % 4` of word `h / 4`.
    let words = _mm512_castsi256_si512(_mm256_set1_epi64x(i64::from_le_bytes(b.scales)));
    let at = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6, 3, 0, 9, 6,
        3, 0,
    );
    // Word `h` of the broadcast is word `h % 4` of the scales: shuffle it to `h / 4` first.
    let word_of = _mm512_set_epi16(
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1,
        12, 8, 4, 0,
    );
    let n = _mm512_srlv_epi16(_mm512_permutexvar_epi16(word_of, words), at);
    let n = _mm512_and_si512(n, _mm512_set1_epi16(7));
    _mm512_or_si512(_mm512_slli_epi16::<1>(n), _mm512_set1_epi16(1))
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
