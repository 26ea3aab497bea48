//! Prefill GEMM for the super-block types (the K-quants, the grid i-quants without a shift,
//! IQ4_XS) as outer products on AVX-512 VNNI: 8 weight rows x 16 tokens per pass. The
//! activations are packed once per product so that each 64-byte register holds 4 consecutive
//! values of 16 tokens; each weight row's 4 codes are broadcast and one `vpdpbusd` adds 64
//! products into the 16 tokens' i32 sums. So a multiply-add costs about 1/64 of an
//! instruction, against 1/16 for the dot-product tiles (`codes.rs`, `kquant.rs`), which fold
//! their sums into the matvec kernels' lanes.
//!
//! Codes are unsigned (signed codes offset by a power of two, corrected from the activations'
//! sums per 16); each sub-block's exact i32 sum is scaled in i32, the offset and the minima come
//! from the activations' sums per 16 (`vpmaddwd` over pairs of them), and one float step per
//! super-block scales each output. Every output depends on its own row and token only, so
//! results do not change with how tokens or rows are grouped (threads, chunks, batches), but they
//! round differently from matvec: [`super::Tile::Wide`] is not exact, and where each token must
//! equal its decode (`TokenKernels::PerToken`) the type's exact tile runs instead.

use std::arch::x86_64::*;

use super::RowsOut;
use crate::dot::avx512::dpwssd;
use crate::quant::codes::GridBlock;
use crate::quant::grid_avx512::{biased_codes, GridPairs};
use crate::quant::iq4_nl::KVALUES_IQ4NL;
use crate::quant::unpacked::Unpack;
use crate::quant::{BlockIq4Xs, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, QK_K};

/// Tokens per pass (one 512-bit register of i32 sums per row).
const BAND: usize = 16;
/// Rows per pass.
const ROWS: usize = 8;
/// Groups of 4 values per super-block.
const GROUPS: usize = QK_K / 4;

/// One super-block of one weight row, unpacked.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct WideRow {
    /// The 256 codes, unsigned, in value order.
    q: [u8; QK_K],
    /// Each sub-block's scale.
    sc: [i32; 16],
    /// Per pair of runs of 16: the two scales that multiply their activation sums, as i16s (a
    /// sub-block of 32 repeats its scale), for the offset's correction.
    sc_pairs: [i32; 8],
    /// The same for the minima (types with one).
    min_pairs: [i32; 8],
    d: f32,
    dmin: f32,
}

const _: () = assert!(std::mem::size_of::<WideRow>() == 448);

impl WideRow {
    const ZERO: WideRow = WideRow {
        q: [0; QK_K],
        sc: [0; 16],
        sc_pairs: [0; 8],
        min_pairs: [0; 8],
        d: 0.0,
        dmin: 0.0,
    };
}

/// Two i16s in one i32 lane, the first in the low half (what `vpmaddwd` pairs).
fn pair(lo: i32, hi: i32) -> i32 {
    (lo as i16 as u16 as i32) | ((hi as i16 as i32) << 16)
}

/// Per-16 values of a sub-block layout: scale `i` of `per16` (16 entries) into pairs.
fn pairs_of(per16: &[i32; 16]) -> [i32; 8] {
    std::array::from_fn(|j| pair(per16[2 * j], per16[2 * j + 1]))
}

/// A super-block type these passes can read.
pub(crate) trait WideBlock: Copy {
    /// Values per scale (16 or 32).
    const SUB: usize;
    /// log2 of the offset added to make the codes unsigned, or None.
    const BIAS_SHIFT: Option<u32>;
    /// Whether values are `d * sc * q - dmin * m` (a minimum per sub-block).
    const MIN: bool = false;
    /// ggml's factor on the final sum.
    const MULT: f32 = 1.0;
    /// Writes `out`'s codes, `d` and `sc`, and each of `sc_pairs` (with a [`Self::BIAS_SHIFT`]),
    /// `min_pairs` and `dmin` (with a [`Self::MIN`]) that [`wide_pass`] reads for this type:
    /// `out` holds another block's row before (the row buffer is reused, not cleared).
    fn unpack(&self, out: &mut WideRow);
}

