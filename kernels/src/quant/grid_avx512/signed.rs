//! IQ1_S and IQ1_M on AVX-512: grids whose values (-1, 0, 1) carry their own signs, plus a
//! shift of one eighth per run (IQ1_S) or per group of eight (IQ1_M).
//!
//! A couple of pairs of runs (128 values, 16 groups of eight) comes from one 16-entry gather of
//! a table of 32-bit entries: a group's eight values plus one, as nibbles, first four in the
//! low nibbles. The low nibbles are the even fours of the couple, the high nibbles the odd
//! ones, so the activations are split the same way (shared by the rows). `vpdpbusd` started
//! from minus each four's activation sum leaves each four's `g q`; one word permute pairs two
//! runs' fours of the same lane, and `vpdpwssd` applies their scales: the same integers per
//! lane as the AVX2 kernel.

use std::arch::x86_64::*;

use super::super::codes::Delta;
use super::super::iq_grids::IQ1S_GRID;
use super::super::{BlockIq1M, BlockIq1S, BlockQ8K};
use super::kernel::GridLanes;
use super::read;
use crate::dot::avx512::dpwssd;

/// IQ1_S's (and IQ1_M's) grid with one added to every value (-1, 0, 1 become 0, 1, 2), each
/// entry's eight values as nibbles: byte `i` holds value `i` low, value `i + 4` high.
static IQ1S_GRID_NIBBLES: [u32; 2048] = {
    let mut t = [0u32; 2048];
    let mut e = 0;
    while e < 2048 {
        let mut i = 0;
        while i < 4 {
            let low = ((IQ1S_GRID[e] >> (8 * i)) as u8).wrapping_add(1) as u32;
            let high = ((IQ1S_GRID[e] >> (8 * i + 32)) as u8).wrapping_add(1) as u32;
            t[e] |= (low | high << 4) << (8 * i);
            i += 1;
        }
        e += 1;
    }
    t
};

/// 32 words as a register.
const fn words(w: [i16; 32]) -> __m512i {
    // SAFETY: `[i16; 32]` and `__m512i` are both 64 plain bytes.
    unsafe { std::mem::transmute::<[i16; 32], __m512i>(w) }
}

/// 16 dwords as a register.
const fn dwords(d: [i32; 16]) -> __m512i {
    // SAFETY: `[i32; 16]` and `__m512i` are both 64 plain bytes.
    unsafe { std::mem::transmute::<[i32; 16], __m512i>(d) }
}

/// Per word `2d + k` of a couple's products: lane `d % 8` of its local run `2 (d / 8) + k`,
/// from the even fours' register (words `0..32`) for even lanes, the odd fours' (`32..64`)
/// for odd lanes. Dword `e` of either holds the four `2 e` (or `2 e + 1`): run `e / 4`, lane
/// `2 (e % 4)` (or `+ 1`).
const COUPLE_WORDS: __m512i = words({
    let mut t = [0i16; 32];
    let mut w = 0;
    while w < 32 {
        let (d, k) = (w / 2, w % 2);
        let (lane, run) = (d % 8, 2 * (d / 8) + k);
        let e = 4 * run + lane / 2;
        t[w] = if lane % 2 == 0 { 2 * e } else { 32 + 2 * e } as i16;
        w += 1;
    }
    t
});

/// Dword `e` from dword `2 e` (or `2 e + 1`) of two registers: a couple's even (odd) fours.
const EVEN_FOURS: __m512i = dwords([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30]);
const ODD_FOURS: __m512i = dwords([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31]);

/// One super-block of activations, per couple `c`: the even and odd fours of its 128 values,
/// minus each four's sum, and (IQ1_M) the sums as the products' words lie; (IQ1_S) each run's
/// activation sum, one word per run, in both 128-bit halves.
#[derive(Clone, Copy)]
pub(crate) struct SignedActs {
    fours: [[__m512i; 2]; 2],
    neg: [[__m512i; 2]; 2],
    sums: [__m512i; 2],
    runs: __m256i,
}

