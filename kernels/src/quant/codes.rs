//! The shared dot product of the grid and ternary types (the i-quants, TQ1_0, TQ2_0) with Q8_K
//! activations. Each type unpacks a super-block into 256 signed codes and a scale per run of 16
//! (`Unpacked`); the exact integer sum `Σ_run ls · Σ code · q8` is then one loop here, scalar
//! or AVX2, so every type's SIMD result equals its scalar twin bit for bit. ggml's scales and
//! offsets (the `0.125` of IQ2, IQ1's `delta`) stay in each type's file.

use super::{BlockQ8K, QK_K};

/// One super-block as signed codes with a scale per run of 16 values.
pub(crate) struct Unpacked {
    /// The codes, in value order.
    pub(crate) q: [i8; QK_K],
    /// The scale of each run of 16 codes.
    pub(crate) ls: [i16; QK_K / 16],
}

impl Unpacked {
    pub(crate) const fn new() -> Self {
        Self { q: [0; QK_K], ls: [0; QK_K / 16] }
    }

    /// Sets the scale of the 32-value run `r` (two runs of 16).
    #[inline]
    pub(crate) fn set_ls32(&mut self, r: usize, ls: i16) {
        self.ls[2 * r] = ls;
        self.ls[2 * r + 1] = ls;
    }

    /// Writes 8 grid bytes (a `u64`, first value in the low byte) at `at`, negated where
    /// `signs` has the value's bit.
    #[inline]
    pub(crate) fn put8(&mut self, at: usize, grid: u64, signs: u8) {
        for (j, (q, g)) in self.q[at..at + 8].iter_mut().zip(grid.to_le_bytes()).enumerate() {
            *q = if signs >> j & 1 != 0 { -(g as i8) } else { g as i8 };
        }
    }

    /// Writes 4 grid bytes (a `u32`) at `at`, negated where `signs` (4 bits) says.
    #[inline]
    pub(crate) fn put4(&mut self, at: usize, grid: u32, signs: u8) {
        for (j, (q, g)) in self.q[at..at + 4].iter_mut().zip(grid.to_le_bytes()).enumerate() {
            *q = if signs >> j & 1 != 0 { -(g as i8) } else { g as i8 };
        }
    }
}

/// `Σ_run ls · Σ code · q8` over one super-block, exact.
pub(crate) fn sum_scalar(u: &Unpacked, y: &BlockQ8K) -> i32 {
    let mut s = 0i32;
    for (r, (q, y)) in u.q.chunks_exact(16).zip(y.qs.chunks_exact(16)).enumerate() {
        let run: i32 = q.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum();
        s += u.ls[r] as i32 * run;
    }
    s
}

/// The signs of 7 bits with an eighth making their parity even (ggml's `ksigns_iq2xs`).
#[inline]
pub(crate) fn ksigns(i: u32) -> u8 {
    let i = (i & 127) as u8;
    i | (((i.count_ones() & 1) as u8) << 7)
}