/// The codes types: signed codes with a scale per 16 (repeated where a type scales 32).
macro_rules! wide_codes {
    ($($block:ty => $sub:literal),* $(,)?) => {$(
        impl WideBlock for $block {
            const SUB: usize = $sub;
            const BIAS_SHIFT: Option<u32> = Some(7);
            const MULT: f32 = <$block as Unpack>::MULT;
            fn unpack(&self, out: &mut WideRow) {
                let mut codes = [0i8; QK_K];
                let mut ls = [0i16; QK_K / 16];
                out.d = Unpack::unpack(self, &mut codes, &mut ls);
                for (q, &c) in out.q.iter_mut().zip(&codes) {
                    *q = (c as u8) ^ 0x80;
                }
                let per16: [i32; 16] = std::array::from_fn(|i| ls[i] as i32);
                out.sc = std::array::from_fn(|s| per16[(s * $sub / 16).min(15)]);
                out.sc_pairs = pairs_of(&per16);
            }
        }
    )*};
}

wide_codes!(crate::quant::BlockQ3K => 16);

impl WideBlock for BlockIq4Xs {
    const SUB: usize = 32;
    const BIAS_SHIFT: Option<u32> = Some(7);
    fn unpack(&self, out: &mut WideRow) {
        // SAFETY: the wide tiles run only where the CPU has AVX-512 F/BW (`super::enabled`).
        unsafe { fill_iq4_xs(self, out) }
    }
}

/// IQ4_XS rows: each nibble looked up in the level table (offset by 128) with one byte shuffle,
/// two runs per 512-bit register.
///
/// # Safety
/// The CPU has AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn fill_iq4_xs(b: &BlockIq4Xs, out: &mut WideRow) {
    const LEVELS: [u8; 16] = {
        let mut t = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            t[i] = (KVALUES_IQ4NL[i] as u8) ^ 0x80;
            i += 1;
        }
        t
    };
    // SAFETY: 16 bytes; an unaligned 128-bit load reads exactly them.
    let table = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(LEVELS.as_ptr() as *const _) });
    let low = _mm512_set1_epi8(0x0F);
    // Each run's 16 bytes twice: low nibbles (its values 0..16), then high (16..32).
    let twice = _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0);
    for pair in 0..QK_K / 64 {
        // SAFETY: qs holds 128 bytes: 32 bytes at 32 * pair stay inside.
        let q = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * pair) as *const __m256i) };
        let x = _mm512_permutexvar_epi64(twice, _mm512_castsi256_si512(q));
        let lo = _mm512_and_si512(x, low);
        let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(x), low);
        let nibbles = _mm512_mask_blend_epi64(0b1100_1100, lo, hi);
        let codes = _mm512_shuffle_epi8(table, nibbles);
        // SAFETY: q holds 256 bytes: a 64-byte store at 64 * pair stays inside.
        unsafe { _mm512_storeu_si512(out.q.as_mut_ptr().add(64 * pair) as *mut _, codes) };
    }
    // One scale per run of 32: each run's two sixteens share it.
    let runs: [i32; 8] = std::array::from_fn(|r| b.run_scale(r));
    out.d = b.d.to_f32();
    out.sc = std::array::from_fn(|s| if s < 8 { runs[s] } else { 0 });
    out.sc_pairs = runs.map(|r| pair(r, r));
}

/// The grid types (magnitudes with sign bytes, no shift) straight from their runs, two runs per
/// 512-bit register: each code negated where its sign byte is set, then offset by 128.
macro_rules! wide_grid {
    ($($block:ty => $sub:literal),* $(,)?) => {$(
        impl WideBlock for $block {
            const SUB: usize = $sub;
            const BIAS_SHIFT: Option<u32> = Some(7);
            const MULT: f32 = <$block as GridBlock>::MULT;
            fn unpack(&self, out: &mut WideRow) {
                // SAFETY: the wide tiles run only where the CPU has AVX-512 F/BW
                // (`super::enabled`).
                unsafe { fill_grid(self, out) }
            }
        }
    )*};
}

