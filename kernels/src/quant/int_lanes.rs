//! The integer core of the block dot products: exact products summed into ggml's eight AVX2
//! lanes (value `v` of each run of 32 into lane `(v % 32) / 4`). The scalar twins compute them
//! one value at a time ([`ScalarLanes`]); on aarch64, [`NeonLanes`] computes the same integers
//! with widening multiplies and pairwise adds, so a NEON dot product that shares a twin's float
//! steps gives its bits exactly. Each type's dot product is written once, generic over this
//! trait, and the type table names its scalar and NEON forms.

use super::codes::Run;
use super::QK_K;

/// Exact integer lanes of one block's products.
pub(crate) trait IntLanes {
    /// `lanes[v / 4] += (q[v] - offset) * y[v]` over the 32 values of a 32-value block.
    fn lanes32(q: &[u8; 32], offset: i32, y: &[i8]) -> [i32; 8];
    /// `lanes[(v % 32) / 4] += ls[v / 16] * q[v] * y[v]` over a super-block's 256 values.
    fn lanes256(q: &[i8; QK_K], ls: &[i32; 16], y: &[i8; QK_K]) -> [i32; 8];
    /// One grid run of 32 values: `lanes[v / 4] += ls[v / 16] * g[v] * y[v]`, with `g` the grid
    /// byte (signed, or a magnitude times its sign byte).
    fn grid_run(run: &Run, signed: bool, y: &[i8]) -> [i32; 8];
    /// `lanes[v / 4] += ls[v / 16] * s[v] * y[v]` with `s` the sign bytes (`0x01` / `0xFF`).
    fn sign_run(signs: &[u64; 4], ls: [i16; 2], y: &[i8]) -> [i32; 8];
    /// One run of 32 values stored as 16 bytes of nibbles (value `j` in the low half of byte
    /// `j`, value `j + 16` in its high half), each nibble a level of `table`:
    /// `lanes[v / 4] += table[nibble v] * y[v]` (IQ4_NL, IQ4_XS, MXFP4).
    fn table_run(qs: &[u8], table: &[i8; 16], y: &[i8]) -> [i32; 8];
}

/// Byte `v` of four words of eight.
#[inline]
fn byte(words: &[u64; 4], v: usize) -> u8 {
    (words[v / 8] >> (8 * (v % 8))) as u8
}

/// One value at a time, straight from the definition.
pub(crate) struct ScalarLanes;

impl IntLanes for ScalarLanes {
    #[inline]
    fn lanes32(q: &[u8; 32], offset: i32, y: &[i8]) -> [i32; 8] {
        let mut lanes = [0i32; 8];
        for (v, (&q, &y)) in q.iter().zip(y).enumerate() {
            lanes[v / 4] += (q as i32 - offset) * y as i32;
        }
        lanes
    }

    #[inline]
    fn lanes256(q: &[i8; QK_K], ls: &[i32; 16], y: &[i8; QK_K]) -> [i32; 8] {
        let mut lanes = [0i32; 8];
        for (v, (&q, &y)) in q.iter().zip(y).enumerate() {
            lanes[(v % 32) / 4] += ls[v / 16] * q as i32 * y as i32;
        }
        lanes
    }

    #[inline]
    fn grid_run(run: &Run, signed: bool, y: &[i8]) -> [i32; 8] {
        let mut lanes = [0i32; 8];
        for (v, &q) in y.iter().take(32).enumerate() {
            let g = if signed {
                byte(&run.grid, v) as i8 as i32
            } else {
                byte(&run.grid, v) as i32 * byte(&run.signs, v) as i8 as i32
            };
            lanes[v / 4] += run.ls[v / 16] as i32 * g * q as i32;
        }
        lanes
    }

    #[inline]
    fn sign_run(signs: &[u64; 4], ls: [i16; 2], y: &[i8]) -> [i32; 8] {
        let mut lanes = [0i32; 8];
        for (v, &q) in y.iter().take(32).enumerate() {
            lanes[v / 4] += ls[v / 16] as i32 * byte(signs, v) as i8 as i32 * q as i32;
        }
        lanes
    }

    #[inline]
    fn table_run(qs: &[u8], table: &[i8; 16], y: &[i8]) -> [i32; 8] {
        let mut lanes = [0i32; 8];
        for j in 0..16 {
            lanes[j / 4] += table[(qs[j] & 0x0F) as usize] as i32 * y[j] as i32;
            lanes[4 + j / 4] += table[(qs[j] >> 4) as usize] as i32 * y[j + 16] as i32;
        }
        lanes
    }
}

