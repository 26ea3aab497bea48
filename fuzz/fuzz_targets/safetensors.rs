//! A Hugging Face checkpoint as `floe pack` reads it: `config.json` (parsed and validated) and
//! the safetensors header and tensors, packed into a model. The input is the two files joined:
//! config.json, a NUL byte, then model.safetensors.
#![no_main]

mod common;

use floe::formats::pack::{pack, PackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (config, tensors) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));
    if let Ok(text) = std::str::from_utf8(config) {
        let _ = floe::model::config::ModelConfig::from_hf_json(text);
    }
    thread_local!(static DIR: std::path::PathBuf = common::scratch("safetensors"));
    let dir = DIR.with(|d| d.clone());
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).expect("scratch");
    std::fs::write(ckpt.join("config.json"), config).expect("write");
    std::fs::write(ckpt.join("model.safetensors"), tensors).expect("write");
    let out = dir.join("out");
    let opts = PackOptions { dtype: floe_kernels::DType::F32, dense_dtype: None, force: true };
    let _ = pack(&ckpt, &out, &opts, &mut |_, _| {});
});
