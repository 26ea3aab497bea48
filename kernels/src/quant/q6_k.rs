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
