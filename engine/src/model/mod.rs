//! Models: configuration and the architecture registry, floe's packed format and `pack`, the
//! expert sources, the forward pass, sampling and text.

pub mod arch;
pub mod config;
pub mod encode;
pub mod experts;
pub mod format;
pub mod forward;
pub mod generate;
pub mod pack;
pub mod placement;
pub mod routing_trace;
pub mod safetensors_dir;
pub mod sampling;
pub mod source;
pub mod spec;
pub mod synth;
pub mod tokenizer;
pub mod validate;
