//! The AVX-512 grid kernel, over one weight row or two against the same Q8_K activations.
//! Each row's integer lanes and float steps are the scalar twin's (`codes::grid_dot`), so each
//! result equals it bit for bit, alone or paired.
//!
//! What two rows share: the activations as each type reads them ([`GridLanes::acts`]), and the
//! float step, done for both rows in one 512-bit register (row A's lanes in its 128-bit chunks
//! 0 and 2, row B's in 1 and 3). IQ1_S's run shifts (one integer per block and row) are summed
//! for both rows at once.

use std::arch::x86_64::*;

use super::super::codes::{finish, Delta, GridBlock};
use super::super::BlockQ8K;
use super::{shift_sum, GridPairs, Pair};

use crate::dot::avx2::{f16_to_f32, hsum};

/// A grid type as the kernel reads it: per super-block, what the rows share of the
/// activations, and each row's integer lanes against them (value `v` of a run into lane
/// `(v % 32) / 4` of either 256-bit half, the halves added before the float step: the AVX2
/// kernel's lanes, so the result is the same bit for bit).
pub(crate) trait GridLanes: GridBlock {
    /// One super-block of activations in the form this type's lanes read.
    type Acts;

    /// # Safety
    /// The CPU must have what `crate::dot::avx512_table_supported()` checks.
    unsafe fn acts(y: &BlockQ8K) -> Self::Acts;

    /// This block's lanes against `acts`: the products, and ([`Delta::Lanes`]) the shift's.
    ///
    /// # Safety
    /// As for `acts`.
    unsafe fn lanes(&self, acts: &Self::Acts) -> [__m512i; 2];