wide_grid!(
    crate::quant::BlockIq2Xxs => 32,
    crate::quant::BlockIq2Xs => 16,
    crate::quant::BlockIq2S => 16,
    crate::quant::BlockIq3Xxs => 32,
    crate::quant::BlockIq3S => 32,
);

/// The signed grids (IQ1), whose values are `d ls (g ± 1/8)`: codes `8 g ± 1` (the shift's
/// sign per value), offset by 128, and ggml's factor over 8. Their rows unpack once per prompt
/// chunk, so the runs are read one by one.
macro_rules! wide_signed_grid {
    ($($block:ty => $sub:literal),* $(,)?) => {$(
        impl WideBlock for $block {
            const SUB: usize = $sub;
            const BIAS_SHIFT: Option<u32> = Some(7);
            const MULT: f32 = <$block as GridBlock>::MULT / 8.0;
            fn unpack(&self, out: &mut WideRow) {
                // SAFETY: the wide tiles run only where the CPU has AVX-512 F/BW
                // (`super::enabled`), so AVX2.
                unsafe { fill_signed_grid(self, out) }
            }
        }
    )*};
}

wide_signed_grid!(crate::quant::BlockIq1S => 32, crate::quant::BlockIq1M => 16);

/// The ternary types: codes -1..=1 offset by 128, one scale for every value.
macro_rules! wide_ternary {
    ($($block:ty => $codes:path),* $(,)?) => {$(
        impl WideBlock for $block {
            const SUB: usize = 16;
            const BIAS_SHIFT: Option<u32> = Some(7);
            fn unpack(&self, out: &mut WideRow) {
                let mut codes = [0i8; QK_K];
                $codes(self, &mut codes);
                for (q, c) in out.q.iter_mut().zip(codes) {
                    *q = (c as u8) ^ 0x80;
                }
                out.sc = [1; 16];
                out.sc_pairs = pairs_of(&[1; 16]);
                out.d = self.d.to_f32();
            }
        }
    )*};
}

wide_ternary!(
    crate::quant::BlockTq1_0 => crate::quant::tq1_0::codes,
    crate::quant::BlockTq2_0 => crate::quant::tq2_0::codes,
);

/// Fills `out` from a signed grid block's runs and shift signs: each code `8 g + s` (the grid
/// value, the shift's sign) offset by 128, a run of 32 per 256-bit register.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn fill_signed_grid<B: GridBlock + WideBlock>(b: &B, out: &mut WideRow) {
    debug_assert!(B::SIGNED);
    let mut per16 = [0i32; 16];
    for r in 0..QK_K / 32 {
        let run = b.run(r);
        // SAFETY: `[u64; 4]` and `__m256i` are both 32 plain bytes.
        let (g, s) = unsafe {
            (
                std::mem::transmute::<[u64; 4], __m256i>(run.grid),
                std::mem::transmute::<[u64; 4], __m256i>(b.delta_signs(r)),
            )
        };
        // 8 g per byte: the 16-bit shift carries a low byte's top bits into bits 8..11, which
        // the mask drops.
        let g8 = _mm256_and_si256(_mm256_slli_epi16::<3>(g), _mm256_set1_epi16(0xF8F8u16 as i16));
        let q = _mm256_xor_si256(_mm256_add_epi8(g8, s), _mm256_set1_epi8(0x80u8 as i8));
        // SAFETY: 32 r + 32 <= 256 = q's length; unaligned store.
        unsafe { _mm256_storeu_si256(out.q.as_mut_ptr().add(32 * r) as *mut __m256i, q) };
        per16[2 * r..2 * r + 2].copy_from_slice(&run.ls.map(i32::from));
    }
    out.d = b.scale();
    out.sc = std::array::from_fn(|s| per16[(s * <B as WideBlock>::SUB / 16).min(15)]);
    out.sc_pairs = pairs_of(&per16);
}

/// Fills `out` from a grid block's runs.
///
/// # Safety
/// The CPU has AVX-512 F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn fill_grid<B: GridPairs + WideBlock>(b: &B, out: &mut WideRow) {
    debug_assert!(!B::SIGNED, "signed grids carry a shift and have no wide tile");
    let mut per16 = [0i32; 16];
    if crate::dot::avx512_table_supported() {
        // SAFETY: just checked.
        unsafe { biased_codes(b, &mut out.q, &mut per16) };
    } else {
        fill_grid_runs(b, &mut out.q, &mut per16);
    }
    out.d = b.scale();
    out.sc = std::array::from_fn(|s| per16[(s * <B as WideBlock>::SUB / 16).min(15)]);
    out.sc_pairs = pairs_of(&per16);
}

