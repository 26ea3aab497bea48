//! The AVX-512 grid kernel, over one weight row or many against the same Q8_K activations.
//! Each row's integer lanes and float steps are the scalar twin's (`codes::grid_dot`), so each
//! result equals it bit for bit, alone or among others.
//!
//! What the rows share: the activations as each type reads them ([`GridLanes::acts`], made once
//! for all the rows of a call), and, two rows at a time, the float step, done for both rows in
//! one 512-bit register (row A's lanes in its 128-bit chunks 0 and 2, row B's in 1 and 3).

use std::arch::x86_64::*;

use super::super::codes::{finish, Delta, GridBlock};
use super::super::BlockQ8K;
use super::{GridPairs, Pair};
use crate::dot::avx2::{f16_to_f32, hsum};
use crate::dot::avx512::dpwssd;

/// A grid type as the kernel reads it: per super-block, what the rows share of the
/// activations, and each row's integer lanes against them (value `v` of a run into lane
/// `(v % 32) / 4` of either 256-bit half, the halves added before the float step: the AVX2
/// kernel's lanes, so the result is the same bit for bit).
pub(crate) trait GridLanes: GridBlock {
    /// One super-block of activations in the form this type's lanes read.
    type Acts: Copy;

    /// # Safety
    /// The CPU must have what `crate::dot::avx512_table_supported()` checks.
    unsafe fn acts(y: &BlockQ8K) -> Self::Acts;

    /// This block's lanes against `acts`: the products, and ([`Delta::Lanes`]) the shift's.
    ///
    /// # Safety
    /// As for `acts`.
    unsafe fn lanes(&self, acts: &Self::Acts) -> [__m512i; 2];

    /// The super-block scale's f16 bits, as [`GridBlock::scale_f16`] gives them.
    ///
    /// # Safety
    /// As for `acts`.
    #[inline(always)]
    unsafe fn scale_bits(&self) -> u16 {
        self.scale_f16().to_bits()
    }

    /// [`Delta::PerRun`]: per row, the block's sum over its runs of
    /// [`GridBlock::delta_run`], row A's in lane 0 and (two rows) row B's in lane 4; zero for
    /// the types without a per-run shift, as `delta_run` is.
    ///
    /// # Safety
    /// As for `acts`.
    #[inline(always)]
    unsafe fn run_shifts<const R: usize>(rows: [&Self; R], acts: &Self::Acts) -> __m256i {
        let _ = (rows, acts);
        // SAFETY: AVX, which the callers' CPUs have.
        unsafe { _mm256_setzero_si256() }
    }
}