/// The lanes with NEON (part of the aarch64 baseline).
#[cfg(target_arch = "aarch64")]
pub(crate) struct NeonLanes;

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    use super::{IntLanes, NeonLanes, Run, QK_K};

    /// Lanes 0..4 and 4..8 of one run of 32 codes (two registers of 16) against 32 activation
    /// codes, values 0..16 times `ls[0]` and 16..32 times `ls[1]`.
    ///
    /// # Safety
    /// `y` holds at least 32 bytes (checked by the callers' asserts).
    #[inline]
    unsafe fn run(q0: int8x16_t, q1: int8x16_t, ls: [i32; 2], y: *const i8) -> [i32; 8] {
        // SAFETY: NEON is baseline on aarch64; the caller's contract covers the 32 loads.
        unsafe {
            let (y0, y1) = (vld1q_s8(y), vld1q_s8(y.add(16)));
            // i8 x i8 fits i16; pairwise adds widen to i32, then pairs of pairs give the sums of
            // four consecutive values: lanes v / 4.
            let quad = |q: int8x16_t, y: int8x16_t| {
                let a = vpaddlq_s16(vmull_s8(vget_low_s8(q), vget_low_s8(y)));
                let b = vpaddlq_s16(vmull_high_s8(q, y));
                vpaddq_s32(a, b)
            };
            let lo = vmulq_n_s32(quad(q0, y0), ls[0]);
            let hi = vmulq_n_s32(quad(q1, y1), ls[1]);
            let mut out = [0i32; 8];
            vst1q_s32(out.as_mut_ptr(), lo);
            vst1q_s32(out.as_mut_ptr().add(4), hi);
            out
        }
    }

    /// Four words of eight bytes as two registers of 16.
    ///
    /// # Safety
    /// NEON (baseline on aarch64).
    #[inline]
    unsafe fn words(w: &[u64; 4]) -> (int8x16_t, int8x16_t) {
        // SAFETY: four u64 are 32 bytes.
        unsafe {
            (
                vreinterpretq_s8_u64(vld1q_u64(w.as_ptr())),
                vreinterpretq_s8_u64(vld1q_u64(w.as_ptr().add(2))),
            )
        }
    }

    fn add(a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
        std::array::from_fn(|l| a[l] + b[l])
    }

    impl IntLanes for NeonLanes {
        #[inline]
        fn lanes32(q: &[u8; 32], offset: i32, y: &[i8]) -> [i32; 8] {
            assert!(y.len() >= 32 && (0..=128).contains(&offset));
            // SAFETY: 32 bytes of codes and of activations (asserted). Codes less the offset
            // stay within i8 for every caller (5-bit codes, offsets 0 and 16).
            unsafe {
                let off = vdupq_n_u8(offset as u8);
                let q0 = vreinterpretq_s8_u8(vsubq_u8(vld1q_u8(q.as_ptr()), off));
                let q1 = vreinterpretq_s8_u8(vsubq_u8(vld1q_u8(q.as_ptr().add(16)), off));
                run(q0, q1, [1, 1], y.as_ptr())
            }
        }

        #[inline]
        fn lanes256(q: &[i8; QK_K], ls: &[i32; 16], y: &[i8; QK_K]) -> [i32; 8] {
            let mut lanes = [0i32; 8];
            for r in 0..QK_K / 32 {
                // SAFETY: 32r + 32 <= 256 bytes of codes and of activations.
                let l = unsafe {
                    let (q0, q1) =
                        (vld1q_s8(q.as_ptr().add(32 * r)), vld1q_s8(q.as_ptr().add(32 * r + 16)));
                    run(q0, q1, [ls[2 * r], ls[2 * r + 1]], y.as_ptr().add(32 * r))
                };
                lanes = add(lanes, l);
            }
            lanes
        }

        #[inline]
        fn grid_run(r: &Run, signed: bool, y: &[i8]) -> [i32; 8] {
            assert!(y.len() >= 32);
            // SAFETY: 32 activation bytes (asserted); grid magnitudes times ±1 fit i8.
            unsafe {
                let (g0, g1) = words(&r.grid);
                let (q0, q1) = if signed {
                    (g0, g1)
                } else {
                    let (s0, s1) = words(&r.signs);
                    (vmulq_s8(g0, s0), vmulq_s8(g1, s1))
                };
                run(q0, q1, [r.ls[0] as i32, r.ls[1] as i32], y.as_ptr())
            }
        }

        #[inline]
        fn sign_run(signs: &[u64; 4], ls: [i16; 2], y: &[i8]) -> [i32; 8] {
            assert!(y.len() >= 32);
            // SAFETY: 32 activation bytes (asserted).
            unsafe {
                let (s0, s1) = words(signs);
                run(s0, s1, [ls[0] as i32, ls[1] as i32], y.as_ptr())
            }
        }

        #[inline]
        fn table_run(qs: &[u8], table: &[i8; 16], y: &[i8]) -> [i32; 8] {
            assert!(qs.len() >= 16 && y.len() >= 32);
            // SAFETY: 16 bytes of nibbles, 16 of table and 32 of activations (asserted); the
            // table lookups index with nibbles (< 16).
            unsafe {
                let (v, t) = (vld1q_u8(qs.as_ptr()), vld1q_s8(table.as_ptr()));
                let q0 = vqtbl1q_s8(t, vandq_u8(v, vdupq_n_u8(0x0F)));
                let q1 = vqtbl1q_s8(t, vshrq_n_u8::<4>(v));
                run(q0, q1, [1, 1], y.as_ptr())
            }
        }
    }
}
