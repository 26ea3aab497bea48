//! The KV kernels per ISA that the dot-product table does not have: TurboQuant dot and axpy,
//! and Q8_0 / Q4_0 value sums; and the table of the ones this CPU runs. A group of eight
//! TurboQuant codes is one word: broadcast, shifted per lane, masked to a magnitude index looked
//! up in the codebook held in a register, its sign bit moved to the float's sign. AVX-512 takes
//! two groups per step. Each is tested against its scalar twin.

use super::codebook::Codebook;
use super::tq;
use crate::dot::Isa;
use crate::quant::{BlockQ4_0, BlockQ8_0};

/// `q . dequantize(bytes)` for one TurboQuant part: bytes, bits, rotation block, codebook, q.
pub type TqDot = fn(&[u8], u32, usize, &Codebook, &[f32]) -> f32;
/// `out += a * dequantize(bytes)` for one TurboQuant part.
pub type TqAxpy = fn(f32, &[u8], u32, usize, &Codebook, &mut [f32]);

/// The KV kernels of one ISA.
#[derive(Debug, Clone, Copy)]
pub struct KvKernels {
    /// Which ISA.
    pub isa: Isa,
    /// Score of a rotated query against a cached TurboQuant head.
    pub tq_dot: TqDot,
    /// Weighted sum of cached TurboQuant values.
    pub tq_axpy: TqAxpy,
    /// `out += a * x` for Q8_0 values.
    pub q8_0_axpy: fn(f32, &[BlockQ8_0], &mut [f32]),
    /// `out += a * x` for Q4_0 values.
    pub q4_0_axpy: fn(f32, &[BlockQ4_0], &mut [f32]),
}

impl KvKernels {
    /// The kernels of `isa`, or None where this CPU cannot run them (or none are written).
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(Self {
                isa,
                tq_dot: tq::dot,
                tq_axpy: tq::axpy,
                q8_0_axpy: scalar_q8_0_axpy,
                q4_0_axpy: scalar_q4_0_axpy,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(Self {
                isa,
                tq_dot: x86::dot_avx2,
                tq_axpy: x86::axpy_avx2,
                q8_0_axpy: x86::q8_0_axpy,
                q4_0_axpy: x86::q4_0_axpy,
            }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(Self {
                isa,
                tq_dot: x86::dot_avx512,
                tq_axpy: x86::axpy_avx512,
                q8_0_axpy: x86::q8_0_axpy,
                q4_0_axpy: x86::q4_0_axpy,
            }),
            _ => None,
        }
    }
}

/// The kernels in use: those of the dot-product table's ISA (`FLOE_ISA` or detected), else
/// the scalar ones.
pub fn kv_kernels() -> &'static KvKernels {
    static CHOSEN: std::sync::OnceLock<KvKernels> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        KvKernels::for_isa(crate::dot::kernels().isa)
            .or_else(|| KvKernels::for_isa(Isa::Scalar))
            .expect("scalar kernels run everywhere")
    })
}

/// Scalar `out += a * x` over Q8_0 blocks.
pub fn scalar_q8_0_axpy(a: f32, x: &[BlockQ8_0], out: &mut [f32]) {
    for (b, ob) in x.iter().zip(out.chunks_exact_mut(32)) {
        let s = a * b.d.to_f32();
        ob.iter_mut().zip(&b.qs).for_each(|(y, &q)| *y += s * q as f32);
    }
}