/// The activations for [`GridLanes::acts`]: `sums` where the type has shift lanes, `runs`
/// where it has a shift per run.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
fn signed_acts(y: &BlockQ8K, sums: bool, runs: bool) -> SignedActs {
    let zero = _mm512_setzero_si512();
    let ones = _mm512_set1_epi8(1);
    let mut acts = SignedActs {
        fours: [[zero; 2]; 2],
        neg: [[zero; 2]; 2],
        sums: [zero; 2],
        runs: _mm256_setzero_si256(),
    };
    if runs {
        // SAFETY: bsums is 16 i16, 32 bytes; unaligned load.
        let bsums: __m256i = unsafe { read(bytemuck::cast_slice(&y.bsums), 0) };
        // Each run's two halves' sums as one i16 (at most 32 * 128 in magnitude).
        let r = _mm256_madd_epi16(bsums, _mm256_set1_epi16(1));
        let r = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256::<1>(r));
        acts.runs = _mm256_set_m128i(r, r);
    }
    for c in 0..2 {
        // SAFETY: 128 c + 128 <= 256 = qs's length; unaligned loads.
        let (a, b): (__m512i, __m512i) = unsafe {
            (
                read(bytemuck::cast_slice(&y.qs), 128 * c),
                read(bytemuck::cast_slice(&y.qs), 128 * c + 64),
            )
        };
        let fours = [
            _mm512_permutex2var_epi32(a, EVEN_FOURS, b),
            _mm512_permutex2var_epi32(a, ODD_FOURS, b),
        ];
        let neg = fours.map(|f| _mm512_dpbusd_epi32(zero, ones, _mm512_sub_epi8(zero, f)));
        if sums {
            let [e, o] = neg.map(|n| _mm512_sub_epi32(zero, n));
            acts.sums[c] = _mm512_permutex2var_epi16(e, COUPLE_WORDS, o);
        }
        acts.fours[c] = fours;
        acts.neg[c] = neg;
    }
    acts
}

/// Couple `c`'s products of one row into `sumi`, from the couple's gathered grid entries
/// (`idx`, 16 of them) and its scale words.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,gfni")]
fn couple_into(idx: __m512i, acts: &SignedActs, c: usize, scales: __m512i, sumi: &mut __m512i) {
    // SAFETY: the indices are 11 bits, inside the 2048-entry table.
    let grid = unsafe { _mm512_i32gather_epi32::<4>(idx, IQ1S_GRID_NIBBLES.as_ptr() as _) };
    let lo = _mm512_and_si512(grid, _mm512_set1_epi8(0xF));
    // Each byte's bits 4..8 to 0..4, one instruction (the affine map's row for result bit `i`
    // is byte `7 - i` of the matrix).
    let hi = _mm512_gf2p8affine_epi64_epi8::<0>(grid, _mm512_set1_epi64(0x1020_4080_0000_0000));
    let even = _mm512_dpbusd_epi32(acts.neg[c][0], lo, acts.fours[c][0]);
    let odd = _mm512_dpbusd_epi32(acts.neg[c][1], hi, acts.fours[c][1]);
    // Each four's product is at most 4 * 128 in magnitude: a word holds it.
    let t = _mm512_permutex2var_epi16(even, COUPLE_WORDS, odd);
    // SAFETY: this function's target features.
    *sumi = unsafe { dpwssd(*sumi, t, scales) };
}

/// The grid indices of couple `c`: the low byte of group `16 c + e` in dword `e`, and its
/// three high bits from `high` (8 bytes, broadcast), which `at` (bits 8..16 of dword `e`: the
/// bit offset of group `e`'s bits) moves to bits 8..11.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn indices(qs: &[u8], c: usize, high: u64, at: __m512i) -> __m512i {
    // SAFETY: 16 c + 16 <= 32 = qs's length.
    let lo = _mm512_cvtepu8_epi32(unsafe { read::<__m128i>(qs, 16 * c) });
    let hi = _mm512_multishift_epi64_epi8(at, _mm512_set1_epi64(high as i64));
    // (hi & 0x700) | lo
    _mm512_ternarylogic_epi32::<0xEA>(hi, _mm512_set1_epi32(0x700), lo)
}

