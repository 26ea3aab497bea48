//! TQ1_0: ternary weights (-1, 0, 1) packed five to a byte in base 3 (four to a byte in the
//! last 4 bytes), one f16 scale per 256. 1.69 bits per value.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::codes::ternary_dot;
use super::{BlockQ8K, QK_K};

/// One GGUF `block_tq1_0`.
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTq1_0 {
    /// 240 values, five per byte.
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    /// The last 16 values, four per byte.
    pub qh: [u8; QK_K / 64],
    /// Scale.
    pub d: f16,
}

const _: () = assert!(std::mem::size_of::<BlockTq1_0>() == 54);
const _: () = assert!(std::mem::align_of::<BlockTq1_0>() == 2);

/// The base-3 digit `n` of a packed byte, as ggml extracts it: the byte times 3^n (mod 256),
/// times 3, over 256.
#[inline]
fn trit(byte: u8, n: usize) -> i8 {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let q = byte.wrapping_mul(POW3[n]);
    ((q as u16 * 3) >> 8) as i8 - 1
}

/// The 256 codes in value order.
fn codes(b: &BlockTq1_0, out: &mut [i8; QK_K]) {
    let mut at = 0;
    for n in 0..5 {
        for m in 0..32 {
            out[at] = trit(b.qs[m], n);
            at += 1;
        }
    }
    for n in 0..5 {
        for m in 0..16 {
            out[at] = trit(b.qs[32 + m], n);
            at += 1;
        }
    }
    for n in 0..4 {
        for j in 0..4 {
            out[at] = trit(b.qh[j], n);
            at += 1;
        }
    }
}

/// Expands blocks to f32: `(digit - 1) * d`.
pub fn dequantize_tq1_0(blocks: &[BlockTq1_0], out: &mut [f32]) {
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

/// TQ1_0 . Q8_K, rounded as ggml's AVX2 kernel rounds it (see `codes::ternary_dot`).
pub fn dot_tq1_0(w: &[BlockTq1_0], x: &[BlockQ8K]) -> f32 {
    ternary_dot(w, x, codes, |b| b.d.to_f32())
}
