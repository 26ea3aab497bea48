//! floe-kernels: CPU kernels for MoE decode and prefill.
//!
//! - [`DType`] and the GGUF-identical block formats [`BlockQ8_0`], [`BlockQ4_0`] with their
//!   quantise / dequantise functions;
//! - [`matvec`] / [`matmul`] for every format (Q8_0/Q4_0 weights against Q8_0-quantised
//!   activations, as llama.cpp does; f32 activations otherwise), parallel over rows on a
//!   [`KernelPool`] made once;
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
