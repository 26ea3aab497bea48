//! The shared dot products of the grid and ternary types (the i-quants, TQ1_0, TQ2_0) with
//! Q8_K activations, rounded the way ggml's AVX2 kernels round them. Those kernels sum exact
//! integer products into eight i32 lanes (value `v` of each run of 32 into lane `(v % 32) / 4`,
//! the lanes `maddubs` + `madd` leave), then per super-block add `lane * d` into eight f32
//! lanes with one fused multiply-add, and sum those lanes pairwise at the end. The integer
//! totals are the same in any order; the lanes decide the float rounding, so a dot product
//! that keeps them gives llama.cpp's result bit for bit. Each grid type describes one run of
//! 32 values ([`GridBlock::run`]: grid bytes, sign bytes, two scales); the scalar and AVX2
//! drivers here do the rest, so the two agree bit for bit.

use super::int_lanes::{IntLanes, ScalarLanes};
use super::{BlockQ8K, QK_K};

/// One run of 32 values of a grid type, as ggml's AVX2 kernels load it.
#[derive(Clone, Copy)]
pub(crate) struct Run {
    /// The grid values, eight per word, the first in the low byte: magnitudes (0..=62), or
    /// for [`GridBlock::SIGNED`] types signed bytes.
    pub(crate) grid: [u64; 4],
    /// Per value `0x01` (keep) or `0xFF` (negate), in the same layout (unsigned grids only).
    pub(crate) signs: [u64; 4],
    /// The scales of values 0..16 and 16..32.
    pub(crate) ls: [i16; 2],
}

/// The shift some grid types add to every value, and how ggml sums it.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Delta {
    /// None.
    None,
    /// IQ1_S: `± delta` per run, summed from the activations' `bsums` into one f32.
    PerRun(f32),
    /// IQ1_M: `± delta` per group of 8, summed into a second set of lanes.
    Lanes(f32),
}

/// A super-block type whose values are grid points with signs and run scales.
pub(crate) trait GridBlock: Copy {
    /// Whether the grid bytes are signed values (IQ1) rather than magnitudes with signs.
    const SIGNED: bool;
    /// ggml's factor on the final sum (IQ2: 1/8, IQ3_XXS: 1/4).
    const MULT: f32;
    /// The shift, if any.
    const DELTA: Delta = Delta::None;
    /// The super-block scale, as stored (an f16).
    fn scale_f16(&self) -> half::f16;
    /// The super-block scale.
    #[inline(always)]
    fn scale(&self) -> f32 {
        self.scale_f16().to_f32()
    }
    /// Run `r` (0..8).
    fn run(&self, r: usize) -> Run;
    /// Whether the type stores its signs as plain bits ([`GridBlock::sign_bits`]), which the
    /// AVX2 kernel expands in registers rather than loading [`Run::signs`] (for parity-completed
    /// 7-bit signs the byte table measured faster than computing the parity). Only the x86
    /// kernels read it.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    const SIGN_BITS: bool = false;
    /// Run `r`'s signs as bits (bit `v` set: value `v` is negative), where
    /// [`GridBlock::SIGN_BITS`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn sign_bits(&self, _r: usize) -> u32 {
        0
    }
    /// [`Delta::PerRun`]: run `r`'s shift sum, `ls * sign * (bsums of its 32 values)`, from
    /// the activations' sums per 16.
    fn delta_run(&self, _r: usize, _bsums: &[i16; 16]) -> i32 {
        0
    }
    /// Run `r`'s shift signs, `0x01` / `0xFF` per value as in [`Run`] (the dot products read
    /// them for [`Delta::Lanes`]; the prefill tiles of every type with a shift).
    fn delta_signs(&self, _r: usize) -> [u64; 4] {
        [0; 4]
    }
    /// Run `r`'s [`Run::grid`] as the AVX2 kernel loads it. The default builds the register
    /// from [`GridBlock::run`]'s four table words, element by element, as ggml does. The IQ3
    /// types, eight table entries per run, gather them instead: one gather of eight measured
    /// faster than eight inserts, where one gather of four eight-value words (the IQ2 and IQ1
    /// types) measured no faster than four.
    ///
    /// # Safety
    /// The CPU must have AVX2; only the AVX2 kernel calls it, inlined.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_grid(&self, r: usize) -> std::arch::x86_64::__m256i {
        avx2::words(self.run(r).grid)
    }
    /// [`Delta::PerRun`]: the block's sum of [`GridBlock::delta_run`] over its runs, as the AVX2
    /// kernel takes it (the same integer in any order).
    ///
    /// # Safety
    /// As for [`GridBlock::avx2_grid`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_run_shifts(&self, bsums: &[i16; 16]) -> i32 {
        (0..QK_K / 32).map(|r| self.delta_run(r, bsums)).sum()
    }
    /// Run `r`'s [`GridBlock::delta_signs`] as the AVX2 kernel applies them.
    ///
    /// # Safety
    /// As for [`GridBlock::avx2_grid`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_delta_signs(&self, r: usize) -> std::arch::x86_64::__m256i {
        avx2::words(self.delta_signs(r))
    }
    /// Run `r`'s signs as the AVX2 kernel applies them, `0x01` / `0xFF` per value as
    /// [`Run::signs`] (unsigned grids only). The default expands [`GridBlock::sign_bits`] or
    /// loads [`Run::signs`].
    ///
    /// # Safety
    /// As for [`GridBlock::avx2_grid`].
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn avx2_signs(&self, r: usize) -> std::arch::x86_64::__m256i {
        if Self::SIGN_BITS {
            avx2::sign_bytes(self.sign_bits(r))
        } else {
            avx2::words(self.run(r).signs)
        }
    }
}

