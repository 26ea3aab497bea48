//! TurboQuant dot and axpy per ISA, and the table of the ones this CPU runs. A group of eight
//! codes is one word: broadcast, shifted per lane, masked to a magnitude index looked up in
//! the codebook held in a register, its sign bit moved to the float's sign. AVX-512 takes two
//! groups per step. Each is tested against the scalar twin in `tq`.

use super::codebook::Codebook;
use super::tq;
use crate::dot::Isa;

/// `q . dequantize(bytes)` for one part.
pub type TqDot = fn(&[u8], u32, usize, &Codebook, &[f32]) -> f32;
/// `out += a * dequantize(bytes)` for one part.
pub type TqAxpy = fn(f32, &[u8], u32, usize, &Codebook, &mut [f32]);

/// The TurboQuant kernels of one ISA.
#[derive(Debug, Clone, Copy)]
pub struct TqKernels {
    /// Which ISA.
    pub isa: Isa,
    /// Score of a rotated query against a cached head.
    pub dot: TqDot,
    /// Weighted sum of cached values.
    pub axpy: TqAxpy,
}

impl TqKernels {
    /// The kernels of `isa`, or None where this CPU cannot run them (or none are written).
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.supported() {
            return None;
        }
        match isa {
            Isa::Scalar => Some(Self { isa, dot: tq::dot, axpy: tq::axpy }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Some(Self { isa, dot: x86::dot_avx2, axpy: x86::axpy_avx2 }),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => Some(Self { isa, dot: x86::dot_avx512, axpy: x86::axpy_avx512 }),
            _ => None,
        }
    }
}