/// The sum of `dots(w_i, y_i)` over a row, `unpack` filling the codes for each super-block and
/// `combine(block index, exact sum)` turning it into its f32 contribution.
#[inline]
pub(crate) fn dot_rows<B>(
    w: &[B],
    x: &[BlockQ8K],
    unpack: impl Fn(&B, &mut Unpacked),
    sum: impl Fn(&Unpacked, &BlockQ8K) -> i32,
    combine: impl Fn(&B, &BlockQ8K, i32) -> f32,
) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut u = Unpacked::new();
    let mut s = 0.0f32;
    for (a, b) in w.iter().zip(x) {
        unpack(a, &mut u);
        s += combine(a, b, sum(&u, b));
    }
    s
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, Unpacked};
    use crate::dot::avx2_k::hsum_i32;

    /// The AVX2 twin of [`super::sum_scalar`]: the same exact integer.
    pub(crate) fn sum(u: &Unpacked, y: &BlockQ8K) -> i32 {
        // SAFETY: the grid types' AVX2 dots sit only in the AVX2 column of the type table,
        // used after `Isa::Avx2.supported()` said yes.
        unsafe { imp(u, y) }
    }

    #[target_feature(enable = "avx2")]
    fn imp(u: &Unpacked, y: &BlockQ8K) -> i32 {
        let mut acc = _mm256_setzero_si256();
        for c in 0..8 {
            // SAFETY: 32 * c + 32 <= 256, the length of both code arrays; unaligned loads.
            let (qa, qb) = unsafe {
                (
                    _mm256_loadu_si256(u.q.as_ptr().add(32 * c) as *const __m256i),
                    _mm256_loadu_si256(y.qs.as_ptr().add(32 * c) as *const __m256i),
                )
            };
            // |a| x sign(b, a): pairs of products fit i16 (codes are at most 62 in magnitude).
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qa, qa), _mm256_sign_epi8(qb, qa));
            let ls = _mm256_set_m128i(_mm_set1_epi16(u.ls[2 * c + 1]), _mm_set1_epi16(u.ls[2 * c]));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ls));
        }
        hsum_i32(acc)
    }
}

/// The scalar dot product `$name` of a grid type and its AVX2 twin (in a module `avx2`), both
/// `codes::dot_rows` over the type's `$unpack` and `$combine`.
macro_rules! grid_dots {
    ($name:ident, $block:ty, $unpack:ident, $combine:ident) => {
        /// Weights of this type . Q8_K activations: the exact integer sum per super-block (see
        /// `codes.rs`), scaled as ggml scales it.
        pub fn $name(w: &[$block], x: &[super::BlockQ8K]) -> f32 {
            super::codes::dot_rows(w, x, $unpack, super::codes::sum_scalar, $combine)
        }

        #[cfg(target_arch = "x86_64")]
        pub(crate) mod avx2 {
            use super::*;

            /// The AVX2 twin: the same integer sums, so the same bits.
            pub(crate) fn $name(w: &[$block], x: &[super::super::BlockQ8K]) -> f32 {
                super::super::codes::dot_rows(
                    w,
                    x,
                    $unpack,
                    super::super::codes::avx2::sum,
                    $combine,
                )
            }
        }
    };
}
pub(crate) use grid_dots;

/// The ternary types' dot product the way ggml's AVX2 kernels round it: codes `q + 1` (0..2)
/// times the activations summed exactly into eight lanes (value `v` into lane `(v % 32) / 4`),
/// each lane less the activation sums of its 32 values (`bsums`), then per super-block
/// `lane * (dy * d)` added into eight float lanes and those summed pairwise. The integer total
/// is the same as any order's; the lanes decide the float rounding, which is what makes
/// llama.cpp's logits reproducible.
pub(crate) fn ternary_dot<B>(
    w: &[B],
    x: &[BlockQ8K],
    codes: impl Fn(&B, &mut [i8; QK_K]),
    scale: impl Fn(&B) -> f32,
) -> f32 {
    assert_eq!(w.len(), x.len());
    let mut q = [0i8; QK_K];
    let mut acc = [0.0f32; 8];
    for (a, b) in w.iter().zip(x) {
        codes(a, &mut q);
        let mut lanes = [0i32; 8];
        for (v, (&c, &y)) in q.iter().zip(&b.qs).enumerate() {
            lanes[(v % 32) / 4] += (c as i32 + 1) * y as i32;
        }
        let d = b.d * scale(a);
        for (l, (acc, lane)) in acc.iter_mut().zip(lanes).enumerate() {
            let lane = lane - (b.bsums[2 * l] as i32 + b.bsums[2 * l + 1] as i32);
            *acc = (lane as f32).mul_add(d, *acc);
        }
    }
    hsum8(acc)
}

/// ggml's `hsum_float_8`: upper half plus lower half, then pairs, then the last two.
#[inline]
pub(crate) fn hsum8(l: [f32; 8]) -> f32 {
    let r = [l[4] + l[0], l[5] + l[1], l[6] + l[2], l[7] + l[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}
