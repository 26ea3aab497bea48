//! Block quantisation formats, bit-identical to GGUF's: one file per format (its `#[repr(C)]`
//! block, dequantiser, quantiser where floe has one, and, for the formats the type table
//! (`traits.rs`) dispatches, its scalar dot product and SIMD twins).

pub(crate) mod codes;
#[cfg(target_arch = "x86_64")]
pub(crate) mod grid_avx512;
pub(crate) mod int_lanes;
pub(crate) mod iq1_m;
pub(crate) mod iq1_s;
pub(crate) mod iq2_s;
pub(crate) mod iq2_xs;
pub(crate) mod iq2_xxs;
pub(crate) mod iq3_s;
pub(crate) mod iq3_xxs;
pub(crate) mod iq4_nl;
pub(crate) mod iq4_xs;
mod iq_grids;
mod mxfp4;
pub(crate) mod q2_k;
pub(crate) mod q3_k;
mod q4_0;
mod q4_0x8;
pub(crate) mod q4_1;
pub(crate) mod q4_k;
pub(crate) mod q5_0;
pub(crate) mod q5_1;
mod q5_k;
pub(crate) mod q6_k;
mod q8_0;
mod q8_1;
mod q8_k;
pub(crate) mod tq1_0;
pub(crate) mod tq2_0;
pub(crate) mod unpacked;
pub(crate) mod unpacked32;

/// `x` rounded to the nearest integer, ties to even, for `|x| < 2^22` (the quantisers' values are
/// at most 127 in magnitude). Adding and subtracting `1.5 * 2^23` leaves no fraction bits, so the
/// FPU's default rounding (nearest, ties to even) does the rounding. It equals
/// `f32::round_ties_even` there, which baseline x86-64 (no SSE4.1 `roundps`) compiles to a libm
/// call per value (measured: 2 % of streaming decode in `rintf`); this form vectorises.
#[inline(always)]
pub(crate) fn round_ties_even_small(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + SHIFT) - SHIFT
}

pub use iq1_m::{dequantize_iq1_m, dot_iq1_m, BlockIq1M};
pub use iq1_s::{dequantize_iq1_s, dot_iq1_s, BlockIq1S};
pub use iq2_s::{dequantize_iq2_s, dot_iq2_s, BlockIq2S};
pub use iq2_xs::{dequantize_iq2_xs, dot_iq2_xs, BlockIq2Xs};
pub use iq2_xxs::{dequantize_iq2_xxs, dot_iq2_xxs, BlockIq2Xxs};
pub use iq3_s::{dequantize_iq3_s, dot_iq3_s, BlockIq3S};
pub use iq3_xxs::{dequantize_iq3_xxs, dot_iq3_xxs, BlockIq3Xxs};
pub use iq4_nl::{dequantize_iq4_nl, dot_iq4_nl, BlockIq4Nl, KVALUES_IQ4NL};
pub use iq4_xs::{dequantize_iq4_xs, dot_iq4_xs, BlockIq4Xs};
pub use mxfp4::{dequantize_mxfp4, e8m0_to_f32_half, quantize_mxfp4, BlockMxfp4, KVALUES_MXFP4};
pub use q2_k::{dequantize_q2_k, dot_q2_k, BlockQ2K};
pub use q3_k::{dequantize_q3_k, dot_q3_k, scales_q3_k, BlockQ3K};
pub use q4_0::{dequantize_q4_0, quantize_q4_0, BlockQ4_0};
pub use q4_0x8::{
    deinterleave_block, interleave_q4_0, q8_sums, q8_sums_scalar, rows8_q4_0, rows8x4_q4_0,
    BlockQ4_0x8, Q8Sum, ROWS8,
};
pub use q4_1::{dequantize_q4_1, dot_q4_1, quantize_q4_1, BlockQ4_1};
pub use q4_k::{dequantize_q4_k, scale_min_k4, scales_mins_k4, BlockQ4K};
pub use q5_0::{dequantize_q5_0, dot_q5_0, quantize_q5_0, BlockQ5_0};
pub use q5_1::{dequantize_q5_1, dot_q5_1, quantize_q5_1, BlockQ5_1};
pub use q5_k::{dequantize_q5_k, BlockQ5K};
pub use q6_k::{codes_q6_k, dequantize_q6_k, BlockQ6K};
pub use q8_0::{
    dequantize_q8_0, quantize_q8_0, quantize_q8_0_activations, quantize_q8_0_activations_scalar,
    BlockQ8_0,
};
pub use q8_1::{quantize_q8_1_activations, BlockQ8_1};
pub use q8_k::{dequantize_q8_k, quantize_q8_k, BlockQ8K};
pub use tq1_0::{dequantize_tq1_0, dot_tq1_0, BlockTq1_0};
pub use tq2_0::{dequantize_tq2_0, dot_tq2_0, BlockTq2_0};

/// Values per block of Q8_0 and Q4_0.
pub const QK: usize = 32;
/// Values per super-block of the K-quants.
pub const QK_K: usize = 256;

#[cfg(test)]
mod round_tests {
    use super::round_ties_even_small;

    #[test]
    fn round_ties_even_small_equals_the_std_rounding() {
        // Every tie and its neighbours in the quantisers' range, plus a dense sweep.
        for i in -600..=600 {
            let t = i as f32 * 0.25;
            for x in
                [t, f32::from_bits(t.to_bits() + 1), f32::from_bits(t.to_bits().wrapping_sub(1))]
            {
                if x.is_finite() && x.abs() < 200.0 {
                    assert_eq!(round_ties_even_small(x), x.round_ties_even(), "{x}");
                }
            }
        }
        let mut x = -130.0f32;
        while x < 130.0 {
            assert_eq!(round_ties_even_small(x), x.round_ties_even(), "{x}");
            x += 0.001_7;
        }
        assert_eq!(round_ties_even_small(-0.4).to_bits(), 0.0f32.to_bits());
    }
}
