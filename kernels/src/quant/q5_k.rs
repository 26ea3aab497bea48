//! Q5_K: Q4_K plus a fifth bit per value in `qh`; value = d*sc*q - dmin*m, q in 0..32.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4_k::dequantize_k4_block;
use super::QK_K;

/// One ggml `block_q5_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f16,
    /// Super-block scale of the sub-block mins.
    pub dmin: f16,
    /// 8 scales and 8 mins, 6 bits each, packed as in Q4_K.
    pub scales: [u8; 12],
    /// High bits: bit 2c of byte l is value 64c + l's, bit 2c + 1 is value 64c + 32 + l's.
    pub qh: [u8; QK_K / 8],
    /// Low nibbles, laid out as Q4_K's.
    pub qs: [u8; QK_K / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::align_of::<BlockQ5K>() == 2);

/// Expands Q5_K blocks to f32, bit-identical to ggml.
pub fn dequantize_q5_k(blocks: &[BlockQ5K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        dequantize_k4_block(b.d, b.dmin, &b.scales, &b.qs, Some(&b.qh), ob);
    }
}

impl super::unpacked::Unpack for BlockQ5K {
    const MULT: f32 = 1.0;
    // Codes 0..=31.
    const SMALL_CODES: bool = true;
    const MIN: bool = true;
    fn unpack(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        super::q4_k::unpack_k4(self.d, &self.scales, &self.qs, Some(&self.qh), codes, ls)
    }
    #[cfg(target_arch = "x86_64")]
    unsafe fn unpack_avx2(&self, codes: &mut [i8], ls: &mut [i16]) -> f32 {
        // SAFETY: the caller's contract: the CPU has AVX2.
        unsafe {
            super::q4_k::unpack_k4_avx2(self.d, &self.scales, &self.qs, Some(&self.qh), codes, ls)
        }
    }
    fn minima(&self) -> (f32, [u8; 16]) {
        let m = super::q4_k::scales_mins_k4(&self.scales).1;
        (self.dmin.to_f32(), std::array::from_fn(|j| m[j / 2]))
    }
}
