//! `floe.json` open-and-validate over a real packed model's data files: any manifest must be
//! refused with an error, or open into a model that loads and runs two tokens (or errors).
#![no_main]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A tiny synthetic model, written once per process; inputs replace its floe.json.
fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = common::scratch("floe-json").join("tiny");
        let _ = std::fs::remove_dir_all(&dir);
        let shape = floe::formats::synth::SynthShape::preset("tiny").expect("preset");
        floe::formats::synth::synth(&shape, &dir, floe_kernels::DType::Q8_0, 1, &mut |_, _| {})
            .expect("synth");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = model_dir();
    std::fs::write(dir.join("floe.json"), data).expect("write input");
    let _ = floe::testing::open_and_run_two_tokens(dir);
});
