//! The AVX2 many-token kernels of [`super`]: rows unpacked with AVX2 where a type has a faster
//! way, run scales and offset shares computed once per task, and eight tokens per pass over
//! each run of codes.

use std::arch::x86_64::*;

use super::{
    visit_passes, with_rows, GridBlock, RowCodes, RowsOut, Unpack, UnpackedActs, QK_K, TOKENS,
};
use crate::dot::avx2::hsum;
use crate::dot::avx2_k::hsum_i32;

/// The AVX2 twin of [`super::unpack_grid`]: each run's signs applied in one `vpsignb`.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn unpack_grid<B: GridBlock>(b: &B, codes: &mut [i8], ls: &mut [i16]) -> f32 {
    assert!(codes.len() >= QK_K && ls.len() >= QK_K / 16);
    for r in 0..QK_K / 32 {
        // SAFETY: this function's contract (AVX2).
        let g = unsafe { b.avx2_grid(r) };
        // Sign bytes are 1 or -1: `vpsignb` keeps or negates.
        // SAFETY: as above.
        let c = if B::SIGNED { g } else { _mm256_sign_epi8(g, unsafe { b.avx2_signs(r) }) };
        let l = b.run(r).ls;
        // SAFETY: 32 * r + 32 <= 256 <= codes.len(); an unaligned store.
        unsafe { _mm256_storeu_si256(codes.as_mut_ptr().add(32 * r) as *mut __m256i, c) };
        ls[2 * r..2 * r + 2].copy_from_slice(&l);
    }
    b.scale()
}

/// Tokens per block: a block's activations stay in cache while every row of the task passes
/// over them.
const TOKEN_BLOCK: usize = 16;

/// The AVX2 twin of [`super::dot_tokens`].
pub(crate) fn dot_tokens<B: Unpack>(
    w: &[B],
    (first, m): (usize, usize),
    acts: &UnpackedActs,
    per: usize,
    out: &RowsOut,
) {
    acts.assert_laid_out_for(per, QK_K);
    assert!(acts.offset == B::SMALL_CODES, "activations laid out otherwise");
    assert!(
        !super::takes_offset_pass::<B>() || B::SMALL_CODES,
        "minima and stored offsets are taken with offset activations only"
    );
    assert!(
        matches!(B::STORED_OFFSET, 0 | 1 | 32),
        "a stored offset these kernels have no pass for"
    );
    let n = acts.tokens();
    // SAFETY: this kernel sits only in the AVX2 column of the type table, used after
    // `Isa::Avx2.supported()` (AVX2, FMA) said yes.
    let unpack = |b: &B, c: &mut [i8], l: &mut [i16]| unsafe { b.unpack_avx2(c, l) };
    with_rows(&w[first * per..(first + m) * per], per, unpack, |rows| {
        SCALES.with_borrow_mut(|scales| {
            // SAFETY: AVX2 as above.
            unsafe { scales.fill(rows, B::SMALL_CODES) };
            visit_passes((n, m, TOKEN_BLOCK), (first, out), |r, t0, k| {
                let row = (rows.row(r), scales.row(r, per));
                macro_rules! pass {
                    ($($k:literal)*) => {
                        match k {
                            $($k if B::MIN => {
                                // SAFETY: AVX2 and FMA as above; `acts` holds tokens
                                // t0..t0 + k of `per` super-blocks.
                                unsafe { tile::<$k, true, true, 0, false>(row, acts, t0) }
                            })*
                            $($k if B::STORED_OFFSET == 1 => {
                                // SAFETY: as above.
                                unsafe { tile::<$k, true, false, 1, false>(row, acts, t0) }
                            })*
                            $($k if B::STORED_OFFSET == 32 => {
                                // SAFETY: as above.
                                unsafe { tile::<$k, true, false, 32, false>(row, acts, t0) }
                            })*
                            $($k if B::MIN_LANES => {
                                // SAFETY: as above.
                                unsafe { tile::<$k, true, false, 0, true>(row, acts, t0) }
                            })*
                            $($k if B::SMALL_CODES => {
                                // SAFETY: as above.
                                unsafe { tile::<$k, true, false, 0, false>(row, acts, t0) }
                            })*
                            $($k => {
                                // SAFETY: as above.
                                unsafe { tile::<$k, false, false, 0, false>(row, acts, t0) }
                            })*
                            _ => unreachable!("at most {TOKENS} tokens per pass"),
                        }
                    };
                }
                pass!(1 2 3 4 5 6 7 8).map(|s| B::MULT * s)
            });
        })
    })
}

