//! Q3_K: 256 values in 16 sub-blocks of 16 with 6-bit signed scales (offset 32) and one f16 `d`;
//! value = d*(sc - 32)*(q - 4*(1 - hbit)), low 2 bits in `qs`, the third in `hmask`.
//! Dequantisation only (its dot product goes through f32).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::QK_K;

/// One ggml `block_q3_K`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    /// High bits: bit j of byte l belongs to value 32j + l.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits, laid out as Q2_K's.
    pub qs: [u8; QK_K / 4],
    /// 16 scales, 6 bits each, packed.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);
const _: () = assert!(std::mem::align_of::<BlockQ3K>() == 2);

/// The 16 scales (still offset by 32) unpacked from their 12 bytes, as ggml does.
pub fn scales_q3_k(packed: &[u8; 12]) -> [i8; 16] {
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let w = |i: usize| {
        u32::from_le_bytes([packed[4 * i], packed[4 * i + 1], packed[4 * i + 2], packed[4 * i + 3]])
    };
    let (a0, a1, tmp) = (w(0), w(1), w(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut out = [0i8; 16];
    for (i, a) in aux.iter().enumerate() {
        for (k, byte) in a.to_le_bytes().iter().enumerate() {
            out[4 * i + k] = *byte as i8;
        }
    }
    out
}

/// Expands Q3_K blocks to f32, bit-identical to ggml.
pub fn dequantize_q3_k(blocks: &[BlockQ3K], out: &mut [f32]) {
    assert_eq!(out.len(), blocks.len() * QK_K);
    for (b, ob) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d_all = b.d.to_f32();
        let scales = scales_q3_k(&b.scales);
        let mut y = ob.iter_mut();
        let (mut is, mut m) = (0, 1u8);
        for q in b.qs.chunks_exact(32) {
            for shift in (0..8).step_by(2) {
                for off in [0, 16] {
                    let dl = d_all * (scales[is] as i32 - 32) as f32;
                    is += 1;
                    for (&ql, &hm) in q[off..off + 16].iter().zip(&b.hmask[off..off + 16]) {
                        let h = if hm & m != 0 { 0 } else { 4 };
                        let v = ((ql >> shift) & 3) as i32 - h;
                        *y.next().expect("256 values") = dl * v as f32;
                    }
                }
                m <<= 1;
            }
        }
    }
}