/// Eight f32 lanes accumulated and summed as ggml's AVX2 kernels do.
#[derive(Clone, Copy, Default)]
pub(crate) struct Lanes([f32; 8]);

impl Lanes {
    /// `lane += int * d`, fused, per lane (`_mm256_fmadd_ps`).
    #[inline]
    pub(crate) fn fma(&mut self, d: f32, ints: &[i32; 8]) {
        for (acc, &i) in self.0.iter_mut().zip(ints) {
            *acc = (i as f32).mul_add(d, *acc);
        }
    }

    /// The lane-wise sum of two sets (`_mm256_add_ps`).
    #[inline]
    pub(crate) fn plus(&self, other: &Lanes) -> Lanes {
        Lanes(std::array::from_fn(|l| self.0[l] + other.0[l]))
    }

    /// ggml's `hsum_float_8`.
    #[inline]
    pub(crate) fn sum(&self) -> f32 {
        hsum8(self.0)
    }
}

/// The scalar grid dot product: exact integer lanes, rounded as the AVX2 kernel rounds.
pub(crate) fn grid_dot<B: GridBlock>(w: &[B], x: &[BlockQ8K]) -> f32 {
    grid_dot_with::<B, ScalarLanes>(w, x)
}

/// [`grid_dot`] with its integer lanes from `L`.
pub(crate) fn grid_dot_with<B: GridBlock, L: IntLanes>(w: &[B], x: &[BlockQ8K]) -> f32 {
    assert_eq!(w.len(), x.len());
    let (mut acc, mut acc2, mut shift) = (Lanes::default(), Lanes::default(), 0.0f32);
    for (a, b) in w.iter().zip(x) {
        let (mut lanes, mut lanes2, mut runs) = ([0i32; 8], [0i32; 8], 0i32);
        for r in 0..QK_K / 32 {
            let run = a.run(r);
            let q8 = &b.qs[32 * r..32 * r + 32];
            let l = L::grid_run(&run, B::SIGNED, q8);
            lanes = std::array::from_fn(|i| lanes[i] + l[i]);
            match B::DELTA {
                Delta::None => {}
                Delta::PerRun(_) => runs += a.delta_run(r, &b.bsums),
                Delta::Lanes(_) => {
                    let l = L::sign_run(&a.delta_signs(r), run.ls, q8);
                    lanes2 = std::array::from_fn(|i| lanes2[i] + l[i]);
                }
            }
        }
        let d = a.scale() * b.d;
        acc.fma(d, &lanes);
        match B::DELTA {
            Delta::None => {}
            Delta::PerRun(_) => shift = (runs as f32).mul_add(d, shift),
            Delta::Lanes(_) => acc2.fma(d, &lanes2),
        }
    }
    finish::<B>(acc.sum(), acc2.sum(), shift)
}

/// The final sum of a grid dot product from its lanes' sums.
#[inline]
pub(crate) fn finish<B: GridBlock>(main: f32, lanes2: f32, shift: f32) -> f32 {
    match B::DELTA {
        Delta::None => B::MULT * main,
        Delta::PerRun(delta) => delta.mul_add(shift, B::MULT * main),
        Delta::Lanes(delta) => delta.mul_add(lanes2, B::MULT * main),
    }
}

