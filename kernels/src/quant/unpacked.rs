//! Prefill for the Q8_K-activation types whose super-blocks are signed codes with a scale per
//! 16 values (the grid types without a shift, IQ4_XS, Q3_K): a weight row is unpacked once
//! into plain `i8` codes, then dotted with every token's activations, eight tokens per pass so
//! each code vector is loaded once for eight. Decode unpacks each super-block for one token;
//! prefill would otherwise unpack the same row again for every token. The activations are laid
//! out once per product ([`UnpackedActs`]). The integer lanes, the fused per-super-block
//! accumulate and the final sum are the decode kernels', so every output equals matvec's bit
//! for bit.

use std::cell::RefCell;

use super::codes::{GridBlock, Lanes, Run};
use super::{BlockQ8K, BlockQ8_0, BlockQ8_1, QK, QK_K};
use crate::gemm::RowsOut;

/// Weight rows as plain codes, one after another.
#[derive(Default)]
pub(crate) struct UnpackedRows {
    /// Every value's signed code, in value order.
    codes: Vec<i8>,
    /// The scale of each run of 16 values.
    ls: Vec<i16>,
    /// Each super-block's weight scale.
    d: Vec<f32>,
    /// For the types with minima ([`Unpack::MIN`]): each super-block's scale of its minima, and
    /// the minima of its eight sub-blocks; else empty.
    dmin: Vec<f32>,
    mins: Vec<[u8; 8]>,
    /// Super-blocks per row.
    per: usize,
}

/// One unpacked row.
#[derive(Clone, Copy)]
pub(crate) struct RowCodes<'a> {
    codes: &'a [i8],
    ls: &'a [i16],
    d: &'a [f32],
    // Read by the AVX2 kernels only (the minima types have no scalar many-token kernel).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    dmin: &'a [f32],
}

impl UnpackedRows {
    fn reset(&mut self, superblocks: usize, per: usize, min: bool) {
        // Every entry is written by the unpacking before it is read: no need to clear.
        self.codes.resize(superblocks * QK_K, 0);
        self.ls.resize(superblocks * QK_K / 16, 0);
        self.d.resize(superblocks, 0.0);
        let with_min = if min { superblocks } else { 0 };
        self.dmin.resize(with_min, 0.0);
        self.mins.resize(with_min, [0; 8]);
        self.per = per;
    }

    fn row(&self, r: usize) -> RowCodes<'_> {
        let (p, n) = (self.per, self.per * (r + 1));
        RowCodes {
            codes: &self.codes[QK_K * p * r..QK_K * n],
            ls: &self.ls[16 * p * r..16 * n],
            d: &self.d[p * r..n],
            dmin: if self.dmin.is_empty() { &[] } else { &self.dmin[p * r..n] },
        }
    }
}

/// A type whose rows unpack to codes with a scale per 16 (and one per super-block).
pub(crate) trait Unpack: Copy {
    /// ggml's factor on the final sum.
    const MULT: f32;
    /// Whether every code is within ±64, so that an activation offset to unsigned (at most 255)
    /// times a code, summed in pairs, still fits an i16 (`vpmaddubsw` does not saturate).
    const SMALL_CODES: bool;
    /// Whether values carry a minimum per sub-block (`d * sc * q - dmin * m`: Q4_K, Q5_K),
    /// summed apart against the activations' sums per 16, as the matvec kernels do.
    const MIN: bool = false;
    /// Writes super-block `b`'s 256 codes, 16 scales and weight scale.
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32;
    /// Whether the codes are stored plus 32 (Q6_K), the matvec kernel taking
    /// `32 * (scales . sums per 16)` off each super-block's lanes; the codes here are the stored
    /// ones, and so is that step.
    const PLUS32: bool = false;
    /// [`Self::MIN`]: the scale of the minima and the eight sub-blocks' minima.
    fn minima(&self) -> (f32, [u8; 8]) {
        (0.0, [0; 8])
    }
    /// [`Self::unpack`] with AVX2, where a type has a faster way to the same codes.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        self.unpack(codes, ls)
    }
}

/// The grid types without a shift: code = grid value times its sign, eight bytes at a time.
pub(crate) fn unpack_grid<B: GridBlock>(b: &B, codes: &mut [i8], ls: &mut [i16]) -> f32 {
    for r in 0..QK_K / 32 {
        let Run { grid, signs, ls: l } = b.run(r);
        for ((c, &g), &s) in codes[32 * r..32 * r + 32].chunks_exact_mut(8).zip(&grid).zip(&signs) {
            let word = if B::SIGNED { g } else { apply_signs(g, s) };
            c.copy_from_slice(&bytemuck::cast::<[u8; 8], [i8; 8]>(word.to_le_bytes()));
        }
        ls[2 * r..2 * r + 2].copy_from_slice(&l);
    }
    b.scale()
}