/// What every pass over a task's rows needs of their scales, computed once per task: each
/// run's two scales as one register of i16s, and (for offset activations) each super-block's
/// offset share, `128 * ls * (sum of each lane's codes)` per lane.
#[derive(Default)]
struct RunScales {
    ls: Vec<[i16; 16]>,
    offset: Vec<[i32; 8]>,
    /// [`Unpack::MIN`], [`Unpack::MIN_LANES`]: each super-block's minima, one per 16 values,
    /// as i16s.
    mins: Vec<[i16; 16]>,
}

/// One row's run scales, offset shares and minima.
type RowScales<'a> = (&'a [[i16; 16]], &'a [[i32; 8]], &'a [[i16; 16]]);

thread_local! {
    static SCALES: std::cell::RefCell<RunScales> = std::cell::RefCell::new(RunScales::default());
}

impl RunScales {
    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn fill(&mut self, rows: &super::UnpackedRows, offset: bool) {
        let superblocks = rows.d.len();
        self.mins.clear();
        self.mins.extend(rows.mins.iter().map(|m| m.map(i16::from)));
        self.ls.resize(superblocks * QK_K / 32, [0; 16]);
        self.offset.resize(if offset { superblocks } else { 0 }, [0; 8]);
        let ones = _mm256_set1_epi8(1);
        for (i, ls) in self.ls.chunks_exact_mut(QK_K / 32).enumerate() {
            let mut sum = _mm256_setzero_si256();
            for (r, l) in ls.iter_mut().enumerate() {
                let (l0, l1) = (rows.ls[16 * i + 2 * r], rows.ls[16 * i + 2 * r + 1]);
                let v = _mm256_set_m128i(_mm_set1_epi16(l1), _mm_set1_epi16(l0));
                // SAFETY: 32 bytes into a 32-byte array; unaligned store.
                unsafe { _mm256_storeu_si256(l.as_mut_ptr() as *mut __m256i, v) };
                if offset {
                    let at = QK_K * i + 32 * r;
                    // SAFETY: at + 32 <= codes.len(); unaligned load.
                    let q = unsafe {
                        _mm256_loadu_si256(rows.codes.as_ptr().add(at) as *const __m256i)
                    };
                    sum =
                        _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(ones, q), v));
                }
            }
            if offset {
                let v = _mm256_slli_epi32::<7>(sum);
                // SAFETY: 32 bytes into a 32-byte array; unaligned store.
                unsafe { _mm256_storeu_si256(self.offset[i].as_mut_ptr() as *mut __m256i, v) };
            }
        }
    }

    /// Row `r`'s run scales, offset shares and minima (rows of `per` super-blocks).
    fn row(&self, r: usize, per: usize) -> RowScales<'_> {
        let runs = &self.ls[r * per * QK_K / 32..(r + 1) * per * QK_K / 32];
        let offset =
            if self.offset.is_empty() { &[][..] } else { &self.offset[r * per..(r + 1) * per] };
        let mins = if self.mins.is_empty() { &[][..] } else { &self.mins[r * per..(r + 1) * per] };
        (runs, offset, mins)
    }
}

/// `N` (1..=8) tokens from `t0` against the unpacked row: each run's codes loaded once for
/// all (a constant `N` keeps every token's integer sums in registers). With `OFFSET`, the
/// activations are unsigned (`y + 128`) and multiply the signed codes directly; the offset's
/// share, `128 * ls * (sum of each lane's codes)`, is the row's own and is taken off each
/// token's lanes per super-block, so every lane holds exactly the matvec kernel's integer.
///
/// # Safety
/// The CPU has AVX2 and FMA; `acts` holds tokens `t0..t0 + N` of `row.d.len()` super-blocks.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<
    const N: usize,
    const OFFSET: bool,
    const MIN: bool,
    const PLUS: i32,
    const MINL: bool,