/// [`fill_grid`]'s codes and scales from the block's runs (without the CPU features of the
/// gathered form, `biased_codes`).
#[target_feature(enable = "avx512f,avx512bw")]
fn fill_grid_runs<B: GridBlock>(b: &B, q: &mut [u8; QK_K], per16: &mut [i32; 16]) {
    let words = |w: [u64; 4]| w.map(|x| x as i64);
    for pair in 0..QK_K / 64 {
        let (lo, hi) = (b.run(2 * pair), b.run(2 * pair + 1));
        let (gl, gh, sl, sh) = (words(lo.grid), words(hi.grid), words(lo.signs), words(hi.signs));
        let g = _mm512_set_epi64(gh[3], gh[2], gh[1], gh[0], gl[3], gl[2], gl[1], gl[0]);
        let s = _mm512_set_epi64(sh[3], sh[2], sh[1], sh[0], sl[3], sl[2], sl[1], sl[0]);
        // Sign bytes are 0x01 or 0xFF: their top bit says negate.
        let neg = _mm512_movepi8_mask(s);
        let codes = _mm512_mask_sub_epi8(g, neg, _mm512_setzero_si512(), g);
        let biased = _mm512_xor_si512(codes, _mm512_set1_epi8(-128));
        // SAFETY: q holds 256 bytes: a 64-byte store at 64 * pair stays inside.
        unsafe { _mm512_storeu_si512(q.as_mut_ptr().add(64 * pair) as *mut _, biased) };
        per16[4 * pair..4 * pair + 4]
            .copy_from_slice(&[lo.ls[0], lo.ls[1], hi.ls[0], hi.ls[1]].map(i32::from));
    }
}

/// Q4_K / Q5_K through their dot-product tiles' unpacking (codes in value order, a scale per
/// value pair, a minimum per 16).
fn unpack_k4<B: super::kquant::KBlock>(b: &B, out: &mut WideRow) {
    let mut k = super::kquant::KRow::ZERO;
    b.unpack(&mut k);
    out.q = *k.codes();
    let (sc, mm) = (k.pair_scales(), k.sum_factors());
    out.sc = std::array::from_fn(|s| if s < 8 { sc[16 * s] as i32 } else { 0 });
    out.min_pairs = pairs_of(&std::array::from_fn(|i| mm[i] as i32));
    (out.d, out.dmin) = k.scales();
}

impl WideBlock for BlockQ4K {
    const SUB: usize = 32;
    const BIAS_SHIFT: Option<u32> = None;
    const MIN: bool = true;
    fn unpack(&self, out: &mut WideRow) {
        unpack_k4(self, out)
    }
}

impl WideBlock for BlockQ5K {
    const SUB: usize = 32;
    const BIAS_SHIFT: Option<u32> = None;
    const MIN: bool = true;
    fn unpack(&self, out: &mut WideRow) {
        unpack_k4(self, out)
    }
}

/// Q2_K: codes 0..=3, a 4-bit scale and a 4-bit minimum per 16 values.
impl WideBlock for crate::quant::BlockQ2K {
    const SUB: usize = 16;
    const BIAS_SHIFT: Option<u32> = None;
    const MIN: bool = true;
    fn unpack(&self, out: &mut WideRow) {
        for (q, c) in out.q.iter_mut().zip(crate::quant::q2_k::codes(self)) {
            *q = c as u8;
        }
        out.sc = std::array::from_fn(|j| (self.scales[j] & 0xF) as i32);
        out.min_pairs = pairs_of(&std::array::from_fn(|j| (self.scales[j] >> 4) as i32));
        (out.d, out.dmin) = (self.d.to_f32(), self.dmin.to_f32());
    }
}