/// Per sign byte, its eight bits as `0x01` (clear) or `0xFF` (set) bytes.
pub(crate) const SIGN_BYTES: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut j = 0;
        while j < 8 {
            let b: u64 = if (i >> j) & 1 != 0 { 0xFF } else { 0x01 };
            t[i] |= b << (8 * j);
            j += 1;
        }
        i += 1;
    }
    t
};

/// [`SIGN_BYTES`] of the 7-bit sign indices with even parity (ggml's `keven_signs_q2xs`).
pub(crate) const KSIGN_BYTES: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        t[i] = SIGN_BYTES[ksigns(i as u32) as usize];
        i += 1;
    }
    t
};

/// The signs of 7 bits with an eighth making their parity even (ggml's `ksigns_iq2xs`).
#[inline]
pub(crate) const fn ksigns(i: u32) -> u8 {
    let i = (i & 127) as u8;
    i | (((i.count_ones() & 1) as u8) << 7)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use super::{finish, BlockQ8K, Delta, GridBlock, QK_K};
    use crate::dot::avx2::hsum;

    #[inline(always)]
    pub(crate) fn words(w: [u64; 4]) -> __m256i {
        // SAFETY: AVX is enabled in every caller (inlined into `dot`).
        unsafe { _mm256_set_epi64x(w[3] as i64, w[2] as i64, w[1] as i64, w[0] as i64) }
    }

    /// Per value of a run, `0x01` (bit clear: keep) or `0xFF` (bit set: negate), from its 32
    /// sign bits: each byte of the bits copied to eight lanes, then each lane's own bit tested.
    #[inline(always)]
    pub(crate) fn sign_bytes(bits: u32) -> __m256i {
        // SAFETY: AVX2 is enabled in every caller (inlined into `grid_dot`).
        unsafe {
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(bits as i32),
                _mm256_setr_epi64x(
                    0,
                    0x0101_0101_0101_0101,
                    0x0202_0202_0202_0202,
                    0x0303_0303_0303_0303,
                ),
            );
            let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
            _mm256_or_si256(set, _mm256_set1_epi8(1))
        }
    }

    /// The sign bytes of four 7-bit sign indices (bits `7 l..7 l + 7` of `word`), each
    /// completed to even parity: [`super::KSIGN_BYTES`] by one gather.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[inline(always)]
    pub(crate) unsafe fn ksign_words(word: u32) -> __m256i {
        // SAFETY: the caller's contract (AVX2).
        unsafe {
            let at = _mm_srlv_epi32(_mm_set1_epi32(word as i32), _mm_setr_epi32(0, 7, 14, 21));
            let at = _mm_and_si128(at, _mm_set1_epi32(127));
            // Seven-bit indices, inside the 128-entry table.
            _mm256_i32gather_epi64::<8>(super::KSIGN_BYTES.as_ptr() as *const i64, at)
        }
    }

    /// The AVX2 twin of [`super::grid_dot`]: the same integer lanes, the same roundings.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA (`Isa::Avx2.supported()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn grid_dot<B: GridBlock>(w: &[B], x: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), x.len());
        let ones = _mm256_set1_epi8(1);
        let (mut acc, mut acc2, mut shift) = (_mm256_setzero_ps(), _mm256_setzero_ps(), 0.0f32);
        for (a, b) in w.iter().zip(x) {
            let (mut sumi, mut sumi2, mut runs) =
                (_mm256_setzero_si256(), _mm256_setzero_si256(), 0i32);
            for r in 0..QK_K / 32 {
                let run = a.run(r);
                // SAFETY: 32 * r + 32 <= 256 = qs's length; unaligned load.
                let q8 = unsafe { _mm256_loadu_si256(b.qs.as_ptr().add(32 * r) as *const __m256i) };
                // SAFETY: this function's contract (AVX2).
                let g = unsafe { a.avx2_grid(r) };
                // Pairs of products fit i16: grid magnitudes are at most 62, q8 at most 127.
                let p16 = if B::SIGNED {
                    _mm256_maddubs_epi16(_mm256_sign_epi8(g, g), _mm256_sign_epi8(q8, g))
                } else {
                    // SAFETY: as above.
                    let signs = unsafe { a.avx2_signs(r) };
                    _mm256_maddubs_epi16(g, _mm256_sign_epi8(q8, signs))
                };
                let ls = _mm256_set_m128i(_mm_set1_epi16(run.ls[1]), _mm_set1_epi16(run.ls[0]));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, ls));
                match B::DELTA {
                    Delta::None => {}
                    Delta::PerRun(_) => {}
                    Delta::Lanes(_) => {
                        // SAFETY: this function's contract (AVX2).
                        let ds = unsafe { a.avx2_delta_signs(r) };
                        let p = _mm256_maddubs_epi16(ones, _mm256_sign_epi8(q8, ds));
                        sumi2 = _mm256_add_epi32(sumi2, _mm256_madd_epi16(p, ls));
                    }
                }
            }
            if let Delta::PerRun(_) = B::DELTA {
                // SAFETY: this function's contract (AVX2).
                runs = unsafe { a.avx2_run_shifts(&b.bsums) };
            }
            let d = crate::dot::avx2::f16_to_f32(a.scale_f16()) * b.d;
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
            match B::DELTA {
                Delta::None => {}
                Delta::PerRun(_) => shift = (runs as f32).mul_add(d, shift),
                Delta::Lanes(_) => {
                    acc2 = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi2), acc2)
                }
            }
        }
        finish::<B>(hsum(acc), hsum(acc2), shift)
    }
}

