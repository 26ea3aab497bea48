//! Prefill for the 32-value block types whose codes take several steps to unpack (Q5_0, MXFP4
//! and IQ4_NL, which pair with Q8_0 activations, and Q4_1, Q5_1 with Q8_1) on AVX2: the rows of a task are unpacked once into plain byte codes with
//! their scales, then dotted with the tokens' activations (laid out once per product, as for
//! the super-block types in `unpacked.rs`), eight tokens per pass so each block's codes are
//! loaded once for eight. Each block's integer lanes, its fused multiply-add into eight float
//! lanes and the final sum (and the Q8_1 types' minima, summed apart) are the matvec kernels'
//! steps in their order, so every output equals matvec's bit for bit.
//!
//! Only the AVX2 column has these kernels: elsewhere the row-group path runs. Q8_0 and Q4_0 keep
//! their four-row kernels, which measured as fast as these (their codes are a load away).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::mxfp4::{e8m0_to_f32_half, KVALUES_MXFP4};
use super::unpacked::{visit_passes, UnpackedActs, TOKENS};
use super::{BlockIq4Nl, BlockMxfp4, BlockQ4_1, BlockQ5_0, BlockQ5_1, QK};
use crate::dot::avx2::{bits_to_bytes, f16_to_f32, hsum, unpack_nibbles};
use crate::dot::avx2_k::hsum_i32;
use crate::gemm::RowsOut;

/// How a type's codes multiply the activations.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codes {
    /// Signed within ±64: activations offset to unsigned bytes (`y + 128`) multiply the codes
    /// directly; the offset's share, `128 * (sum of each lane's codes)`, is the row's own.
    Offset,
    /// Unsigned (the Q8_1 types, with a minimum): codes times activations directly.
    Unsigned,
    /// Signed levels beyond ±64 (IQ4_NL's reach ±127): the magnitudes times the activations
    /// with the codes' signs, one sign step per token, as the matvec kernel multiplies them.
    Signed,
}

/// A 32-value block type these kernels read.
pub(crate) trait Block32: Copy {
    const CODES: Codes;
    /// Whether matvec sums the blocks in pairs (even blocks into one set of lanes, odd into
    /// another, an odd last block's exact total added on its own), as ggml's IQ4_NL kernel does.
    const PAIRED: bool = false;
    /// The block's codes (value order), scale and minimum (zero without one).
    ///
    /// # Safety
    /// The CPU has AVX2 and F16C.
    unsafe fn unpack(&self) -> (__m256i, f32, f32);
}

impl Block32 for BlockQ5_0 {
    const CODES: Codes = Codes::Offset;
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack(&self) -> (__m256i, f32, f32) {
        // A code without its fifth bit is q - 16 < 0: OR-ing 0xF0 into the nibble gives exactly
        // that byte; with the bit, the nibble alone is q - 16.
        let missing = _mm256_andnot_si256(bits_to_bytes(self.qh), _mm256_set1_epi8(0xF0u8 as i8));
        (_mm256_or_si256(unpack_nibbles(&self.qs), missing), f16_to_f32(self.d), 0.0)
    }
}

impl Block32 for BlockMxfp4 {
    // Levels within ±12.
    const CODES: Codes = Codes::Offset;
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack(&self) -> (__m256i, f32, f32) {
        // SAFETY: KVALUES_MXFP4 is 16 bytes.
        let table = unsafe { _mm_loadu_si128(KVALUES_MXFP4.as_ptr() as *const __m128i) };
        let codes = _mm256_shuffle_epi8(_mm256_set_m128i(table, table), unpack_nibbles(&self.qs));
        (codes, e8m0_to_f32_half(self.e), 0.0)
    }
}

impl Block32 for BlockIq4Nl {
    const CODES: Codes = Codes::Signed;
    const PAIRED: bool = true;
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack(&self) -> (__m256i, f32, f32) {
        let codes = _mm256_shuffle_epi8(super::iq4_nl::avx2::levels(), unpack_nibbles(&self.qs));
        (codes, f16_to_f32(self.d), 0.0)
    }
}

impl Block32 for BlockQ4_1 {
    const CODES: Codes = Codes::Unsigned;
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack(&self) -> (__m256i, f32, f32) {
        (unpack_nibbles(&self.qs), f16_to_f32(self.d), f16_to_f32(self.m))
    }
}

impl Block32 for BlockQ5_1 {
    const CODES: Codes = Codes::Unsigned;
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn unpack(&self) -> (__m256i, f32, f32) {
        let bit4 = _mm256_and_si256(bits_to_bytes(self.qh), _mm256_set1_epi8(0x10));
        (_mm256_or_si256(unpack_nibbles(&self.qs), bit4), f16_to_f32(self.d), f16_to_f32(self.m))
    }
}

/// A task's rows as codes: 32 bytes per block, with each block's scale and minimum.
#[derive(Default)]
struct Rows32 {
    codes: Vec<[u8; QK]>,
    d: Vec<f32>,
    m: Vec<f32>,
}

thread_local! {
    static ROWS: RefCell<Rows32> = RefCell::new(Rows32::default());
}

/// Tokens per block: a block's activations stay in cache while every row of the task passes
/// over them.
const TOKEN_BLOCK: usize = 64;