impl WideBlock for BlockQ6K {
    const SUB: usize = 16;
    const BIAS_SHIFT: Option<u32> = Some(5);
    fn unpack(&self, out: &mut WideRow) {
        let mut k = super::kquant::KRow::ZERO;
        super::kquant::KBlock::unpack(self, &mut k);
        out.q = *k.codes();
        let per16: [i32; 16] = std::array::from_fn(|i| self.scales[i] as i32);
        out.sc = per16;
        out.sc_pairs = pairs_of(&per16);
        out.d = k.scales().0;
    }
}

/// Every token's Q8_K activations for the outer products: per band of 16 tokens and super-block,
/// each group of 4 values as 16 tokens x 4 bytes, the sums per 16 as i16 pairs (pair j: runs 2j
/// and 2j + 1) of the 16 tokens, and the 16 tokens' scales. A band's missing tokens are zeros.
#[derive(Default)]
pub(crate) struct WideActs {
    q: Vec<Lanes>,
    sums: Vec<Lanes>,
    d: Vec<Lanes>,
    /// Tokens packed.
    pub(crate) tokens: usize,
    /// Super-blocks per token.
    pub(crate) blocks: usize,
}

/// 64 bytes, aligned for one register.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Lanes(pub(super) [u8; 64]);

impl WideActs {
    /// Packs `n` tokens of `blocks` Q8_K blocks each, reusing the buffers.
    pub(crate) fn pack_into(&mut self, xs: &[BlockQ8K], blocks: usize) {
        let n = xs.len() / blocks.max(1);
        let bands = n.div_ceil(BAND);
        let zero = Lanes([0; 64]);
        self.q.clear();
        self.q.resize(bands * blocks * GROUPS, zero);
        self.sums.clear();
        self.sums.resize(bands * blocks * 8, zero);
        self.d.clear();
        self.d.resize(bands * blocks, zero);
        for t in 0..n {
            let (band, lane) = (t / BAND, t % BAND);
            for s in 0..blocks {
                let x = &xs[t * blocks + s];
                let at = band * blocks + s;
                for g in 0..GROUPS {
                    let dst = &mut self.q[at * GROUPS + g].0[4 * lane..4 * lane + 4];
                    for (o, &v) in dst.iter_mut().zip(&x.qs[4 * g..4 * g + 4]) {
                        *o = v as u8;
                    }
                }
                for j in 0..8 {
                    let p = pair(x.bsums[2 * j] as i32, x.bsums[2 * j + 1] as i32);
                    self.sums[at * 8 + j].0[4 * lane..4 * lane + 4]
                        .copy_from_slice(&p.to_le_bytes());
                }
                self.d[at].0[4 * lane..4 * lane + 4].copy_from_slice(&x.d.to_le_bytes());
            }
        }
        (self.tokens, self.blocks) = (n, blocks);
    }
}

