//! Q6_K: 256 values in 16 sub-blocks of 16 with signed 8-bit scales and one f16 `d`;
//! value = d*sc*(q - 32), q in 0..64 (4 low bits in `ql`, 2 high bits in `qh`).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK_K;

/// One ggml `block_q6_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits: per 128 values, byte l holds values l (low) and l + 64 (high), byte l + 32
    /// values l + 32 and l + 96.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per 128 values, byte l holds values l, l + 32, l + 64, l + 96 (2 bits each).
    pub qh: [u8; QK_K / 4],
    /// Scale of each 16 values.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::align_of::<BlockQ6K>() == 2);

/// The 6-bit code (0..64) of every value of a block, in value order.
#[inline]
pub fn codes_q6_k(b: &BlockQ6K) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for h in 0..2 {
        let (ql, qh) = (&b.ql[64 * h..64 * h + 64], &b.qh[32 * h..32 * h + 32]);
        let y = &mut q[128 * h..128 * h + 128];
        for l in 0..32 {
            y[l] = (ql[l] & 0xF) | ((qh[l] & 3) << 4);
            y[l + 32] = (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4);
            y[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
            y[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
        }
    }
    q
}

/// Expands Q6_K blocks to f32, bit-identical to ggml (`(d * sc) * (q - 32)`).
pub fn dequantize_q6_k(blocks: &[BlockQ6K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let q = codes_q6_k(b);
        for (i, y) in ob.iter_mut().enumerate() {
            *y = d * b.scales[i / 16] as f32 * (q[i] as i32 - 32) as f32;
        }
    }
}

/// Q6_K as the many-token prefill kernels read it: the stored codes (0..64, the matvec kernel's
/// form) with a scale per 16 values; the `- 32` is [`super::unpacked::Unpack::STORED_OFFSET`].
impl super::unpacked::Unpack for BlockQ6K {
    const MULT: f32 = 1.0;
    // Stored codes 0..=63.
    const SMALL_CODES: bool = true;
    const STORED_OFFSET: i32 = 32;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        for (c, q) in codes.iter_mut().zip(codes_q6_k(self)) {
            *c = q as i8;
        }
        for (l, &s) in ls.iter_mut().zip(&self.scales) {
            *l = s as i16;
        }
        self.d.to_f32()
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe { unpack_codes_avx2(self, codes) };
        for (l, &s) in ls.iter_mut().zip(&self.scales) {
            *l = s as i16;
        }
        self.d.to_f32()
    }
}

/// [`codes_q6_k`] with AVX2, 32 values per step as the AVX2 matvec kernel builds them.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unpack_codes_avx2(b: &BlockQ6K, codes: &mut [i8]) {
    use std::arch::x86_64::*;
    assert!(codes.len() >= QK_K);
    for h in 0..2 {
        for (k, v) in codes_half_avx2(b, h).into_iter().enumerate() {
            // SAFETY: 128h + 32k + 32 <= 256 <= codes.len(); unaligned store.
            unsafe {
                _mm256_storeu_si256(codes.as_mut_ptr().add(128 * h + 32 * k) as *mut __m256i, v)
            };
        }
    }
}

/// Half `h` (0 or 1) of a block's codes, still +32 (0..63): values 128h + 32k.. in register
/// k. The one assembly of Q6_K codes that the AVX2 matvec kernel and the prefill unpacking share.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) fn codes_half_avx2(b: &BlockQ6K, h: usize) -> [std::arch::x86_64::__m256i; 4] {
    use std::arch::x86_64::*;
    assert!(h < 2);
    let (m4, m2) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(3));
    let high = |s: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(s, m2));
    // SAFETY: ql is 128 bytes (64h + 64 <= 128), qh 64 (32h + 32 <= 64); unaligned loads.
    let (ql0, ql1, qh) = unsafe {
        (
            _mm256_loadu_si256(b.ql.as_ptr().add(64 * h) as *const __m256i),
            _mm256_loadu_si256(b.ql.as_ptr().add(64 * h + 32) as *const __m256i),
            _mm256_loadu_si256(b.qh.as_ptr().add(32 * h) as *const __m256i),
        )
    };
    [
        _mm256_or_si256(_mm256_and_si256(ql0, m4), high(qh)),
        _mm256_or_si256(_mm256_and_si256(ql1, m4), high(_mm256_srli_epi16::<2>(qh))),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
            high(_mm256_srli_epi16::<4>(qh)),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            high(_mm256_srli_epi16::<6>(qh)),
        ),
    ]
}
