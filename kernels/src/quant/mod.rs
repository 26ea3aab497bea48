//! Block quantisation formats, bit-identical to GGUF's.

mod q4_0;
mod q8_0;

pub use q4_0::{dequantize_q4_0, quantize_q4_0, BlockQ4_0};
pub use q8_0::{dequantize_q8_0, quantize_q8_0, BlockQ8_0};

/// Values per block of both formats.
pub const QK: usize = 32;