/// `RM` rows against band `band`: each row's 16 outputs (before the type's factor).
#[inline]
#[allow(clippy::needless_range_loop)] // rows, super-blocks and groups index several arrays alike
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn wide_pass<B: WideBlock, const RM: usize>(
    rows: [&[WideRow]; RM],
    x: &WideActs,
    band: usize,
) -> [[f32; BAND]; RM] {
    let zero = _mm512_setzero_si512();
    let mut facc = [_mm512_setzero_ps(); RM];
    for s in 0..x.blocks {
        let at = band * x.blocks + s;
        let acts = &x.q[at * GROUPS..(at + 1) * GROUPS];
        let mut s1 = [zero; RM];
        for sub in 0..QK_K / B::SUB {
            let mut acc = [zero; RM];
            for g in sub * B::SUB / 4..(sub + 1) * B::SUB / 4 {
                // SAFETY: a Lanes is 64 aligned bytes.
                let a = unsafe { _mm512_load_si512(acts[g].0.as_ptr() as *const _) };
                for r in 0..RM {
                    let w = &rows[r][s].q;
                    // SAFETY: 4g + 4 <= 256 = q's length; an unaligned 4-byte read.
                    let w4 = unsafe { (w.as_ptr().add(4 * g) as *const i32).read_unaligned() };
                    acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(w4), a);
                }
            }
            for r in 0..RM {
                let sc = _mm512_set1_epi32(rows[r][s].sc[sub]);
                s1[r] = _mm512_add_epi32(s1[r], _mm512_mullo_epi32(acc[r], sc));
            }
        }
        // SAFETY: a Lanes is 64 aligned bytes.
        let d1 = unsafe { _mm512_load_ps(x.d[at].0.as_ptr() as *const f32) };
        let sums = &x.sums[at * 8..(at + 1) * 8];
        for r in 0..RM {
            let w = &rows[r][s];
            // The offset's and the minima's terms: the scales (minima) times the activations'
            // sums per 16, exact in i32.
            let mut corr = zero;
            let mut mins = zero;
            for (j, sj) in sums.iter().enumerate() {
                // SAFETY: a Lanes is 64 aligned bytes.
                let b = unsafe { _mm512_load_si512(sj.0.as_ptr() as *const _) };
                if B::BIAS_SHIFT.is_some() {
                    // SAFETY: AVX512F and AVX512-VNNI, which this function enables.
                    corr = unsafe { dpwssd(corr, _mm512_set1_epi32(w.sc_pairs[j]), b) };
                }
                if B::MIN {
                    // SAFETY: as above.
                    mins = unsafe { dpwssd(mins, _mm512_set1_epi32(w.min_pairs[j]), b) };
                }
            }
            let mut v = s1[r];
            if let Some(shift) = B::BIAS_SHIFT {
                v = _mm512_sub_epi32(v, _mm512_sllv_epi32(corr, _mm512_set1_epi32(shift as i32)));
            }
            let mut f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_set1_ps(w.d));
            if B::MIN {
                f = _mm512_fnmadd_ps(_mm512_set1_ps(w.dmin), _mm512_cvtepi32_ps(mins), f);
            }
            // A product, then a sum (not fused): llama.cpp's tiled kernels round so.
            facc[r] = _mm512_add_ps(facc[r], _mm512_mul_ps(f, d1));
        }
    }
    let mut out = [[0.0; BAND]; RM];
    for (o, v) in out.iter_mut().zip(facc) {
        // SAFETY: 16 f32 lanes into 16 f32s.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    out
}

/// Rows `first..first + m` of a matrix of `B` (`per_row` super-blocks each) against every packed
/// token, into `out`.
pub(crate) fn wide_rows<B: WideBlock>(
    w: &[B],
    first: usize,
    m: usize,
    x: &WideActs,
    per_row: usize,
    out: &RowsOut,
) {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<WideRow>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    assert_eq!(x.blocks, per_row, "activations packed for another width");
    let n = x.tokens;
    ROWS.with_borrow_mut(|unpacked| {
        // Grown, never cleared: each unpack writes what its pass reads (`WideBlock::unpack`).
        if unpacked.len() < m * per_row {
            unpacked.resize(m * per_row, WideRow::ZERO);
        }
        for (src, dst) in w[first * per_row..(first + m) * per_row].iter().zip(unpacked.iter_mut())
        {
            src.unpack(dst);
        }
        let row = |r: usize| &unpacked[r * per_row..(r + 1) * per_row];
        for band in 0..n.div_ceil(BAND) {
            let tokens = (n - band * BAND).min(BAND);
            let mut r0 = 0;
            while r0 < m {
                macro_rules! go {
                    ($rm:literal) => {{
                        let rows: [_; $rm] = std::array::from_fn(|i| row(r0 + i));
                        // SAFETY: the wide tiles are only reached when the CPU has AVX-512
                        // F/BW/VNNI (`super::enabled`).
                        let v = unsafe { wide_pass::<B, $rm>(rows, x, band) };
                        for t in 0..tokens {
                            let at = band * BAND + t;
                            // SAFETY: rows first..first + m are this task's.
                            let ys = unsafe { out.token_rows_mut(at, first + r0, $rm) };
                            for (y, lanes) in ys.iter_mut().zip(&v) {
                                *y = B::MULT * lanes[t];
                            }
                        }
                        $rm
                    }};
                }
                r0 += match m - r0 {
                    8.. => go!(8),
                    4.. => go!(4),
                    _ => go!(1),
                };
            }
        }
    });
}

const _: () = assert!(ROWS == 8);
