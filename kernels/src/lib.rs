//! floe-kernels: CPU kernels for MoE decode and prefill.
//!
//! - [`DType`] and the GGUF-identical block formats ([`quant`]), one row per type in the type
//!   table (`traits.rs`: block shape, the activation form its dots read, its kernels);
//! - [`matvec`] / [`matmul`] for every format (quantised weights against quantised activations
//!   as llama.cpp pairs them; f32 activations for the float formats), parallel over rows on a
//!   [`KernelPool`] made once, with GEMM tiles for prefill ([`gemm`]);
//! - [`ops`]: RMSNorm, RoPE, softmax, SiLU/SwiGLU, top-k, grouped-query attention;
//! - [`dot`]: the dot-product kernels per ISA (scalar reference, AVX2+FMA, AVX-512 VNNI),
//!   chosen at run time.
#![warn(missing_docs)]

pub mod dot;
mod dtype;
mod error;
pub mod gemm;
pub mod kv;
mod matvec;
pub mod ops;
mod pool;
mod product;
pub mod quant;
mod traits;

pub use dtype::DType;
pub use error::KernelError;
pub use matvec::{dot_row_on, Matrix, QuantActivations};
pub use pool::{KernelPool, SPIN as POOL_SPIN};
pub use product::{
    matmul, matmul_batch, matmul_group, matmul_input, matmul_with, matvec, matvec_with, Input,
    InputBuffers, Product, TokenKernels, MAX_BATCH, MAX_GROUP,
};
pub use quant::{BlockQ4_0, BlockQ8_0};
pub use traits::{ActForm, ScaleField, TypeTraits};

/// Whether matrices that stay in memory should be interleaved eight rows at a time
/// ([`quant::interleave_q4_0`], then [`Matrix::interleaved8`]) for the kernels in use: where
/// the dot table has an interleaved Q4_0 kernel and no AVX-512 GEMM tile (which reads plain
/// rows) would run.
pub fn interleave_q4_0_here() -> bool {
    dot::kernels().q4_0_rows8.is_some() && !gemm::enabled()
}