/// Per dword `e`, `offset(e)` in its byte 1 (what [`indices`] reads).
const fn high_at(offset: [u8; 16]) -> __m512i {
    let mut t = [0i32; 16];
    let mut e = 0;
    while e < 16 {
        t[e] = (offset[e] as i32) << 8;
        e += 1;
    }
    dwords(t)
}

/// IQ1_S: group `e` of a couple is group `e % 4` of its run `e / 4` (of the couple's four run
/// words): its high bits are at `16 (e / 4) + 3 (e % 4)`.
const IQ1S_HIGH_AT: __m512i = high_at({
    let mut t = [0u8; 16];
    let mut e = 0;
    while e < 16 {
        t[e] = (16 * (e / 4) + 3 * (e % 4)) as u8;
        e += 1;
    }
    t
});

/// IQ1_S: couple `c`'s scale dwords: run `4 c + 2 (d / 8)` low, the next run high, which is
/// dword `2 c + d / 8` of the eight run scales as words.
const IQ1S_SCALE_DWORDS: [__m512i; 2] = [
    dwords([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]),
    dwords([2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]),
];

impl GridLanes for BlockIq1S {
    type Acts = SignedActs;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    unsafe fn acts(y: &BlockQ8K) -> SignedActs {
        signed_acts(y, false, true)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx2,gfni")]
    unsafe fn lanes(&self, acts: &SignedActs) -> [__m512i; 2] {
        // SAFETY: qh is 8 words, 16 bytes; unaligned load.
        let qh: __m128i = unsafe { read(bytemuck::cast_slice(&self.qh), 0) };
        // Run scales `2 * s + 1` from bits 12..15 of each word.
        let ls = _mm_and_si128(_mm_srli_epi16::<11>(qh), _mm_set1_epi16(0xE));
        let ls = _mm512_castsi128_si512(_mm_or_si128(ls, _mm_set1_epi16(1)));
        let mut sumi = _mm512_setzero_si512();
        for (c, pick) in IQ1S_SCALE_DWORDS.into_iter().enumerate() {
            // SAFETY: 8 c + 8 <= 16 bytes of qh.
            let high: u64 = unsafe { read(bytemuck::cast_slice(&self.qh), 8 * c) };
            let idx = indices(&self.qs, c, high, IQ1S_HIGH_AT);
            let scales = _mm512_permutexvar_epi32(pick, ls);
            couple_into(idx, acts, c, scales, &mut sumi);
        }
        [sumi, _mm512_setzero_si512()]
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn run_shifts<const R: usize>(rows: [&Self; R], acts: &SignedActs) -> __m256i {
        // Both rows' run words (one row's twice).
        // SAFETY: qh is 8 words, 16 bytes; unaligned loads.
        let qh = |r: usize| unsafe { read::<__m128i>(bytemuck::cast_slice(&rows[r].qh), 0) };
        let qh = _mm256_set_m128i(qh(R - 1), qh(0));
        // Per run `±(2s + 1)` (scale at bits 12..15, the shift's sign at 15), negated where the
        // word's top bit is set (the word or 1 is never zero).
        let ls = _mm256_and_si256(_mm256_srli_epi16::<11>(qh), _mm256_set1_epi16(0xE));
        let ls = _mm256_or_si256(ls, _mm256_set1_epi16(1));
        let factors = _mm256_sign_epi16(ls, _mm256_or_si256(qh, _mm256_set1_epi16(1)));
        let m = _mm256_madd_epi16(factors, acts.runs);
        let m = _mm256_add_epi32(m, _mm256_shuffle_epi32::<0x4E>(m));
        _mm256_add_epi32(m, _mm256_shuffle_epi32::<0xB1>(m))
    }
}

/// IQ1_M: group `e` of a couple has its nibble at `4 e` of the couple's eight `qh` bytes.
const IQ1M_HIGH_AT: __m512i = high_at({
    let mut t = [0u8; 16];
    let mut e = 0;
    while e < 16 {
        t[e] = 4 * e as u8;
        e += 1;
    }
    t
});

/// IQ1_M: per word `g` (a group of eight), the bit offset in the four scale words of its
/// half-run's 3-bit scale (half-run `h = g / 2`: field `h % 4` of word `h / 4`), less one, in
/// the word's low byte: [`Self::group_scales`] takes the scale to bits 1..4.
const IQ1M_SCALE_AT: __m512i = {
    let mut t = [0u8; 64];
    let mut g = 0;
    while g < 32 {
        let h = g / 2;
        t[2 * g] = ((16 * (h / 4) + 3 * (h % 4) + 63) % 64) as u8;
        g += 1;
    }
    // SAFETY: `[u8; 64]` and `__m512i` are both 64 plain bytes.
    unsafe { std::mem::transmute::<[u8; 64], __m512i>(t) }
};

/// IQ1_M: per word of couple `c`'s products, its group: lane `d % 8` of run `4 c + 2 (d / 8)
/// + k` is in that run's group `(d % 8) / 2`.
const IQ1M_COUPLE_GROUPS: [__m512i; 2] = [iq1m_couple_groups(0), iq1m_couple_groups(1)];

const fn iq1m_couple_groups(c: usize) -> __m512i {
    let mut t = [0i16; 32];
    let mut w = 0;
    while w < 32 {
        let (d, k) = (w / 2, w % 2);
        let run = 4 * c + 2 * (d / 8) + k;
        t[w] = (4 * run + (d % 8) / 2) as i16;
        w += 1;
    }
    words(t)
}

impl GridLanes for BlockIq1M {
    type Acts = SignedActs;

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2")]
    unsafe fn acts(y: &BlockQ8K) -> SignedActs {
        signed_acts(y, true, false)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512vnni,avx512vbmi,avx2,bmi2,gfni")]
    unsafe fn lanes(&self, acts: &SignedActs) -> [__m512i; 2] {
        // Per group of eight, its half-run's scale, negated where its shift is negative (bit 3
        // of its nibble).
        let group_scales = self.group_scales();
        // SAFETY: qh is 16 bytes; unaligned reads.
        let (lo, hi): (u64, u64) = unsafe { (read(&self.qh, 0), read(&self.qh, 8)) };
        let nibble_tops = 0x8888_8888_8888_8888;
        let negative =
            _pext_u64(lo, nibble_tops) as u32 | (_pext_u64(hi, nibble_tops) as u32) << 16;
        let zero = _mm512_setzero_si512();
        let signed_scales = _mm512_mask_sub_epi16(group_scales, negative, zero, group_scales);
        let (mut sumi, mut sumi2) = (zero, zero);
        for c in 0..2 {
            let high = [lo, hi][c];
            let idx = indices(&self.qs, c, high, IQ1M_HIGH_AT);
            let scales = _mm512_permutexvar_epi16(IQ1M_COUPLE_GROUPS[c], group_scales);
            couple_into(idx, acts, c, scales, &mut sumi);
            let signed = _mm512_permutexvar_epi16(IQ1M_COUPLE_GROUPS[c], signed_scales);
            // SAFETY: this function's target features.
            sumi2 = unsafe { dpwssd(sumi2, acts.sums[c], signed) };
        }
        debug_assert!(matches!(<Self as super::super::codes::GridBlock>::DELTA, Delta::Lanes(_)));
        [sumi, sumi2]
    }

    #[inline]
    #[target_feature(enable = "bmi2")]
    unsafe fn scale_bits(&self) -> u16 {
        // The top nibble of each of the four scale words, first word lowest.
        _pext_u64(u64::from_le_bytes(self.scales), 0xF000_F000_F000_F000) as u16
    }
}

impl BlockIq1M {
    /// Per group of eight (one per 16-bit word), its half-run's scale `2 n + 1`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    fn group_scales(&self) -> __m512i {
        // The 3-bit scales of the 16 half-runs, three per 16-bit word from its bit 0 (the top
        // nibbles are the super-block scale's).
        let words = _mm512_set1_epi64(i64::from_le_bytes(self.scales));
        let n = _mm512_multishift_epi64_epi8(IQ1M_SCALE_AT, words);
        // (n & 0xE) | 1
        _mm512_ternarylogic_epi32::<0xEA>(n, _mm512_set1_epi16(0xE), _mm512_set1_epi16(1))
    }
}