/// Eight grid magnitudes times their signs (`0x01` keep, `0xFF` negate), bytewise in one word:
/// a negated byte is `!g + 1`, and the `+ 1` is added below bit 7 so no carry crosses bytes.
#[inline]
fn apply_signs(g: u64, s: u64) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let one = (s >> 7) & LOW;
    let x = g ^ (one * 0xFF);
    ((x & (LOW * 0x7F)) + one) ^ (x & (LOW * 0x80))
}

thread_local! {
    static ROWS: RefCell<UnpackedRows> = RefCell::new(UnpackedRows::default());
}

/// Unpacks `w` (rows of `per` super-blocks) with `unpack` into this thread's scratch rows and
/// hands them to `f`.
fn with_rows<B: Unpack, R>(
    w: &[B],
    per: usize,
    unpack: impl Fn(&B, &mut [i8], &mut [i16]) -> f32,
    f: impl FnOnce(&UnpackedRows) -> R,
) -> R {
    ROWS.with_borrow_mut(|rows| {
        rows.reset(w.len(), per, B::MIN);
        for (i, b) in w.iter().enumerate() {
            let codes = &mut rows.codes[QK_K * i..QK_K * (i + 1)];
            rows.d[i] = unpack(b, codes, &mut rows.ls[16 * i..16 * (i + 1)]);
            if B::MIN {
                (rows.dmin[i], rows.mins[i]) = b.minima();
            }
        }
        f(rows)
    })
}

/// Every token's quantised activations for the many-token kernels, laid out once per product:
/// each token's values in one contiguous run (offset by 128 to unsigned bytes for kernels whose
/// codes allow it: [`Unpack::SMALL_CODES`]), its scale per block and, for Q8_1, its sum per
/// block (`d * Σ q`).
#[derive(Default)]
pub(crate) struct UnpackedActs {
    q: Vec<u8>,
    pub(crate) d: Vec<f32>,
    pub(crate) s: Vec<f32>,
    /// Q8_K: each super-block's sums per 16 values.
    bsums: Vec<[i16; 16]>,
    /// Blocks per token.
    pub(crate) per: usize,
    /// Values per block.
    block: usize,
    pub(crate) offset: bool,
}

impl UnpackedActs {
    fn start(&mut self, per: usize, block: usize, offset: bool) -> u8 {
        (self.per, self.block, self.offset) = (per, block, offset);
        self.q.clear();
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        // The offset in two's complement: y + 128 = y ^ 0x80 as an unsigned byte.
        if offset {
            0x80
        } else {
            0
        }
    }

    /// Lays out Q8_K tokens of `per` super-blocks each, reusing the buffers.
    pub(crate) fn fill_q8k(&mut self, xs: &[BlockQ8K], per: usize, offset: bool) {
        let flip = self.start(per, QK_K, offset);
        for y in xs {
            self.q.extend(y.qs.iter().map(|&v| v as u8 ^ flip));
            self.d.push(y.d);
            self.bsums.push(y.bsums);
        }
    }

    /// Lays out Q8_0 tokens of `per` blocks each.
    pub(crate) fn fill_q8_0(&mut self, xs: &[BlockQ8_0], per: usize, offset: bool) {
        let flip = self.start(per, QK, offset);
        for y in xs {
            self.q.extend(y.qs.iter().map(|&v| v as u8 ^ flip));
            self.d.push(y.d.to_f32());
        }
    }

    /// Lays out Q8_1 tokens of `per` blocks each (never offset: the codes they meet are
    /// unsigned).
    pub(crate) fn fill_q8_1(&mut self, xs: &[BlockQ8_1], per: usize) {
        self.start(per, QK, false);
        for y in xs {
            self.q.extend(y.qs.iter().map(|&v| v as u8));
            self.d.push(y.d.to_f32());
            self.s.push(y.s.to_f32());
        }
    }

    pub(crate) fn tokens(&self) -> usize {
        self.d.len() / self.per.max(1)
    }

    /// Token `t`'s values, as laid out.
    pub(crate) fn token(&self, t: usize) -> &[u8] {
        let stride = self.per * self.block;
        &self.q[t * stride..(t + 1) * stride]
    }