/// Scalar `out += a * x` over Q4_0 blocks (low nibbles are values 0..16, high ones 16..32).
pub fn scalar_q4_0_axpy(a: f32, x: &[BlockQ4_0], out: &mut [f32]) {
    for (b, ob) in x.iter().zip(out.chunks_exact_mut(32)) {
        let s = a * b.d.to_f32();
        let (lo, hi) = ob.split_at_mut(16);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b.qs) {
            *l += s * ((q & 15) as i32 - 8) as f32;
            *h += s * ((q >> 4) as i32 - 8) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::codebook::Codebook;
    use super::super::tq::block_bytes;
    use crate::quant::{BlockQ4_0, BlockQ8_0};

    /// Calls `$f::<BITS>($args)` for the run-time bit width (2, 3 or 4, checked by `checks`).
    macro_rules! by_bits {
        ($bits:expr, $f:ident($($arg:expr),*)) => {
            match $bits {
                4 => $f::<4>($($arg),*),
                3 => $f::<3>($($arg),*),
                _ => $f::<2>($($arg),*),
            }
        };
    }

    fn scale(b: &[u8], at: usize) -> f32 {
        f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
    }

    /// The code word at `at`: four bytes where the row has them (the bits past the group are
    /// never looked at), else the group's own bytes.
    #[inline(always)]
    fn word<const BITS: usize>(bytes: &[u8], at: usize) -> i32 {
        match bytes.get(at..at + 4) {
            Some(w) => i32::from_le_bytes([w[0], w[1], w[2], w[3]]),
            None => {
                let mut w = [0u8; 4];
                w[..BITS].copy_from_slice(&bytes[at..at + BITS]);
                i32::from_le_bytes(w)
            }
        }
    }

    fn checks(bytes: &[u8], bits: u32, block: usize, n: usize) {
        assert!((2..=4).contains(&bits) && block >= 16 && block.is_multiple_of(16));
        assert!(n.is_multiple_of(block) && bytes.len() >= n / block * block_bytes(block, bits));
    }

    /// Per-lane shifts of a group's codes and of their sign bits.
    #[inline(always)]
    fn shifts256<const BITS: usize>() -> (__m256i, __m256i) {
        let b = BITS as i32;
        // SAFETY: register arithmetic only; callers run with AVX2.
        unsafe {
            let m = _mm256_setr_epi32(0, b, 2 * b, 3 * b, 4 * b, 5 * b, 6 * b, 7 * b);
            (m, _mm256_add_epi32(m, _mm256_set1_epi32(b - 1)))
        }
    }

    /// Eight values of the group whose word is `w`, in units of the block's scale.
    ///
    /// # Safety
    /// AVX2 must be available.
    #[inline(always)]
    unsafe fn values8<const BITS: usize>(w: i32, sh: (__m256i, __m256i), mags: __m256) -> __m256 {
        // SAFETY: register arithmetic only; the caller runs with AVX2 (its contract).
        unsafe {
            let w = _mm256_set1_epi32(w);
            let mask = _mm256_set1_epi32((1 << (BITS - 1)) - 1);
            let m = _mm256_and_si256(_mm256_srlv_epi32(w, sh.0), mask);
            let s = _mm256_slli_epi32::<31>(_mm256_srlv_epi32(w, sh.1));
            let v = _mm256_castps_si256(_mm256_permutevar8x32_ps(mags, m));
            _mm256_castsi256_ps(_mm256_xor_si256(v, s))
        }
    }

    fn hsum256(v: __m256) -> f32 {
        // SAFETY: register arithmetic only; called from AVX2 code.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }

    pub fn dot_avx2(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        checks(bytes, bits, block, q.len());
        // SAFETY: the table holds this kernel only where AVX2 and FMA are detected; `checks`
        // bounds every block read, and `q` is loaded through 8-float chunks.
        unsafe { by_bits!(bits, dot_avx2_imp(bytes, block, book, q)) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_avx2_imp<const BITS: usize>(
        bytes: &[u8],
        block: usize,
        book: &Codebook,
        q: &[f32],
    ) -> f32 {
        let bb = block_bytes(block, BITS as u32);
        let sh = shifts256::<BITS>();
        // SAFETY: `mags` is 8 floats; every load reads an 8-float chunk of `q`.
        unsafe {
            let mags = _mm256_loadu_ps(book.mags.as_ptr());
            let mut total = _mm256_setzero_ps();
            for (k, qb) in q.chunks_exact(block).enumerate() {
                let at = k * bb;
                let mut acc = _mm256_setzero_ps();
                for (g, qg) in qb.chunks_exact(8).enumerate() {
                    let v = values8::<BITS>(word::<BITS>(bytes, at + 2 + g * BITS), sh, mags);
                    acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(qg.as_ptr()), acc);
                }
                total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale(bytes, at)), total);
            }
            hsum256(total)
        }
    }

    pub fn axpy_avx2(
        a: f32,
        bytes: &[u8],
        bits: u32,
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        checks(bytes, bits, block, out.len());
        // SAFETY: as `dot_avx2`; stores go to 8-float chunks of `out`.
        unsafe { by_bits!(bits, axpy_avx2_imp(a, bytes, block, book, out)) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn axpy_avx2_imp<const BITS: usize>(
        a: f32,
        bytes: &[u8],
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        let bb = block_bytes(block, BITS as u32);
        let sh = shifts256::<BITS>();
        // SAFETY: `mags` is 8 floats; loads and stores stay in 8-float chunks of `out`.
        unsafe {
            let mags = _mm256_loadu_ps(book.mags.as_ptr());
            for (k, ob) in out.chunks_exact_mut(block).enumerate() {
                let at = k * bb;
                let s = _mm256_set1_ps(a * scale(bytes, at));
                for (g, og) in ob.chunks_exact_mut(8).enumerate() {
                    let v = values8::<BITS>(word::<BITS>(bytes, at + 2 + g * BITS), sh, mags);
                    let y = _mm256_fmadd_ps(v, s, _mm256_loadu_ps(og.as_ptr()));
                    _mm256_storeu_ps(og.as_mut_ptr(), y);
                }
            }
        }
    }

    /// Sixteen values of the groups whose words are `lo` and `hi`.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[inline(always)]
    unsafe fn values16<const BITS: usize>(lo: i32, hi: i32, mags: __m512) -> __m512 {
        let b = BITS as i32;
        // SAFETY: register arithmetic only; the caller runs with AVX-512 F (its contract).
        unsafe {
            let w = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_set1_epi32(lo)),
                _mm256_set1_epi32(hi),
            );
            let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
            let shift = _mm512_mullo_epi32(lane, _mm512_set1_epi32(b));
            let mask = _mm512_set1_epi32((1 << (b - 1)) - 1);
            let m = _mm512_and_si512(_mm512_srlv_epi32(w, shift), mask);
            let sign = _mm512_srlv_epi32(w, _mm512_add_epi32(shift, _mm512_set1_epi32(b - 1)));
            let s = _mm512_slli_epi32::<31>(sign);
            let v = _mm512_castps_si512(_mm512_permutexvar_ps(m, mags));
            _mm512_castsi512_ps(_mm512_xor_si512(v, s))
        }
    }

    pub fn dot_avx512(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        checks(bytes, bits, block, q.len());
        // SAFETY: the table holds this kernel only where AVX-512 F is detected; `checks` bounds
        // every block read (blocks are whole pairs of groups), `q` is read in 16-float chunks.
        unsafe { by_bits!(bits, dot_avx512_imp(bytes, block, book, q)) }
    }

    #[target_feature(enable = "avx512f")]
    fn dot_avx512_imp<const BITS: usize>(
        bytes: &[u8],
        block: usize,
        book: &Codebook,
        q: &[f32],
    ) -> f32 {
        let bb = block_bytes(block, BITS as u32);
        // SAFETY: `mags` is 8 floats, indices stay below 8; loads read 16-float chunks.
        unsafe {
            let mags = _mm512_castps256_ps512(_mm256_loadu_ps(book.mags.as_ptr()));
            let mut total = _mm512_setzero_ps();
            for (k, qb) in q.chunks_exact(block).enumerate() {
                let at = k * bb + 2;
                let mut acc = _mm512_setzero_ps();
                for (p, qg) in qb.chunks_exact(16).enumerate() {
                    let lo = word::<BITS>(bytes, at + 2 * p * BITS);
                    let hi = word::<BITS>(bytes, at + (2 * p + 1) * BITS);
                    let v = values16::<BITS>(lo, hi, mags);
                    acc = _mm512_fmadd_ps(v, _mm512_loadu_ps(qg.as_ptr()), acc);
                }
                total = _mm512_fmadd_ps(acc, _mm512_set1_ps(scale(bytes, k * bb)), total);
            }
            _mm512_reduce_add_ps(total)
        }
    }

    pub fn axpy_avx512(
        a: f32,
        bytes: &[u8],
        bits: u32,
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        checks(bytes, bits, block, out.len());
        // SAFETY: as `dot_avx512`; stores go to 16-float chunks of `out`.
        unsafe { by_bits!(bits, axpy_avx512_imp(a, bytes, block, book, out)) }
    }

    #[target_feature(enable = "avx512f")]
    fn axpy_avx512_imp<const BITS: usize>(
        a: f32,
        bytes: &[u8],
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        let bb = block_bytes(block, BITS as u32);
        // SAFETY: as `dot_avx512_imp`; loads and stores stay in 16-float chunks of `out`.
        unsafe {
            let mags = _mm512_castps256_ps512(_mm256_loadu_ps(book.mags.as_ptr()));
            for (k, ob) in out.chunks_exact_mut(block).enumerate() {
                let at = k * bb + 2;
                let s = _mm512_set1_ps(a * scale(bytes, k * bb));
                for (p, og) in ob.chunks_exact_mut(16).enumerate() {
                    let lo = word::<BITS>(bytes, at + 2 * p * BITS);
                    let hi = word::<BITS>(bytes, at + (2 * p + 1) * BITS);
                    let v = values16::<BITS>(lo, hi, mags);
                    let y = _mm512_fmadd_ps(v, s, _mm512_loadu_ps(og.as_ptr()));
                    _mm512_storeu_ps(og.as_mut_ptr(), y);
                }
            }
        }
    }

    pub fn q8_0_axpy(a: f32, x: &[BlockQ8_0], out: &mut [f32]) {
        assert!(out.len() >= x.len() * 32);
        // SAFETY: the table holds this kernel only where AVX2 and FMA are detected; each block
        // reads its own 32 bytes and writes 32 floats of `out` (length checked above).
        unsafe { q8_0_axpy_imp(a, x, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn q8_0_axpy_imp(a: f32, x: &[BlockQ8_0], out: &mut [f32]) {
        for (b, ob) in x.iter().zip(out.chunks_exact_mut(32)) {
            // SAFETY: `b.qs` is 32 bytes read in 8-byte pieces; `ob` is 32 floats.
            unsafe {
                let s = _mm256_set1_ps(a * b.d.to_f32());
                for i in 0..4 {
                    let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * i) as *const __m128i);
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    let o = ob.as_mut_ptr().add(8 * i);
                    _mm256_storeu_ps(o, _mm256_fmadd_ps(v, s, _mm256_loadu_ps(o)));
                }
            }
        }
    }

    pub fn q4_0_axpy(a: f32, x: &[BlockQ4_0], out: &mut [f32]) {
        assert!(out.len() >= x.len() * 32);
        // SAFETY: as `q8_0_axpy`: each block reads its 16 bytes and writes its 32 floats.
        unsafe { q4_0_axpy_imp(a, x, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn q4_0_axpy_imp(a: f32, x: &[BlockQ4_0], out: &mut [f32]) {
        for (b, ob) in x.iter().zip(out.chunks_exact_mut(32)) {
            // SAFETY: `b.qs` is 16 bytes read in 8-byte pieces; `ob` is 32 floats.
            unsafe {
                let s = _mm256_set1_ps(a * b.d.to_f32());
                let eight = _mm256_set1_epi32(8);
                for i in 0..2 {
                    let q = _mm_loadl_epi64(b.qs.as_ptr().add(8 * i) as *const __m128i);
                    let w = _mm256_cvtepu8_epi32(q);
                    let lo = _mm256_sub_epi32(_mm256_and_si256(w, _mm256_set1_epi32(15)), eight);
                    let hi = _mm256_sub_epi32(_mm256_srli_epi32::<4>(w), eight);
                    for (v, at) in [(lo, 8 * i), (hi, 16 + 8 * i)] {
                        let o = ob.as_mut_ptr().add(at);
                        let y = _mm256_fmadd_ps(_mm256_cvtepi32_ps(v), s, _mm256_loadu_ps(o));
                        _mm256_storeu_ps(o, y);
                    }
                }
            }
        }
    }
}