/// The scalar dot product `$name` of a grid type and its AVX2 twin (in a module `avx2`).
macro_rules! grid_dots {
    ($name:ident, $block:ty) => {
        /// Weights of this type . Q8_K activations, rounded as ggml's AVX2 kernel rounds (see
        /// `codes.rs`).
        pub fn $name(w: &[$block], x: &[super::BlockQ8K]) -> f32 {
            super::codes::grid_dot(w, x)
        }

        #[cfg(target_arch = "x86_64")]
        pub(crate) mod avx2 {
            use super::*;

            /// The AVX2 twin: the same integer lanes, so the same bits.
            pub(crate) fn $name(w: &[$block], x: &[super::super::BlockQ8K]) -> f32 {
                // SAFETY: the grid types' AVX2 dots sit only in the AVX2 column of the type
                // table, used after `Isa::Avx2.supported()` (AVX2, FMA, F16C) said yes.
                unsafe { super::super::codes::avx2::grid_dot(w, x) }
            }
        }

        #[cfg(target_arch = "aarch64")]
        pub(crate) mod neon {
            use super::*;

            /// The NEON twin: the same integer lanes, so the same bits.
            pub(crate) fn $name(w: &[$block], x: &[super::super::BlockQ8K]) -> f32 {
                super::super::codes::grid_dot_with::<$block, super::super::int_lanes::NeonLanes>(
                    w, x,
                )
            }
        }
    };
}
pub(crate) use grid_dots;

/// Prefill's unpacking of a grid type without a shift (see `unpacked.rs`).
macro_rules! grid_unpack {
    ($block:ty) => {
        impl super::unpacked::Unpack for $block {
            const MULT: f32 = <$block as GridBlock>::MULT;
            // Grid magnitudes reach 62 (`grid_magnitudes_are_small_codes`).
            const SMALL_CODES: bool = true;
            fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
                super::unpacked::unpack_grid(self, codes, ls)
            }
            #[cfg(target_arch = "x86_64")]
            unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
                // SAFETY: the caller's contract: the CPU has AVX2.
                unsafe { super::unpacked::avx2::unpack_grid(self, codes, ls) }
            }
        }
    };
}
pub(crate) use grid_unpack;

