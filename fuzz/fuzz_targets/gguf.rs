//! The GGUF reader as `floe run --model FILE.gguf` uses it: header, metadata, tensor table,
//! the model configuration from metadata (validated), dense tensors, the expert placement and
//! the tokenizer rebuilt from metadata. Any input must give a model or an error, never a panic.
//! A small file that opens also runs one token through every layer (resident experts), so the
//! kernels of every weight type meet damaged blocks (the seeds include an IQ2_XXS model).
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local!(static PATH: std::path::PathBuf = common::scratch("gguf").join("m.gguf"));
    let path = PATH.with(|p| p.clone());
    std::fs::write(&path, data).expect("write input");
    let Ok(m) = floe::formats::source::open_model(&path, false, None) else { return };
    // Bounded work per input: small files and shapes only.
    if data.len() > 2 << 20 || m.config.hidden > 1024 || m.config.layers > 4 {
        return;
    }
    let Ok(experts) = floe::runtime::experts::ResidentExperts::load_file(m.experts) else { return };
    let Ok(model) = floe::runtime::Model::new(m.config, m.dense, Box::new(experts), 1) else {
        return;
    };
    let _ = model.forward(&mut floe::runtime::Session::default(), &[1], true);
});