    /// [`Delta::PerRun`]: per run (one 16-bit word each) the factor [`GridBlock::delta_run`]
    /// multiplies its activations' sum by; zero for the types without a per-run shift, as
    /// `delta_run` is.
    ///
    /// # Safety
    /// As for `acts`.
    #[inline(always)]
    unsafe fn shift_factors(&self) -> __m128i {
        // SAFETY: SSE2, which every x86_64 CPU has.
        unsafe { _mm_setzero_si128() }
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

/// Weights of a grid type . Q8_K activations on AVX-512, the bits of `codes::grid_dot`.
pub(crate) fn dot<B: GridLanes>(w: &[B], x: &[BlockQ8K]) -> f32 {
    // SAFETY: these kernels sit only in the AVX-512 column of the type table, which is read
    // only after `avx512_table_supported()` said yes (`Dots::for_isa`, `kernels()`).
    unsafe { grid_dot::<B, 1>([w], x)[0] }
}

/// Two rows' dot products with `x`, each as [`dot`] gives it.
pub(crate) fn dot2<B: GridLanes>(w: [&[B]; 2], x: &[BlockQ8K]) -> [f32; 2] {
    // SAFETY: as for `dot` (`Dots::rows2_for_isa` checks the same).
    unsafe { grid_dot::<B, 2>(w, x) }
}

/// `acc + a . b` over pairs of i16 into i32 lanes as one `vpdpwssd`: LLVM splits the
/// intrinsic into `vpmaddwd` and `vpaddd`, one more step for the vector ports these kernels
/// are bound by.
///
/// # Safety
/// The CPU must have AVX512F and AVX512-VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn dpwssd(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: the instruction only reads and writes these registers; the caller has the CPU
    // features.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Per row, the sum of its run shifts of one block (IQ1_S), as lanes 0 (row A) and 4 (row B).
///
/// # Safety
/// The CPU must have what `crate::dot::avx512_table_supported()` checks.
#[inline]
#[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2")]
unsafe fn shift_pair<B: GridLanes>(a: [&B; 2], y: &BlockQ8K) -> __m256i {
    // SAFETY: as this function's contract.
    let f = unsafe { [a[0].shift_factors(), a[1].shift_factors()] };
    // SAFETY: bsums is 16 i16, 32 bytes; unaligned load.
    let bsums = unsafe { _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i) };
    // Each run's two halves' activation sums as one i16 (at most 32 * 127 in magnitude).
    let runs = _mm256_madd_epi16(bsums, _mm256_set1_epi16(1));
    let runs = _mm_packs_epi32(_mm256_castsi256_si128(runs), _mm256_extracti128_si256::<1>(runs));
    let m = _mm256_madd_epi16(_mm256_set_m128i(f[1], f[0]), _mm256_set_m128i(runs, runs));
    let m = _mm256_add_epi32(m, _mm256_shuffle_epi32::<0x4E>(m));
    _mm256_add_epi32(m, _mm256_shuffle_epi32::<0xB1>(m))
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

/// The kernel: per super-block, four pairs of runs into one set of i32 lanes per row, then
/// ggml's float step (`lane * d` fused into eight f32 lanes, summed pairwise at the end).
///
/// # Safety
/// The CPU must have what `crate::dot::avx512_table_supported()` checks.
#[target_feature(
    enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c,bmi2"
)]
unsafe fn grid_dot<B: GridLanes, const R: usize>(w: [&[B]; R], x: &[BlockQ8K]) -> [f32; R] {
    const { assert!(R == 1 || R == 2) };
    assert!(w.iter().all(|w| w.len() == x.len()));
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
    let (mut shift, mut shift1) = (_mm256_setzero_ps(), 0.0f32);
    for (i, b) in x.iter().enumerate() {
        let a = [&w[0][i], &w[R - 1][i]];
        // SAFETY: this function's contract is `acts`' and `lanes`'.
        let acts = unsafe { B::acts(b) };
        let (mut sumi, mut sumi2) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
        for r in 0..R {
            // SAFETY: as above.
            [sumi[r], sumi2[r]] = unsafe { a[r].lanes(&acts) };
        }
        // Per row `d`, laid out as the accumulator's lanes.
        let d = if R == 1 {
            _mm512_set1_ps(f16_to_f32(a[0].scale_f16()) * b.d)
        } else {
            let ds =
                _mm_set_ps(0.0, 0.0, f16_to_f32(a[1].scale_f16()), f16_to_f32(a[0].scale_f16()));
            let layout = _mm512_set_epi32(1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0);
            _mm512_permutexvar_ps(layout, _mm512_castps128_ps512(_mm_mul_ps(ds, _mm_set1_ps(b.d))))
        };
        acc = _mm512_fmadd_ps(d, lanes_of(sumi), acc);
        match B::DELTA {
            Delta::None => {}
            Delta::PerRun(_) if R == 1 => {
                // SAFETY: as for `pairs`.
                let runs = shift_sum(unsafe { a[0].shift_factors() }, b);
                shift1 = (runs as f32).mul_add(_mm512_cvtss_f32(d), shift1);
            }
            Delta::PerRun(_) => {
                // SAFETY: as for `pairs`.
                let runs = unsafe { shift_pair(a, b) };
                let d = _mm512_castps512_ps256(d);
                shift = _mm256_fmadd_ps(_mm256_cvtepi32_ps(runs), d, shift);
            }
            Delta::Lanes(_) => acc2 = _mm512_fmadd_ps(d, lanes_of(sumi2), acc2),
        }
    }
    // A row's eight lanes (chunks 0 and 2 for row A, 1 and 3 for row B, 0 and 1 alone), summed
    // as `hsum` does.
    let row = |v: __m512, r: usize| {
        let pick = match (R, r) {
            (1, _) => return hsum(_mm512_castps512_ps256(v)),
            (_, 0) => _mm512_set_epi64(0, 0, 0, 0, 5, 4, 1, 0),
            _ => _mm512_set_epi64(0, 0, 0, 0, 7, 6, 3, 2),
        };
        let v = _mm512_permutexvar_epi64(pick, _mm512_castps_si512(v));
        hsum(_mm512_castps512_ps256(_mm512_castsi512_ps(v)))
    };
    // SAFETY: `__m256` and `[f32; 8]` are both 32 plain bytes.
    let shifts = unsafe { std::mem::transmute::<__m256, [f32; 8]>(shift) };
    std::array::from_fn(|r| {
        let s = if R == 1 { shift1 } else { shifts[4 * r] };
        finish::<B>(row(acc, r), row(acc2, r), s)
    })
}
