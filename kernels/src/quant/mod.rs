//! Block quantisation formats, bit-identical to GGUF's: the 32-value Q8_0/Q4_0 and the
//! 256-value K-quants (Q2_K..Q6_K weights, Q8_K activations). One file per format.

mod q2_k;
mod q3_k;
mod q4_0;
mod q4_k;
mod q5_k;
mod q6_k;
mod q8_0;
mod q8_k;

pub use q2_k::{dequantize_q2_k, BlockQ2K};
pub use q3_k::{dequantize_q3_k, scales_q3_k, BlockQ3K};
pub use q4_0::{dequantize_q4_0, quantize_q4_0, BlockQ4_0};
pub use q4_k::{dequantize_q4_k, scale_min_k4, scales_mins_k4, BlockQ4K};
pub use q5_k::{dequantize_q5_k, BlockQ5K};
pub use q6_k::{codes_q6_k, dequantize_q6_k, BlockQ6K};
pub use q8_0::{dequantize_q8_0, quantize_q8_0, quantize_q8_0_activations, BlockQ8_0};
pub use q8_k::{dequantize_q8_k, quantize_q8_k, BlockQ8K};

/// Values per block of Q8_0 and Q4_0.
pub const QK: usize = 32;
/// Values per super-block of the K-quants.
pub const QK_K: usize = 256;
