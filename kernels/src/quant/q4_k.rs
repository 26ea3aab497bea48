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
