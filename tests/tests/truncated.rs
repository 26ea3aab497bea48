//! A model file truncated under a running engine: the engine holds no mapping of it (GGUF and
//! safetensors maps live only while a file is parsed and copied at open), so the damage shows up
//! as reads that come back short: the generation ends with an error naming the file, the
//! process does not crash, and the engine still answers (with the same error) afterwards.

use floe::{Engine, EngineConfig, ExpertMemory, GenerateOptions};
use floe_kernels::DType;

fn truncate(path: &std::path::Path, keep: u64) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(keep).unwrap();
}

fn generate(engine: &Engine) -> Result<Vec<u32>, String> {
    let opts = GenerateOptions { max_tokens: 16, ignore_eos: true, ..Default::default() };
    engine
        .generate("truncated under a running engine", opts)
        .map_err(|e| e.to_string())?
        .map(|t| t.map(|t| t.id).map_err(|e| e.to_string()))
        .collect()
}

#[test]
fn truncating_a_model_under_a_running_engine_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    let packed = dir.path().join("tiny");
    floe::formats::synth::synth(&shape, &packed, DType::Q8_0, 2, &mut |_, _| {}).unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let opened = floe::formats::packed::PackedModel::open(&packed, false).unwrap();
    floe::formats::gguf::write::export_gguf(&opened, &gguf, &mut |_, _| {}).unwrap();

    // A quarter of the experts as cache: later generations must read again.
    let slots = (shape.layers * shape.experts / 4) as u64;
    let cache_bytes = Some(slots * opened.manifest.slab.slab_bytes as u64 * 2);
    for (path, file) in [(packed.join("experts.bin"), &packed), (gguf.clone(), &gguf)] {
        let cfg = EngineConfig {
            experts: ExpertMemory::Streamed { cache_bytes },
            threads: 1,
            ..Default::default()
        };
        let engine = Engine::open(file, cfg).unwrap();
        let before = generate(&engine).unwrap();
        assert_eq!(before.len(), 16);
        // Keep a tenth: most experts now lie past the end of the file.
        let len = std::fs::metadata(&path).unwrap().len();
        truncate(&path, len / 10);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for attempt in 0..2 {
            let err = generate(&engine).unwrap_err();
            assert!(err.contains(&name) && err.contains("end of file"), "attempt {attempt}: {err}");
        }
    }
}
