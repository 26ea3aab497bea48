//! Q4_0 rows interleaved eight at a time, for decode on CPUs without the AVX-512 tiles: one
//! 32-byte load then holds four values of each of eight rows, an integer dot product lands in
//! one 32-bit lane per row, and a block's scale multiply, conversion and accumulation are done
//! once for eight rows instead of once per row. Same bytes as the eight rows, rearranged.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{BlockQ4_0, BlockQ8_0, QK};
use crate::error::KernelError;

/// Rows per interleaved group.
pub const ROWS8: usize = 8;

/// Block `j` of eight consecutive rows: their scales, then their nibbles in four chunks of 32
/// bytes. Chunk `c`, bytes `4k..4k + 4` are row `k`'s bytes `4c..4c + 4` (low nibbles: values
/// `4c..4c + 4`; high nibbles: values `16 + 4c..16 + 4c + 4`).
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0x8 {
    /// The eight rows' scales.
    pub d: [f16; ROWS8],
    /// The eight rows' nibbles, interleaved four bytes at a time.
    pub qs: [u8; ROWS8 * QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0x8>() == ROWS8 * 18);
const _: () = assert!(std::mem::align_of::<BlockQ4_0x8>() == 2);

/// What the interleaved kernels need of one Q8_0 activation block besides its values: the scale
/// as f32 and `8 * sum(q)`, which turns a sum over unsigned nibbles into one over `q - 8`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Q8Sum {
    /// The block's scale.
    pub d: f32,
    /// Eight times the sum of the block's values.
    pub corr: i32,
}

/// The [`Q8Sum`] of each of `x`'s blocks, into `out` (same length), with the detected ISA's
/// kernel.
pub fn q8_sums(x: &[BlockQ8_0], out: &mut [Q8Sum]) {
    assert_eq!(x.len(), out.len(), "q8_sums: {} blocks into {} sums", x.len(), out.len());
    (crate::dot::kernels().q8_sums)(x, out)
}

/// [`q8_sums`] one block at a time: the scalar twin of the SIMD kernels.
pub fn q8_sums_scalar(x: &[BlockQ8_0], out: &mut [Q8Sum]) {
    for (b, s) in x.iter().zip(out) {
        let sum: i32 = b.qs.iter().map(|&q| q as i32).sum();
        *s = Q8Sum { d: b.d.to_f32(), corr: 8 * sum };
    }
}

fn check(len: usize, rows: usize, cols: usize) -> Result<usize, KernelError> {
    if !cols.is_multiple_of(QK) {
        return Err(KernelError::RowNotBlockAligned { dtype: crate::DType::Q4_0, block: QK, cols });
    }
    let row_bytes = cols / QK * std::mem::size_of::<BlockQ4_0>();
    if len != rows * row_bytes {
        return Err(KernelError::Size {
            what: "interleaved weights",
            dtype: crate::DType::Q4_0,
            rows,
            cols,
            expected: rows * row_bytes,
            found: len,
        });
    }
    Ok(row_bytes)
}

/// Rewrites a row-major Q4_0 matrix in place so that every whole group of eight rows is
/// interleaved ([`BlockQ4_0x8`]); the last `rows % 8` rows stay as they are. Each group keeps
/// the bytes of its rows, so row `r` of the tail is still at `r * row_bytes`.
pub fn interleave_q4_0(data: &mut [u8], rows: usize, cols: usize) -> Result<(), KernelError> {
    let row_bytes = check(data.len(), rows, cols)?;
    let nb = cols / QK;
    let mut plain = vec![BlockQ4_0::zeroed(); ROWS8 * nb];
    for group in data.chunks_exact_mut(ROWS8 * row_bytes) {
        bytemuck::cast_slice_mut::<BlockQ4_0, u8>(&mut plain).copy_from_slice(group);
        let out: &mut [BlockQ4_0x8] = bytemuck::cast_slice_mut(group);
        for (j, o) in out.iter_mut().enumerate() {
            for k in 0..ROWS8 {
                let b = &plain[k * nb + j];
                o.d[k] = b.d;
                for c in 0..4 {
                    o.qs[32 * c + 4 * k..][..4].copy_from_slice(&b.qs[4 * c..4 * c + 4]);
                }
            }
        }
    }
    Ok(())
}

/// Block `j` of row `k` of an interleaved group, as a plain Q4_0 block.
pub fn deinterleave_block(g: &BlockQ4_0x8, k: usize) -> BlockQ4_0 {
    let mut b = BlockQ4_0 { d: g.d[k], qs: [0; QK / 2] };
    for c in 0..4 {
        b.qs[4 * c..4 * c + 4].copy_from_slice(&g.qs[32 * c + 4 * k..][..4]);
    }
    b
}

