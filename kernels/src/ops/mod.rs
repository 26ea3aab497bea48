//! The small operations of a transformer layer. They touch kilobytes per token, not the
//! megabytes of the weight matrices, so they are plain Rust written for the autovectoriser;
//! attention's dot products use the SIMD dot kernels.

mod activation;
mod attention;
mod delta;
mod norm;
mod rope;
mod topk;

pub use crate::kv::{KvFormat, KvPart, MAX_KV_DIM};
pub use activation::{
    clamped_swiglu, exp_fast, geglu_tanh, gelu_tanh, silu, silu_fast, softmax, swiglu,
    swiglu_scalar,
};
pub use attention::{attention, attention_at, AttentionShape, KvDType, KvView, KEY_TILE};
pub use delta::{causal_conv1d_silu, gated_delta_step, l2_normalize, softplus};
pub use norm::rms_norm;
pub use rope::{rope, rope_from_table, rope_inv_freq, rope_table, yarn_inv_freq, RopeStyle};
pub use topk::{top_k, top_k_into};
