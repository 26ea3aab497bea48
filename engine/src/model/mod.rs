//! The model description: its configuration (from `config.json`, `floe.json` or GGUF
//! metadata) and the checks on it, the architecture registry (tensor naming), the per-layer spec
//! the runtime executes, and the tokenizer. Nothing here reads a file format or runs anything.

pub mod arch;
pub mod chat_template;
pub mod config;
pub mod deepseek_v4;
pub mod gemma;
pub mod spec;
pub mod tensors;
pub mod tiktoken;
pub mod tokenizer;
pub mod tools;
pub mod validate;