/// Rows `first..first + m` of `w` (`per` blocks each) against every token of `acts`, into `out`.
pub(crate) fn dot_tokens<B: Block32>(
    w: &[B],
    (first, m): (usize, usize),
    acts: &UnpackedActs,
    per: usize,
    out: &RowsOut,
) {
    let unsigned = B::CODES == Codes::Unsigned;
    assert!(
        acts.per == per
            && acts.offset == (B::CODES == Codes::Offset)
            && acts.s.len() == if unsigned { acts.d.len() } else { 0 },
        "activations laid out otherwise"
    );
    let n = acts.tokens();
    ROWS.with_borrow_mut(|rows| {
        let blocks = &w[first * per..(first + m) * per];
        rows.codes.resize(blocks.len(), [0; QK]);
        rows.d.resize(blocks.len(), 0.0);
        rows.m.resize(blocks.len(), 0.0);
        for (i, b) in blocks.iter().enumerate() {
            // SAFETY: this kernel sits only in the AVX2 column of the type table, used after
            // `Isa::Avx2.supported()` (AVX2, FMA, F16C) said yes.
            let (q, d, min) = unsafe { b.unpack() };
            // SAFETY: 32 bytes into a 32-byte array; unaligned store.
            unsafe { _mm256_storeu_si256(rows.codes[i].as_mut_ptr() as *mut __m256i, q) };
            (rows.d[i], rows.m[i]) = (d, min);
        }
        visit_passes((n, m, TOKEN_BLOCK), (first, out), |r, t0, k| {
            let at = r * per..(r + 1) * per;
            let row = (&rows.codes[at.clone()], &rows.d[at.clone()], &rows.m[at]);
            macro_rules! pass {
                ($($k:literal)*) => {
                    match k {
                        // SAFETY: AVX2, FMA and F16C as above; `acts` holds tokens
                        // t0..t0 + k of `per` blocks.
                        $($k => unsafe { tile::<B, $k>(row, acts, t0) },)*
                        _ => unreachable!("at most {TOKENS} tokens per pass"),
                    }
                };
            }
            pass!(1 2 3 4 5 6 7 8)
        });
    })
}

/// `N` (1..=8) tokens from `t0` against one unpacked row (codes, scales, minima).
///
/// # Safety
/// The CPU has AVX2 and FMA; `acts` holds tokens `t0..t0 + N` of the row's blocks.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<B: Block32, const N: usize>(
    (codes, d, m): (&[[u8; QK]], &[f32], &[f32]),
    acts: &UnpackedActs,
    t0: usize,
) -> [f32; TOKENS] {
    let per = d.len();
    assert!(codes.len() == per && m.len() == per && acts.d.len() >= (t0 + N) * per);
    assert!(acts.s.is_empty() || acts.s.len() == acts.d.len());
    // Each token's values and scales (and sums), from its first block.
    let y0: [*const u8; N] = std::array::from_fn(|t| acts.token(t0 + t).as_ptr());
    let d0: [&[f32]; N] = std::array::from_fn(|t| &acts.d[(t0 + t) * per..][..per]);
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    // One set of lanes per token, two where matvec sums the blocks in pairs.
    let mut acc = [[_mm256_setzero_ps(); 2]; N];
    let mut mins = [0.0f32; N];
    // Where the blocks go in pairs, an odd last block is summed on its own, after.
    let lanes_end = if B::PAIRED { per / 2 * 2 } else { per };
    // What a block's codes give every token alike: the offset's share for offset codes, the
    // magnitudes for signed ones.
    let prepare = |q: __m256i| match B::CODES {
        Codes::Offset => {
            _mm256_slli_epi32::<7>(_mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16))
        }
        Codes::Unsigned => q,
        Codes::Signed => _mm256_sign_epi8(q, q),
    };
    // Token t's exact lanes of block i, whose codes are q (and `pre` what `prepare` made).
    let lanes = |q: __m256i, pre: __m256i, t: usize, i: usize| {
        // SAFETY: token t's run holds per * 32 values (`acts.token`), and i < per.
        let y = unsafe { _mm256_loadu_si256(y0[t].add(QK * i) as *const __m256i) };
        match B::CODES {
            Codes::Offset => {
                _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(y, q), ones16), pre)
            }
            Codes::Unsigned => _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), ones16),
            Codes::Signed => {
                _mm256_madd_epi16(_mm256_maddubs_epi16(pre, _mm256_sign_epi8(y, q)), ones16)
            }
        }
    };
    for i in 0..lanes_end {
        // SAFETY: 32 bytes; unaligned load.
        let q = unsafe { _mm256_loadu_si256(codes[i].as_ptr() as *const __m256i) };
        let pre = prepare(q);
        for t in 0..N {
            let scale = _mm256_set1_ps(d[i] * d0[t][i]);
            let a = &mut acc[t][if B::PAIRED { i % 2 } else { 0 }];
            *a = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(lanes(q, pre, t, i)), *a);
            if B::CODES == Codes::Unsigned {
                mins[t] += m[i] * acts.s[(t0 + t) * per + i];
            }
        }
    }
    let mut out = [0.0; TOKENS];
    for (t, o) in out.iter_mut().take(N).enumerate() {
        let [even, odd] = acc[t];
        *o = if B::PAIRED {
            let s = hsum(_mm256_add_ps(even, odd));
            if lanes_end < per {
                let i = per - 1;
                // SAFETY: 32 bytes; unaligned load.
                let q = unsafe { _mm256_loadu_si256(codes[i].as_ptr() as *const __m256i) };
                (hsum_i32(lanes(q, prepare(q), t, i)) as f32).mul_add(d[i] * d0[t][i], s)
            } else {
                s
            }
        } else if B::CODES == Codes::Unsigned {
            // Minima only where the type has them: adding a zero would turn a -0.0 into +0.0.
            hsum(even) + mins[t]
        } else {
            hsum(even)
        };
    }
    out
}