/// Eight interleaved rows (a range of their blocks, `w`) against the activations of the same
/// range (`x`, with their sums `s`), added to `acc`, one lane per row: per block, the integer
/// dot product of each row, less `corr`, times the row's scale times the block's, fused into the
/// row's sum. The scalar twin of the SIMD kernels, which give the same bits.
pub fn rows8_q4_0(w: &[BlockQ4_0x8], x: &[BlockQ8_0], s: &[Q8Sum], acc: &mut [f32; ROWS8]) {
    assert!(w.len() == x.len() && x.len() == s.len());
    for ((g, b), s) in w.iter().zip(x).zip(s) {
        for (k, acc) in acc.iter_mut().enumerate() {
            let mut isum = 0i32;
            for c in 0..4 {
                for i in 0..4 {
                    let byte = g.qs[32 * c + 4 * k + i];
                    isum += (byte & 0x0F) as i32 * b.qs[4 * c + i] as i32;
                    isum += (byte >> 4) as i32 * b.qs[16 + 4 * c + i] as i32;
                }
            }
            let scale = g.d[k].to_f32() * s.d;
            *acc = ((isum - s.corr) as f32).mul_add(scale, *acc);
        }
    }
}

/// [`rows8_q4_0`] for four tokens at once (each token's activations, sums and accumulators):
/// the scalar twin of the SIMD kernels that unpack each block once for the four.
pub fn rows8x4_q4_0(
    w: &[BlockQ4_0x8],
    x: [&[BlockQ8_0]; 4],
    s: [&[Q8Sum]; 4],
    acc: &mut [[f32; ROWS8]; 4],
) {
    for t in 0..4 {
        rows8_q4_0(w, x[t], s[t], &mut acc[t]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{quantize_q4_0, quantize_q8_0_activations};

    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn interleave_round_trips_and_keeps_the_tail() {
        let (rows, cols) = (19, 96);
        let mut plain = vec![BlockQ4_0::zeroed(); rows * cols / QK];
        quantize_q4_0(&rand_vec(rows * cols, 3), &mut plain);
        let mut bytes = bytemuck::cast_slice::<BlockQ4_0, u8>(&plain).to_vec();
        interleave_q4_0(&mut bytes, rows, cols).unwrap();
        let nb = cols / QK;
        let row_bytes = nb * 18;
        for r in 0..16 {
            let groups: &[BlockQ4_0x8] =
                bytemuck::cast_slice(&bytes[r / 8 * 8 * row_bytes..][..8 * row_bytes]);
            for j in 0..nb {
                assert_eq!(deinterleave_block(&groups[j], r % 8), plain[r * nb + j]);
            }
        }
        let tail = bytemuck::cast_slice::<BlockQ4_0, u8>(&plain[16 * nb..]);
        assert_eq!(&bytes[16 * row_bytes..], tail);
        assert!(interleave_q4_0(&mut bytes[1..], rows, cols).is_err());
        assert!(interleave_q4_0(&mut [0u8; 18], 1, 33).is_err());
    }

    /// The interleaved dot products against an f64 sum over the dequantised values.
    #[test]
    fn rows8_match_f64_of_the_dequantised_values() {
        let cols = 160;
        let nb = cols / QK;
        let mut plain = vec![BlockQ4_0::zeroed(); 8 * nb];
        quantize_q4_0(&rand_vec(8 * cols, 5), &mut plain);
        let mut xq = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; QK] }; nb];
        quantize_q8_0_activations(&rand_vec(cols, 9), &mut xq);
        let mut bytes = bytemuck::cast_slice::<BlockQ4_0, u8>(&plain).to_vec();
        interleave_q4_0(&mut bytes, 8, cols).unwrap();
        let mut sums = vec![Q8Sum::default(); nb];
        q8_sums(&xq, &mut sums);
        let mut acc = [0.0f32; 8];
        rows8_q4_0(bytemuck::cast_slice(&bytes), &xq, &sums, &mut acc);
        for (k, &got) in acc.iter().enumerate() {
            let mut want = 0.0f64;
            for j in 0..nb {
                let (w, x) = (&plain[k * nb + j], &xq[j]);
                for i in 0..QK {
                    let q = if i < 16 { w.qs[i] & 15 } else { w.qs[i - 16] >> 4 };
                    want += (q as f64 - 8.0) * w.d.to_f64() * x.qs[i] as f64 * x.d.to_f64();
                }
            }
            assert!((got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "{k}: {got} vs {want}");
        }
    }
}