    /// Token `t`'s value `v`, signed.
    fn value(&self, t: usize, v: usize) -> i32 {
        let flip = if self.offset { 0x80 } else { 0 };
        (self.token(t)[v] ^ flip) as i8 as i32
    }
}

/// A many-token kernel: rows `first..first + m` of a matrix (`per_row` super-blocks each)
/// against every token laid out in `acts`, into `out`.
pub(crate) type UnpackedTokensFn = fn(&[u8], usize, usize, &UnpackedActs, usize, &RowsOut);

/// The scalar twin, straight from the definition of the decode kernels' lanes.
pub(crate) fn dot_tokens<B: Unpack>(
    w: &[B],
    (first, m): (usize, usize),
    acts: &UnpackedActs,
    per: usize,
    out: &RowsOut,
) {
    assert!(acts.per == per && acts.block == QK_K, "activations laid out otherwise");
    assert!(!B::MIN && !B::PLUS32, "Q4_K, Q5_K and Q6_K have AVX2 many-token kernels only");
    with_rows(&w[first * per..(first + m) * per], per, B::unpack, |rows| {
        for r in 0..m {
            let row = rows.row(r);
            for t in 0..acts.tokens() {
                let mut acc = Lanes::default();
                for i in 0..per {
                    let mut lanes = [0i32; 8];
                    let codes = &row.codes[QK_K * i..QK_K * (i + 1)];
                    for (v, &c) in codes.iter().enumerate() {
                        let y = acts.value(t, QK_K * i + v);
                        lanes[(v % 32) / 4] += row.ls[16 * i + v / 16] as i32 * c as i32 * y;
                    }
                    acc.fma(row.d[i] * acts.d[t * per + i], &lanes);
                }
                // SAFETY: rows first..first + m are this task's (handed out once each).
                unsafe { out.write(t, first + r, B::MULT * acc.sum()) };
            }
        }
    })
}

/// Tokens per pass of the AVX2 many-token kernels: one register of sums each.
#[cfg(target_arch = "x86_64")]
pub(crate) const TOKENS: usize = 8;

