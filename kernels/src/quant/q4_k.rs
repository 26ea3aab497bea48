//! Q4_K: 256 values in 8 sub-blocks of 32, each with a 6-bit scale and a 6-bit min (packed into
//! 12 bytes), scaled by the super-block's f16 `d` and `dmin`; value = d*sc*q - dmin*m, q in 0..16.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK_K;

/// One ggml `block_q4_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// 8 scales and 8 mins, 6 bits each (see [`scale_min_k4`]).
    pub scales: [u8; 12],
    /// Nibbles: for each 64 values, byte l holds value l (low) and value l + 32 (high).
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::align_of::<BlockQ4K>() == 2);

/// Scale and min of sub-block `j` (0..8) from the 12 packed bytes (ggml's `get_scale_min_k4`),
/// shared by Q4_K and Q5_K.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// All 8 scales and 8 mins of a block.
#[inline]
pub fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = scale_min_k4(j, q);
    }
    (sc, m)
}

/// Expands Q4_K blocks to f32 with ggml's arithmetic (`d*sc` and `dmin*m` first, one
/// multiply and one subtract per value, no fused multiply-add), so results are bit-identical.
pub fn dequantize_q4_k(blocks: &[BlockQ4K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_k4_block(b.d, b.dmin, &b.scales, &b.qs, None, ob);
    }
}

/// One Q4_K super-block (or, with `qh`, Q5_K: the fifth bit of value 64c + l is bit 2c of
/// `qh[l]`, of value 64c + 32 + l bit 2c + 1) into 256 values.
pub(super) fn dequantize_k4_block(
    d: f16,
    dmin: f16,
    scales: &[u8; 12],
    qs: &[u8; QK_K / 2],
    qh: Option<&[u8; QK_K / 8]>,
    out: &mut [f32],
) {
    let (d, min) = (d.to_f32(), dmin.to_f32());
    let high = |l: usize, bit: usize| qh.map_or(0, |h| if h[l] >> bit & 1 != 0 { 16 } else { 0 });
    for (c, (q, y)) in qs.chunks_exact(32).zip(out.chunks_exact_mut(64)).enumerate() {
        let (s1, m1) = scale_min_k4(2 * c, scales);
        let (s2, m2) = scale_min_k4(2 * c + 1, scales);
        let (d1, m1) = (d * s1 as f32, min * m1 as f32);
        let (d2, m2) = (d * s2 as f32, min * m2 as f32);
        for l in 0..32 {
            y[l] = d1 * ((q[l] & 0xF) + high(l, 2 * c)) as f32 - m1;
            y[l + 32] = d2 * ((q[l] >> 4) + high(l, 2 * c + 1)) as f32 - m2;
        }
    }
}

/// One Q4_K super-block (or, with `qh`, Q5_K) as unsigned codes in value order with a scale per
/// 16 values (each sub-block's, twice), for the many-token prefill kernels.
pub(crate) fn unpack_k4(
    d: f16,
    scales: &[u8; 12],
    qs: &[u8; QK_K / 2],
    qh: Option<&[u8; QK_K / 8]>,
    codes: &mut [i8],
    ls: &mut [i16],
) -> f32 {
    let high = |l: usize, bit: usize| qh.map_or(0, |h| ((h[l] >> bit) & 1) << 4);
    for (c, (q, out)) in qs.chunks_exact(32).zip(codes.chunks_exact_mut(64)).enumerate() {
        for l in 0..32 {
            out[l] = ((q[l] & 0xF) | high(l, 2 * c)) as i8;
            out[l + 32] = ((q[l] >> 4) | high(l, 2 * c + 1)) as i8;
        }
    }
    scales_k4(d, scales, ls)
}

/// The run scales of [`unpack_k4`]: each sub-block's 6-bit scale for both its runs of 16; returns
/// the super-block scale.
fn scales_k4(d: f16, scales: &[u8; 12], ls: &mut [i16]) -> f32 {
    let (sc, _) = scales_mins_k4(scales);
    for (pair, &s) in ls.chunks_exact_mut(2).zip(&sc) {
        pair.fill(s as i16);
    }
    d.to_f32()
}

/// The codes of [`unpack_k4`] with AVX2: each 32 bytes of nibbles (and fifth bits) in a few
/// register steps.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_k4_avx2(
    d: f16,
    scales: &[u8; 12],
    qs: &[u8; QK_K / 2],
    qh: Option<&[u8; QK_K / 8]>,
    codes: &mut [i8],
    ls: &mut [i16],
) -> f32 {
    use std::arch::x86_64::*;
    assert!(codes.len() >= QK_K && ls.len() >= QK_K / 16);
    let mask = _mm256_set1_epi8(0x0F);
    // SAFETY: qh (when present) is 32 bytes; unaligned load.
    let h = qh.map(|h| unsafe { _mm256_loadu_si256(h.as_ptr() as *const __m256i) });
    for c in 0..4 {
        // SAFETY: 32c + 32 <= 128 bytes of qs; unaligned load.
        let q = unsafe { _mm256_loadu_si256(qs.as_ptr().add(32 * c) as *const __m256i) };
        let mut lo = _mm256_and_si256(q, mask);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), mask);
        if let Some(h) = h {
            // Bit 2c of qh[l] is value 64c + l's fifth bit, bit 2c + 1 value 64c + 32 + l's.
            let (b1, b2) = (_mm256_set1_epi8(1 << (2 * c)), _mm256_set1_epi8(2 << (2 * c)));
            let sixteen = _mm256_set1_epi8(16);
            let h1 = _mm256_cmpeq_epi8(_mm256_and_si256(h, b1), b1);
            let h2 = _mm256_cmpeq_epi8(_mm256_and_si256(h, b2), b2);
            lo = _mm256_or_si256(lo, _mm256_and_si256(h1, sixteen));
            hi = _mm256_or_si256(hi, _mm256_and_si256(h2, sixteen));
        }
        // SAFETY: 64c + 64 <= 256 <= codes.len(); unaligned stores.
        unsafe {
            _mm256_storeu_si256(codes.as_mut_ptr().add(64 * c) as *mut __m256i, lo);
            _mm256_storeu_si256(codes.as_mut_ptr().add(64 * c + 32) as *mut __m256i, hi);
        }
    }
    scales_k4(d, scales, ls)
}

impl super::unpacked::Unpack for BlockQ4K {
    const MULT: f32 = 1.0;
    // Codes 0..=15.
    const SMALL_CODES: bool = true;
    const MIN: bool = true;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        unpack_k4(self.d, &self.scales, &self.qs, None, codes, ls)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { unpack_k4_avx2(self.d, &self.scales, &self.qs, None, codes, ls) }
    }
    fn minima(&self) -> (f32, [u8; 16]) {
        let m = scales_mins_k4(&self.scales).1;
        (self.dmin.to_f32(), std::array::from_fn(|j| m[j / 2]))
    }
}