/// The unsigned grids: four pairs of runs, each against its 64 activations.
impl<B: GridPairs> GridLanes for B {
    type Acts = [__m512i; 4];

    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn acts(y: &BlockQ8K) -> [__m512i; 4] {
        // SAFETY: qs is 256 bytes; 64-byte unaligned loads at 64 k.
        std::array::from_fn(|k| unsafe {
            _mm512_loadu_si512(y.qs.as_ptr().add(64 * k) as *const _)
        })
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx512bitalg,avx2")]
    unsafe fn lanes(&self, acts: &[__m512i; 4]) -> [__m512i; 2] {
        // SAFETY: this function's contract is `pairs`'.
        let pairs = unsafe { self.pairs() };
        let mut sumi = _mm512_setzero_si512();
        for (p, q8) in pairs.iter().zip(acts) {
            pair_into(p, *q8, &mut sumi);
        }
        [sumi, _mm512_setzero_si512()]
    }
}

/// How far ahead of the block in hand each row's weights are prefetched, in bytes.
const PREFETCH_AHEAD: usize = 2048;

/// Weights of a grid type . Q8_K activations on AVX-512, the bits of `codes::grid_dot`.
pub(crate) fn dot<B: GridLanes>(w: &[B], x: &[BlockQ8K]) -> f32 {
    // SAFETY: these kernels sit only in the AVX-512 column of the type table, which is read
    // only after `avx512_table_supported()` said yes (`Dots::for_isa`, `kernels()`).
    unsafe { grid_dot::<B, 1, false>([w], x, &[])[0] }
}

/// Rows of `B` back to back (`out.len()` of them, `x.len()` blocks each) against `x`, each as
/// [`dot`] gives it: the activations made once, then two rows at a time.
pub(crate) fn dot_rows<B: GridLanes>(rows: &[B], x: &[BlockQ8K], out: &mut [f32]) {
    let n = x.len();
    assert_eq!(rows.len(), n * out.len(), "whole rows of the activations' length");
    if n == 0 {
        return out.fill(dot::<B>(&[], x));
    }
    // SAFETY: as for `dot` (`Dots::rows_for_isa` checks the same).
    let acts: Vec<B::Acts> = x.iter().map(|y| unsafe { B::acts(y) }).collect();
    // SAFETY: as above.
    unsafe { pairs_of_rows(rows, x, &acts, out) }
}

/// [`dot_rows`] once the activations are made: the kernel inlined into one loop over the
/// pairs of rows, so its constants are loaded once per call, not once per pair (rows of a
/// few super-blocks made that a visible share).
///
/// # Safety
/// As for [`grid_dot`].
#[target_feature(
    enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c,bmi2,gfni"
)]
unsafe fn pairs_of_rows<B: GridLanes>(
    rows: &[B],
    x: &[BlockQ8K],
    acts: &[B::Acts],
    out: &mut [f32],
) {
    let mut rows = rows.chunks_exact(x.len());
    let mut pairs = out.chunks_exact_mut(2);
    for o in &mut pairs {
        if let (Some(a), Some(b)) = (rows.next(), rows.next()) {
            // SAFETY: this function's contract.
            o.copy_from_slice(&unsafe { grid_dot::<B, 2, true>([a, b], x, acts) });
        }
    }
    if let ([o], Some(a)) = (pairs.into_remainder(), rows.next()) {
        // SAFETY: as above.
        *o = unsafe { grid_dot::<B, 1, true>([a], x, acts)[0] };
    }
}

/// One pair of runs of an unsigned grid into a row's lanes: the activations negated where
/// the values are, `maddubs` with the magnitudes, the run scales by `vpdpwssd`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn pair_into(p: &Pair, q8: __m512i, sumi: &mut __m512i) {
    let signed = _mm512_mask_sub_epi8(q8, p.signs, _mm512_setzero_si512(), q8);
    let products = _mm512_maddubs_epi16(p.grid, signed);
    // SAFETY: this function's target features.
    *sumi = unsafe { dpwssd(*sumi, products, p.scales) };
}