/// The order in which the AVX2 many-token kernels visit a task of `m` rows and `n` tokens: tokens
/// in blocks of `token_block` (a block's activations stay in cache while every row of the task
/// passes over them), each row over a block in passes of up to [`TOKENS`]. `pass(r, t0, k)` gives
/// row `r`'s sums for tokens `t0..t0 + k`, written to row `first + r` of `out`.
#[cfg(target_arch = "x86_64")]
pub(crate) fn visit_passes(
    (n, m, token_block): (usize, usize, usize),
    (first, out): (usize, &RowsOut),
    mut pass: impl FnMut(usize, usize, usize) -> [f32; TOKENS],
) {
    for block in (0..n).step_by(token_block) {
        let end = (block + token_block).min(n);
        for r in 0..m {
            for t0 in (block..end).step_by(TOKENS) {
                let k = (end - t0).min(TOKENS);
                for (t, s) in pass(r, t0, k).into_iter().take(k).enumerate() {
                    // SAFETY: rows first..first + m are this task's (handed out once each).
                    unsafe { out.write(t0 + t, first + r, s) };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{
        visit_passes, with_rows, GridBlock, RowCodes, RowsOut, Run, Unpack, UnpackedActs, QK_K,
        TOKENS,
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
        let words =
            |w: [u64; 4]| _mm256_set_epi64x(w[3] as i64, w[2] as i64, w[1] as i64, w[0] as i64);
        for r in 0..QK_K / 32 {
            let Run { grid, signs, ls: l } = b.run(r);
            let g = words(grid);
            // Sign bytes are 1 or -1: `vpsignb` keeps or negates.
            let c = if B::SIGNED { g } else { _mm256_sign_epi8(g, words(signs)) };
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
        assert!(
            acts.per == per && acts.block == QK_K && acts.offset == B::SMALL_CODES,
            "activations laid out otherwise"
        );
        assert!(
            !(B::MIN || B::PLUS32) || B::SMALL_CODES,
            "minima and stored offsets are taken with offset activations only"
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
                                    unsafe { tile::<$k, true, true, false>(row, acts, t0) }
                                })*
                                $($k if B::PLUS32 => {
                                    // SAFETY: as above.
                                    unsafe { tile::<$k, true, false, true>(row, acts, t0) }
                                })*
                                $($k if B::SMALL_CODES => {
                                    // SAFETY: as above.
                                    unsafe { tile::<$k, true, false, false>(row, acts, t0) }
                                })*
                                $($k => {
                                    // SAFETY: as above.
                                    unsafe { tile::<$k, false, false, false>(row, acts, t0) }
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
        /// [`Unpack::MIN`]: each super-block's minima, each twice (one per 16 values), as i16s.
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
            self.mins.extend(rows.mins.iter().map(|m| std::array::from_fn(|j| m[j / 2] as i16)));
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
                        sum = _mm256_add_epi32(
                            sum,
                            _mm256_madd_epi16(_mm256_maddubs_epi16(ones, q), v),
                        );
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
            let mins =
                if self.mins.is_empty() { &[][..] } else { &self.mins[r * per..(r + 1) * per] };
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
    unsafe fn tile<const N: usize, const OFFSET: bool, const MIN: bool, const PLUS32: bool>(
        (row, (run_ls, offsets, mins16)): (RowCodes, RowScales),
        acts: &UnpackedActs,
        t0: usize,
    ) -> [f32; TOKENS] {
        let per = row.d.len();
        assert!(run_ls.len() == per * QK_K / 32 && (!OFFSET || offsets.len() == per));
        assert!(!MIN || (mins16.len() == per && row.dmin.len() == per));
        assert!(!(MIN || PLUS32) || acts.bsums.len() >= (t0 + N) * per);
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
                let ls = unsafe {
                    _mm256_loadu_si256(run_ls[QK_K / 32 * i + r].as_ptr() as *const __m256i)
                };
                if OFFSET {
                    for (t, s) in sumi.iter_mut().enumerate() {
                        // SAFETY: token t0 + t's values at + 32 <= stride stay in the buffer.
                        let y = unsafe {
                            _mm256_loadu_si256(base.add(t * stride + at) as *const __m256i)
                        };
                        // (y + 128) x q: pairs within ±2 * 255 * 64, inside an i16.
                        let p = _mm256_maddubs_epi16(y, q);
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ls));
                    }
                } else {
                    let aq = _mm256_sign_epi8(q, q);
                    for (t, s) in sumi.iter_mut().enumerate() {
                        // SAFETY: as above.
                        let y = unsafe {
                            _mm256_loadu_si256(base.add(t * stride + at) as *const __m256i)
                        };
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
                if PLUS32 {
                    // SAFETY: 16 scales of this super-block and 16 sums, 32 bytes each;
                    // unaligned loads.
                    let (sc, b) = unsafe {
                        (
                            _mm256_loadu_si256(
                                row.ls[16 * i..16 * i + 16].as_ptr() as *const __m256i
                            ),
                            _mm256_loadu_si256(
                                acts.bsums[(t0 + t) * per + i].as_ptr() as *const __m256i
                            ),
                        )
                    };
                    s = _mm256_sub_epi32(s, _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc, b)));
                }
                let dy = acts.d[(t0 + t) * per + i];
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
}

#[cfg(test)]
mod tests {
    use super::apply_signs;

    /// The grid types' codes fit [`super::Unpack::SMALL_CODES`]: every magnitude in their tables.
    #[test]
    fn grid_magnitudes_are_small_codes() {
        use crate::quant::iq_grids::{IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
        let bytes64 =
            IQ2XXS_GRID.iter().chain(&IQ2XS_GRID).chain(&IQ2S_GRID).flat_map(|w| w.to_le_bytes());
        let bytes32 = IQ3XXS_GRID.iter().chain(&IQ3S_GRID).flat_map(|w| w.to_le_bytes());
        assert!(bytes64.chain(bytes32).all(|b| b <= 64));
    }

    #[test]
    fn apply_signs_negates_each_byte_alone() {
        // Every byte value against both signs, next to neighbours that would catch a carry.
        for g in 0..=255u8 {
            for (neg, neighbour) in [(false, 0xFFu8), (true, 0x00), (true, 0xFF), (false, 0x80)] {
                let gw = u64::from_le_bytes([neighbour, g, neighbour, g, 0, g, 0xFF, g]);
                let sb = if neg { 0xFF } else { 0x01 };
                let sw = u64::from_le_bytes([0xFF, sb, 0x01, sb, 0xFF, sb, 0x01, sb]);
                let want: Vec<u8> = gw
                    .to_le_bytes()
                    .iter()
                    .zip(sw.to_le_bytes())
                    .map(|(&g, s)| (g as i8).wrapping_mul(s as i8) as u8)
                    .collect();
                assert_eq!(apply_signs(gw, sw).to_le_bytes().to_vec(), want, "g {g} neg {neg}");
            }
        }
    }
}
