//! floe: run Mixture-of-Experts models larger than RAM by streaming expert weights from SSD.
//!
//! Embed it through [`Engine`]: open a model directory (written by `floe pack` or
//! `floe synth`) with an [`EngineConfig`], then [`Engine::generate`] (an iterator of tokens) or
//! [`Engine::generate_stream`] (a `futures::Stream` for tokio programs). The building blocks are
//! re-exported: [`io`] (the I/O thread), [`cache`] (policies and the slot table), [`kernels`];
//! the engine's parts are [`model`] (the description: config, layer spec, tokenizer),
//! [`formats`] (packed, safetensors, GGUF, synthetic), [`runtime`] (weights, forward pass,
//! session, generation) and [`pipeline`] (streaming experts). See `engine/examples/`.
#![warn(missing_docs)]

mod api;
mod error;
pub mod formats;
pub mod model;
pub mod pipeline;
pub mod runtime;
#[doc(hidden)]
pub mod testing;

pub use api::kv_quality;
pub use api::{
    divergence, Divergence, Engine, EngineConfig, EngineStats, ExpertMemory, FinishReason,
    Finished, Generation, SchedulerStats, Token, OVERHEAD_BYTES,
};
pub use error::{Error, RequestError, Result};
pub use floe_cache as cache;
pub use floe_io as io;
pub use floe_kernels as kernels;
pub use floe_kernels::ops::KvDType;
pub use runtime::constraint::Grammar;
pub use runtime::generate::GenerateOptions;
pub use runtime::sampling::{SamplingParams, TokenLogprobs};
pub use runtime::ExpertSelection;
pub use runtime::{KvBytes, KvTypes};