>(
    (row, (run_ls, offsets, mins16)): (RowCodes, RowScales),
    acts: &UnpackedActs,
    t0: usize,
) -> [f32; TOKENS] {
    let per = row.d.len();
    assert!(run_ls.len() == per * QK_K / 32 && (!OFFSET || offsets.len() == per));
    assert!(!(MIN || MINL) || (mins16.len() == per && row.dmin.len() == per));
    assert!(!(MIN || PLUS != 0 || MINL) || acts.bsums.len() >= (t0 + N) * per);
    let mut mins = [0.0f32; N];
    debug_assert!(acts.per == per && acts.d.len() >= (t0 + N) * per);
    let stride = per * QK_K;
    // SAFETY: tokens t0..t0 + N lie inside the buffer (the caller's contract).
    let base = unsafe { acts.q.as_ptr().add(t0 * stride) };
    let mut acc = [_mm256_setzero_ps(); N];
    for (i, &dw) in row.d.iter().enumerate() {
        let mut sumi = [_mm256_setzero_si256(); N];
        for r in 0..QK_K / 32 {
            let at = QK_K * i + 32 * r;
            // SAFETY: at + 32 <= codes.len() (256 per super-block); unaligned load.
            let q = unsafe { _mm256_loadu_si256(row.codes.as_ptr().add(at) as *const __m256i) };
            // SAFETY: 32 bytes; unaligned load.
            let ls =
                unsafe { _mm256_loadu_si256(run_ls[QK_K / 32 * i + r].as_ptr() as *const __m256i) };
            if OFFSET {
                for (t, s) in sumi.iter_mut().enumerate() {
                    // SAFETY: token t0 + t's values at + 32 <= stride stay in the buffer.
                    let y =
                        unsafe { _mm256_loadu_si256(base.add(t * stride + at) as *const __m256i) };
                    // (y + 128) x q: pairs within ±2 * 255 * 64, inside an i16.
                    let p = _mm256_maddubs_epi16(y, q);
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ls));
                }
            } else {
                let aq = _mm256_sign_epi8(q, q);
                for (t, s) in sumi.iter_mut().enumerate() {
                    // SAFETY: as above.
                    let y =
                        unsafe { _mm256_loadu_si256(base.add(t * stride + at) as *const __m256i) };
                    // |q| x sign(y, q): pairs of products fit i16 (codes at most 127).
                    let p = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(y, q));
                    *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ls));
                }
            }
        }
        let offset = if OFFSET {
            // SAFETY: 32 bytes; unaligned load.
            unsafe { _mm256_loadu_si256(offsets[i].as_ptr() as *const __m256i) }
        } else {
            _mm256_setzero_si256()
        };
        for (t, (a, s)) in acc.iter_mut().zip(sumi).enumerate() {
            let mut s = if OFFSET { _mm256_sub_epi32(s, offset) } else { s };
            if PLUS != 0 {
                // SAFETY: 16 scales of this super-block and 16 sums, 32 bytes each;
                // unaligned loads.
                let (sc, b) = unsafe {
                    (
                        _mm256_loadu_si256(row.ls[16 * i..16 * i + 16].as_ptr() as *const __m256i),
                        _mm256_loadu_si256(
                            acts.bsums[(t0 + t) * per + i].as_ptr() as *const __m256i
                        ),
                    )
                };
                let sums = _mm256_madd_epi16(sc, b);
                let stored = match PLUS {
                    1 => sums,
                    32 => _mm256_slli_epi32::<5>(sums),
                    _ => _mm256_mullo_epi32(sums, _mm256_set1_epi32(PLUS)),
                };
                s = _mm256_sub_epi32(s, stored);
            }
            let dy = acts.d[(t0 + t) * per + i];
            if MINL {
                // The matvec kernel's steps: the minima against the sums per 16 in eight
                // lanes, times `-dy * dmin`, added before the codes.
                // SAFETY: 32 bytes each; unaligned loads.
                let (m, b) = unsafe {
                    (
                        _mm256_loadu_si256(mins16[i].as_ptr() as *const __m256i),
                        _mm256_loadu_si256(
                            acts.bsums[(t0 + t) * per + i].as_ptr() as *const __m256i
                        ),
                    )
                };
                let dmin = _mm256_set1_ps(-dy * row.dmin[i]);
                *a = _mm256_fmadd_ps(dmin, _mm256_cvtepi32_ps(_mm256_madd_epi16(m, b)), *a);
            }
            let d = _mm256_set1_ps(dw * dy);
            *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), *a);
            if MIN {
                // The matvec kernel's steps: the minima times the sums per 16, exact in
                // i32, then `dmin * dy * that` added up apart.
                // SAFETY: 32 bytes each; unaligned loads.
                let (m, b) = unsafe {
                    (
                        _mm256_loadu_si256(mins16[i].as_ptr() as *const __m256i),
                        _mm256_loadu_si256(
                            acts.bsums[(t0 + t) * per + i].as_ptr() as *const __m256i
                        ),
                    )
                };
                mins[t] += row.dmin[i] * dy * hsum_i32(_mm256_madd_epi16(m, b)) as f32;
            }
        }
    }
    let mut out = [0.0; TOKENS];
    for ((o, a), m) in out.iter_mut().zip(acc).zip(mins) {
        *o = if MIN { hsum(a) - m } else { hsum(a) };
    }
    out
}