/// The kernel: per super-block, each row's i32 lanes, then ggml's float step (`lane * d` fused
/// into eight f32 lanes, summed pairwise at the end). `MADE`: the activations are `made` (one
/// per block), else made here block by block.
///
/// # Safety
/// The CPU must have what `crate::dot::avx512_table_supported()` checks.
#[inline]
#[target_feature(
    enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c,bmi2,gfni"
)]
unsafe fn grid_dot<B: GridLanes, const R: usize, const MADE: bool>(
    w: [&[B]; R],
    x: &[BlockQ8K],
    made: &[B::Acts],
) -> [f32; R] {
    const { assert!(R == 1 || R == 2) };
    assert!(w.iter().all(|w| w.len() == x.len()));
    assert!(!MADE || made.len() == x.len());
    // Two rows' lanes (each register's halves added) in the accumulator's chunk order:
    // A 0-3, B 0-3, A 4-7, B 4-7; one row's in the low 256 bits.
    let lanes_of = |s: [__m512i; R]| -> __m512 {
        if R == 1 {
            let lo = _mm512_castsi512_si256(s[0]);
            let sum = _mm256_add_epi32(lo, _mm512_extracti64x4_epi64::<1>(s[0]));
            _mm512_zextps256_ps512(_mm256_cvtepi32_ps(sum))
        } else {
            let lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
            let hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
            let sum = _mm512_add_epi32(
                _mm512_permutex2var_epi64(s[0], lo, s[R - 1]),
                _mm512_permutex2var_epi64(s[0], hi, s[R - 1]),
            );
            _mm512_cvtepi32_ps(sum)
        }
    };
    let (mut acc, mut acc2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut shift = _mm256_setzero_ps();
    for (i, b) in x.iter().enumerate() {
        let a = [&w[0][i], &w[R - 1][i]];
        for row in a.iter().take(R) {
            // The gathers keep the load ports busy enough that the hardware prefetcher falls
            // behind on the weights' stream (measured by the kernels bench from DRAM).
            let ahead = (*row as *const B as *const i8).wrapping_add(PREFETCH_AHEAD);
            _mm_prefetch::<_MM_HINT_T0>(ahead);
        }
        let a_rows: [&B; R] = std::array::from_fn(|r| &w[r][i]);
        // SAFETY: this function's contract is `acts`' and `lanes`'.
        let acts = if MADE { made[i] } else { unsafe { B::acts(b) } };
        let (mut sumi, mut sumi2) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
        for r in 0..R {
            // SAFETY: as above.
            [sumi[r], sumi2[r]] = unsafe { a[r].lanes(&acts) };
        }
        // Per row `d`, laid out as the accumulator's lanes.
        // SAFETY: as for `acts`.
        let bits = unsafe { [a[0].scale_bits(), a[1].scale_bits()] };
        let d = if R == 1 {
            _mm512_set1_ps(f16_to_f32(half::f16::from_bits(bits[0])) * b.d)
        } else {
            let ds =
                _mm_cvtph_ps(_mm_cvtsi32_si128((bits[0] as u32 | (bits[1] as u32) << 16) as i32));
            let layout = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
            _mm512_permutexvar_ps(layout, _mm512_castps128_ps512(_mm_mul_ps(ds, _mm_set1_ps(b.d))))
        };
        acc = _mm512_fmadd_ps(d, lanes_of(sumi), acc);
        match B::DELTA {
            Delta::None => {}
            Delta::PerRun(_) => {
                // SAFETY: as for `acts`.
                let runs = unsafe { B::run_shifts(a_rows, &acts) };
                let d = _mm512_castps512_ps256(d);
                shift = _mm256_fmadd_ps(_mm256_cvtepi32_ps(runs), d, shift);
            }
            Delta::Lanes(_) => acc2 = _mm512_fmadd_ps(d, lanes_of(sumi2), acc2),
        }
    }
    // SAFETY: `__m256` and `[f32; 8]` are both 32 plain bytes.
    let shifts = unsafe { std::mem::transmute::<__m256, [f32; 8]>(shift) };
    let (main, second) = (row_sums::<R>(acc), row_sums::<R>(acc2));
    std::array::from_fn(|r| finish::<B>(main[r], second[r], shifts[4 * r]))
}

/// Each row's eight lanes of an accumulator (chunks 0 and 2 for row A, 1 and 3 for row B; one
/// row: chunks 0 and 1) summed as `hsum` sums a row's eight: the two rows side by side, the
/// same additions.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
fn row_sums<const R: usize>(v: __m512) -> [f32; R] {
    if R == 1 {
        return [hsum(_mm512_castps512_ps256(v)); R];
    }
    // Row A's `lo + hi` in the low 128 bits, row B's in the high.
    let hi = _mm512_extracti64x4_epi64::<1>(_mm512_castps_si512(v));
    let s = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castsi256_ps(hi));
    let s = _mm256_add_ps(s, _mm256_shuffle_ps::<0xEE>(s, s));
    let s = _mm256_add_ps(s, _mm256_shuffle_ps::<1>(s, s));
    // SAFETY: `__m256` and `[f32; 8]` are both 32 plain bytes.
    let lanes = unsafe { std::mem::transmute::<__m256, [f32; 8]>(s) };
    std::array::from_fn(|r| lanes[4 * r])
}
