//! Q8_K: the activation format of the K-quant dot products. 256 signed bytes, an f32 scale (not
//! f16) and the sums of every 16 codes, which the dot products use for the weights' min/offset
//! terms.

use bytemuck::{Pod, Zeroable};

use super::QK_K;

/// One ggml `block_q8_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale: value = q * d.
    pub d: f32,
    /// Codes.
    pub qs: [i8; QK_K],
    /// Sum of each 16 consecutive codes.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(std::mem::align_of::<BlockQ8K>() == 4);

impl BlockQ8K {
    /// An all-zero block.
    pub const ZERO: Self = Self { d: 0.0, qs: [0; QK_K], bsums: [0; QK_K / 16] };
}

/// Quantises `x` (a multiple of 256 long) into `out` exactly as ggml's `quantize_row_q8_K`:
/// `max` is the signed value of the first element of largest magnitude, `iscale = -127 / max`,
/// `q = min(127, round_half_even(x * iscale))`, `d = 1 / iscale` kept as f32. With AVX2, the
/// same bits by vector steps (prefill quantises every token of every expert's input).
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    assert_eq!(
        x.len(),
        out.len() * QK_K,
        "quantize_q8_k: {} values into {} blocks",
        x.len(),
        out.len()
    );
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            // SAFETY: `available` checked AVX2; `xb` is 256 values.
            if !unsafe { avx2::quantize_block(xb, b) } {
                quantize_block(xb, b);
            }
        }
        return;
    }
    for (xb, b) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xb, b);
    }
}

/// One block of [`quantize_q8_k`], the scalar definition.
fn quantize_block(xb: &[f32], b: &mut BlockQ8K) {
    // The largest magnitude in eight lanes (vectorised; a NaN never wins, as in ggml's strict
    // comparison), then the first value that has it.
    let mut lanes = [0.0f32; 8];
    for c in xb.chunks_exact(8) {
        for (m, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *m = if a > *m { a } else { *m };
        }
    }
    let amax = lanes.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
    if amax == 0.0 {
        *b = BlockQ8K::ZERO;
        return;
    }
    let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    for (q, &v) in b.qs.iter_mut().zip(xb) {
        *q = (super::round_ties_even_small(v * iscale) as i32).min(127) as i8;
    }
    for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = qs.iter().map(|&q| q as i16).sum();
    }
    b.d = 1.0 / iscale;
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, QK_K};

    /// Whether this CPU runs [`quantize_block`].
    pub(super) fn available() -> bool {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
    }

    /// One block as the scalar `quantize_block` makes it, or false (nothing written) where a
    /// value is not finite: those blocks take the scalar path, whose NaN handling this does
    /// not copy.
    ///
    /// # Safety
    /// The CPU must have AVX2; `xb` must be 256 values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block(xb: &[f32], b: &mut BlockQ8K) -> bool {
        assert_eq!(xb.len(), QK_K);
        let p = xb.as_ptr();
        // SAFETY: 8 c + 8 <= 256 values; unaligned loads.
        let load = |c: usize| unsafe { _mm256_loadu_ps(p.add(8 * c)) };
        let (mut m, mut bad) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let magnitude = _mm256_set1_ps(f32::MAX);
        for c in 0..QK_K / 8 {
            let a = _mm256_andnot_ps(_mm256_set1_ps(-0.0), load(c));
            // `a` where it is larger, as the scalar lanes keep it (a NaN never is).
            m = _mm256_max_ps(a, m);
            // NaN or infinite: not (|v| <= MAX).
            bad = _mm256_or_ps(bad, _mm256_cmp_ps::<_CMP_NLE_UQ>(a, magnitude));
        }
        if _mm256_movemask_ps(bad) != 0 {
            return false;
        }
        // SAFETY: `__m256` and `[f32; 8]` are both 32 plain bytes.
        let lanes = unsafe { std::mem::transmute::<__m256, [f32; 8]>(m) };
        let amax = lanes.iter().fold(0.0f32, |m, &a| if a > m { a } else { m });
        if amax == 0.0 {
            *b = BlockQ8K::ZERO;
            return true;
        }
        let max = xb.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
        let iscale = -127.0 / max;
        let scale = _mm256_set1_ps(iscale);
        // Rounded to nearest, ties to even (the default rounding mode, which Rust keeps); the
        // products lie in [-127, 127] up to rounding, so the saturating packs are `min(127)`.
        let codes = |c: usize| _mm256_cvtps_epi32(_mm256_mul_ps(load(c), scale));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let bias = _mm256_set1_epi8(-128);
        for k in 0..QK_K / 32 {
            let lo = _mm256_packs_epi32(codes(4 * k), codes(4 * k + 1));
            let hi = _mm256_packs_epi32(codes(4 * k + 2), codes(4 * k + 3));
            let q = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi), order);
            // SAFETY: 32 k + 32 <= 256 codes; unaligned store.
            unsafe { _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * k) as *mut __m256i, q) };
            // Sums of eight codes offset to unsigned (each plus 128), per 64-bit lane.
            let sums = _mm256_sad_epu8(_mm256_xor_si256(q, bias), _mm256_setzero_si256());
            // SAFETY: `__m256i` and `[u64; 4]` are both 32 plain bytes.
            let s = unsafe { std::mem::transmute::<__m256i, [u64; 4]>(sums) };
            b.bsums[2 * k] = (s[0] + s[1]) as i16 - 16 * 128;
            b.bsums[2 * k + 1] = (s[2] + s[3]) as i16 - 16 * 128;
        }
        b.d = 1.0 / iscale;
        true
    }
}

/// Expands Q8_K blocks back to f32.
pub fn dequantize_q8_k(blocks: &[BlockQ8K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (o, &q) in ob.iter_mut().zip(&b.qs) {
            *o = q as f32 * b.d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector path against the scalar definition: random blocks, blocks whose products
    /// land on rounding ties, a negative largest value, zeros, and non-finite values.
    #[test]
    fn quantize_q8_k_equals_its_scalar_definition() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let mut blocks: Vec<[f32; QK_K]> = Vec::new();
        for scale in [1e-3f32, 1.0, 37.5, 1e4] {
            blocks.push(std::array::from_fn(|_| next() * scale));
        }
        // max 127 (or -127): iscale -1 (or 1), so k + 0.5 lands on a tie.
        let ties: [f32; QK_K] =
            std::array::from_fn(|i| if i == 5 { 127.0 } else { (i as f32 - 128.0) * 0.5 });
        blocks.push(ties);
        blocks.push(ties.map(|v| -v));
        blocks.push([0.0; QK_K]);
        let mut first_max = ties;
        first_max[9] = -127.0;
        blocks.push(first_max);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut b = blocks[1];
            b[77] = bad;
            blocks.push(b);
        }
        let x: Vec<f32> = blocks.iter().flatten().copied().collect();
        let mut got = vec![BlockQ8K::ZERO; blocks.len()];
        quantize_q8_k(&x, &mut got);
        for (i, (xb, g)) in x.chunks_exact(QK_K).zip(&got).enumerate() {
            let mut want = BlockQ8K::ZERO;
            quantize_block(xb, &mut want);
            assert_eq!(g.qs, want.qs, "block {i}");
            assert_eq!(g.bsums, want.bsums, "block {i}");
            assert_eq!(g.d.to_bits(), want.d.to_bits(), "block {i}");
        }
    }
}
