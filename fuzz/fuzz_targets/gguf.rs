//! The GGUF reader as `floe run --model FILE.gguf` uses it: header, metadata, tensor table,
//! the model configuration from metadata (validated), dense tensors, the expert placement and
//! the tokenizer rebuilt from metadata. Any input must give a model or an error, never a panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local!(static PATH: std::path::PathBuf = common::scratch("gguf").join("m.gguf"));
    let path = PATH.with(|p| p.clone());
    std::fs::write(&path, data).expect("write input");
    let _ = floe::formats::source::open_model(&path, false, None);
});