/// A ternary type's dequantisation, scalar dot (and its lanes-generic form for NEON) and
/// prefill unpacking, all from its `codes` (value order, -1..=1) and its f16 scale `d`.
macro_rules! ternary_type {
    ($block:ty, $dequantize:ident, $dot:ident, $dot_with:ident) => {
        /// Expands blocks to f32: `code * d`.
        pub fn $dequantize(blocks: &[$block], out: &mut [f32]) {
            assert_eq!(out.len(), blocks.len() * QK_K);
            let mut q = [0i8; QK_K];
            for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
                codes(b, &mut q);
                let d = b.d.to_f32();
                for (o, &v) in ob.iter_mut().zip(&q) {
                    *o = v as f32 * d;
                }
            }
        }

        /// Weights of this type . Q8_K, rounded as ggml's AVX2 kernel rounds it (see
        /// `codes::ternary_dot`).
        pub fn $dot(w: &[$block], x: &[BlockQ8K]) -> f32 {
            super::codes::ternary_dot(w, x, codes, |b| b.d.to_f32())
        }

        /// The dot with its integer lanes from `L`.
        #[cfg(target_arch = "aarch64")]
        pub(crate) fn $dot_with<L: super::int_lanes::IntLanes>(
            w: &[$block],
            x: &[BlockQ8K],
        ) -> f32 {
            super::codes::ternary_dot_with::<_, L>(w, x, codes, |b| b.d.to_f32())
        }

        /// The ternary codes as the many-token prefill kernels read them: stored plus 1
        /// (0..=2, the matvec kernel's form), one scale for every run; the `- 1` is
        /// [`super::unpacked::Unpack::STORED_OFFSET`].
        impl super::unpacked::Unpack for $block {
            const MULT: f32 = 1.0;
            const SMALL_CODES: bool = true;
            const STORED_OFFSET: i32 = 1;
            fn unpack(&self, out: &mut [i8], ls: &mut [i16]) -> f32 {
                let mut q = [0i8; QK_K];
                codes(self, &mut q);
                for (o, c) in out.iter_mut().zip(q) {
                    *o = c + 1;
                }
                ls[..QK_K / 16].fill(1);
                self.d.to_f32()
            }
        }
    };
}
pub(crate) use ternary_type;

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
    ternary_dot_with::<B, ScalarLanes>(w, x, codes, scale)
}

/// [`ternary_dot`] with its integer lanes from `L`.
pub(crate) fn ternary_dot_with<B, L: IntLanes>(
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
        // Codes + 1 (0..=2), as ggml's kernels multiply them; the sums take the 1 back.
        let lanes = L::lanes256(&q.map(|c| c + 1), &[1; 16], &b.qs);
        let d = b.d * scale(a);
        for (l, (acc, lane)) in acc.iter_mut().zip(lanes).enumerate() {
            let lane = lane - (b.bsums[2 * l] as i32 + b.bsums[2 * l + 1] as i32);
            *acc = (lane as f32).mul_add(d, *acc);
        }
    }
    hsum8(acc)
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod ternary_avx2 {
    use std::arch::x86_64::*;

    use super::{BlockQ8K, QK_K};
    use crate::dot::avx2::hsum;

    /// The AVX2 twin of [`super::ternary_dot`]: `codes` writes a super-block's codes plus one
    /// (0..=2) in value order with AVX2; the lanes and roundings are the scalar twin's.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (`Isa::Avx2.supported()`).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn ternary_dot<B>(
        w: &[B],
        x: &[BlockQ8K],
        codes: impl Fn(&B, &mut [u8; QK_K]),
        scale: impl Fn(&B) -> half::f16,
    ) -> f32 {
        assert_eq!(w.len(), x.len());
        let ones = _mm256_set1_epi16(1);
        let mut q = [0u8; QK_K];
        let mut acc = _mm256_setzero_ps();
        for (a, b) in w.iter().zip(x) {
            codes(a, &mut q);
            let mut sumi = _mm256_setzero_si256();
            for c in 0..QK_K / 32 {
                // SAFETY: 32 * c + 32 <= 256, both arrays' length; unaligned loads.
                let (qa, qb) = unsafe {
                    (
                        _mm256_loadu_si256(q.as_ptr().add(32 * c) as *const __m256i),
                        _mm256_loadu_si256(b.qs.as_ptr().add(32 * c) as *const __m256i),
                    )
                };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(qa, qb), ones);
                sumi = _mm256_add_epi32(sumi, p);
            }
            // SAFETY: bsums is 16 i16, 32 bytes; unaligned load.
            let bsums = unsafe { _mm256_loadu_si256(b.bsums.as_ptr() as *const __m256i) };
            let lanes = _mm256_sub_epi32(sumi, _mm256_madd_epi16(bsums, ones));
            let d = _mm256_set1_ps(b.d * crate::dot::avx2::f16_to_f32(scale(a)));
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lanes), acc);
        }
        hsum(acc)
    }
}

/// ggml's `hsum_float_8`: upper half plus lower half, then pairs, then the last two.
#[inline]
pub(crate) fn hsum8(l: [f32; 8]) -> f32 {
    let r = [l[4] + l[0], l[5] + l[1], l[6] + l[2], l[7] + l[3]];
    (r[0] + r[2]) + (r[1] + r[3])
}