/// The kernels in use: those of the dot-product table's ISA (`FLOE_ISA` or detected), else
/// the scalar ones.
pub fn tq_kernels() -> &'static TqKernels {
    static CHOSEN: std::sync::OnceLock<TqKernels> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| {
        TqKernels::for_isa(crate::dot::kernels().isa)
            .or_else(|| TqKernels::for_isa(Isa::Scalar))
            .expect("scalar kernels run everywhere")
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::super::codebook::Codebook;
    use super::super::tq::{block_bytes, word};

    fn scale(b: &[u8]) -> f32 {
        f16::from_le_bytes([b[0], b[1]]).to_f32()
    }

    fn checks(bytes: &[u8], bits: u32, block: usize, n: usize) {
        assert!((2..=4).contains(&bits) && block >= 16 && block.is_multiple_of(16));
        assert!(n.is_multiple_of(block) && bytes.len() >= n / block * block_bytes(block, bits));
    }

    /// Eight values of group `g` of a block's codes, in units of its scale.
    ///
    /// # Safety
    /// AVX2 must be available; `codes` holds group `g` (checked by slicing in `word`).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn values8(codes: &[u8], bits: u32, g: usize, mags: __m256) -> __m256 {
        let b = bits as i32;
        let w = _mm256_set1_epi32(word(codes, bits, g) as i32);
        let shift =
            _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(b));
        let m =
            _mm256_and_si256(_mm256_srlv_epi32(w, shift), _mm256_set1_epi32((1 << (b - 1)) - 1));
        let s = _mm256_slli_epi32::<31>(_mm256_srlv_epi32(
            w,
            _mm256_add_epi32(shift, _mm256_set1_epi32(b - 1)),
        ));
        _mm256_castsi256_ps(_mm256_xor_si256(
            _mm256_castps_si256(_mm256_permutevar8x32_ps(mags, m)),
            s,
        ))
    }

    fn hsum256(v: __m256) -> f32 {
        // SAFETY: only called from AVX2 code; the intrinsics are plain register arithmetic.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
        }
    }

    pub fn dot_avx2(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        checks(bytes, bits, block, q.len());
        // SAFETY: the table holds this kernel only where AVX2 and FMA are detected; `checks`
        // bounds every block read, and `q` chunks are loaded through slices of 8.
        unsafe { dot_avx2_imp(bytes, bits, block, book, q) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_avx2_imp(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        let bb = block_bytes(block, bits);
        // SAFETY: `mags` is 8 floats; every load reads an 8-float chunk of `q`.
        unsafe {
            let mags = _mm256_loadu_ps(book.mags.as_ptr());
            let mut total = _mm256_setzero_ps();
            for (qb, b) in q.chunks_exact(block).zip(bytes.chunks_exact(bb)) {
                let mut acc = _mm256_setzero_ps();
                for (g, qg) in qb.chunks_exact(8).enumerate() {
                    let v = values8(&b[2..], bits, g, mags);
                    acc = _mm256_fmadd_ps(v, _mm256_loadu_ps(qg.as_ptr()), acc);
                }
                total = _mm256_fmadd_ps(acc, _mm256_set1_ps(scale(b)), total);
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
        unsafe { axpy_avx2_imp(a, bytes, bits, block, book, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn axpy_avx2_imp(
        a: f32,
        bytes: &[u8],
        bits: u32,
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        let bb = block_bytes(block, bits);
        // SAFETY: `mags` is 8 floats; loads and stores stay in 8-float chunks of `out`.
        unsafe {
            let mags = _mm256_loadu_ps(book.mags.as_ptr());
            for (ob, b) in out.chunks_exact_mut(block).zip(bytes.chunks_exact(bb)) {
                let s = _mm256_set1_ps(a * scale(b));
                for (g, og) in ob.chunks_exact_mut(8).enumerate() {
                    let v = values8(&b[2..], bits, g, mags);
                    let y = _mm256_fmadd_ps(v, s, _mm256_loadu_ps(og.as_ptr()));
                    _mm256_storeu_ps(og.as_mut_ptr(), y);
                }
            }
        }
    }

    /// Sixteen values of groups `g` and `g + 1`, in units of their block's scale.
    ///
    /// # Safety
    /// AVX-512 F must be available; `codes` holds both groups (checked by slicing in `word`).
    #[target_feature(enable = "avx512f")]
    unsafe fn values16(codes: &[u8], bits: u32, g: usize, mags: __m512) -> __m512 {
        let b = bits as i32;
        let lo = _mm256_set1_epi32(word(codes, bits, g) as i32);
        let hi = _mm256_set1_epi32(word(codes, bits, g + 1) as i32);
        let w = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7);
        let shift = _mm512_mullo_epi32(lane, _mm512_set1_epi32(b));
        let m =
            _mm512_and_si512(_mm512_srlv_epi32(w, shift), _mm512_set1_epi32((1 << (b - 1)) - 1));
        let s = _mm512_slli_epi32::<31>(_mm512_srlv_epi32(
            w,
            _mm512_add_epi32(shift, _mm512_set1_epi32(b - 1)),
        ));
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(_mm512_permutexvar_ps(m, mags)),
            s,
        ))
    }

    pub fn dot_avx512(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        checks(bytes, bits, block, q.len());
        // SAFETY: the table holds this kernel only where AVX-512 F is detected; `checks` bounds
        // every block read (blocks are whole pairs of groups), `q` is read in 16-float chunks.
        unsafe { dot_avx512_imp(bytes, bits, block, book, q) }
    }

    #[target_feature(enable = "avx512f")]
    fn dot_avx512_imp(bytes: &[u8], bits: u32, block: usize, book: &Codebook, q: &[f32]) -> f32 {
        let bb = block_bytes(block, bits);
        // SAFETY: `mags` is 8 floats, zero-extended to 16 lanes; loads read 16-float chunks.
        unsafe {
            let mags = _mm512_castps256_ps512(_mm256_loadu_ps(book.mags.as_ptr()));
            let mut total = _mm512_setzero_ps();
            for (qb, b) in q.chunks_exact(block).zip(bytes.chunks_exact(bb)) {
                let mut acc = _mm512_setzero_ps();
                for (p, qg) in qb.chunks_exact(16).enumerate() {
                    let v = values16(&b[2..], bits, 2 * p, mags);
                    acc = _mm512_fmadd_ps(v, _mm512_loadu_ps(qg.as_ptr()), acc);
                }
                total = _mm512_fmadd_ps(acc, _mm512_set1_ps(scale(b)), total);
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
        unsafe { axpy_avx512_imp(a, bytes, bits, block, book, out) }
    }

    #[target_feature(enable = "avx512f")]
    fn axpy_avx512_imp(
        a: f32,
        bytes: &[u8],
        bits: u32,
        block: usize,
        book: &Codebook,
        out: &mut [f32],
    ) {
        let bb = block_bytes(block, bits);
        // SAFETY: as `dot_avx512_imp`; loads and stores stay in 16-float chunks of `out`.
        unsafe {
            let mags = _mm512_castps256_ps512(_mm256_loadu_ps(book.mags.as_ptr()));
            for (ob, b) in out.chunks_exact_mut(block).zip(bytes.chunks_exact(bb)) {
                let s = _mm512_set1_ps(a * scale(b));
                for (p, og) in ob.chunks_exact_mut(16).enumerate() {
                    let v = values16(&b[2..], bits, 2 * p, mags);
                    let y = _mm512_fmadd_ps(v, s, _mm512_loadu_ps(og.as_ptr()));
                    _mm512_storeu_ps(og.as_mut_ptr(), y);
                }
            }
        }
    }
}
