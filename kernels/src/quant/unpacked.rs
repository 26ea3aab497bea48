//! Prefill for the Q8_K-activation types whose super-blocks are codes with a scale per 16
//! values (the grid types without a shift, IQ4_XS, the K-quants Q2_K..Q6_K with their minima or
//! stored offsets, TQ1_0 and TQ2_0): a weight row is unpacked once
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
    /// For the types with minima ([`Unpack::MIN`], [`Unpack::MIN_LANES`]): each super-block's
    /// scale of its minima, and the minimum of each run of 16 values; else empty.
    dmin: Vec<f32>,
    mins: Vec<[u8; 16]>,
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
        self.mins.resize(with_min, [0; 16]);
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
    /// What the codes are stored plus (Q6_K: 32, the ternary types: 1; 0: nothing), the matvec
    /// kernel taking `STORED_OFFSET * (scales . sums per 16)` off each super-block's lanes; the
    /// codes here are the stored ones, and so is that step.
    const STORED_OFFSET: i32 = 0;
    /// Whether values carry a minimum per run of 16 (`d * sc * q - dmin * m`: Q2_K) that the
    /// matvec kernel adds into its float lanes before the codes (`-dmin * dy * (m . sums)`).
    const MIN_LANES: bool = false;
    /// [`Self::MIN`] / [`Self::MIN_LANES`]: the scale of the minima and each run of 16 values'
    /// minimum.
    fn minima(&self) -> (f32, [u8; 16]) {
        (0.0, [0; 16])
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
        rows.reset(w.len(), per, B::MIN || B::MIN_LANES);
        for (i, b) in w.iter().enumerate() {
            let codes = &mut rows.codes[QK_K * i..QK_K * (i + 1)];
            rows.d[i] = unpack(b, codes, &mut rows.ls[16 * i..16 * (i + 1)]);
            if B::MIN || B::MIN_LANES {
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

    /// Panics unless these activations were laid out for `per` blocks of `block` values a row.
    pub(crate) fn assert_laid_out_for(&self, per: usize, block: usize) {
        assert!(self.per == per && self.block == block, "activations laid out otherwise");
    }

    /// Token `t`'s value `v`, signed.
    fn value(&self, t: usize, v: usize) -> i32 {
        let flip = if self.offset { 0x80 } else { 0 };
        (self.token(t)[v] ^ flip) as i8 as i32
    }
}

/// Whether `B`'s kernels take a pass against the activations' sums (minima, a stored offset,
/// per-lane minima), which only the AVX2 kernels have.
pub(crate) fn takes_offset_pass<B: Unpack>() -> bool {
    B::MIN || B::STORED_OFFSET != 0 || B::MIN_LANES
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
    acts.assert_laid_out_for(per, QK_K);
    assert!(
        !takes_offset_pass::<B>(),
        "Q2_K, Q4_K, Q5_K, Q6_K and the ternary types have AVX2 many-token kernels only"
    );
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
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod grid_avx2;

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
