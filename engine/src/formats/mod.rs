//! Model files: floe's packed format (`floe.json`, dense.bin, experts.bin) and `floe pack`,
//! Hugging Face safetensors directories, GGUF (read in place, imported, written), synthetic
//! models, and opening any of them as a configuration, dense weights and an expert file.

pub mod convert;
pub mod dense;
pub mod encode;
pub mod gguf;
pub mod int4_checkpoint;
pub mod mxfp4_checkpoint;
pub mod pack;
pub mod packed;
pub mod placement;
pub mod safetensors_dir;
pub mod source;
pub mod synth;
pub mod synth_vocab;
pub mod validate;
