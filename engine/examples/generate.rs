//! Minimal synchronous use of the floe Engine.
//!
//! `cargo run --release -p floe --example generate -- MODEL_DIR "prompt"`; without a model
//! directory it writes the `tiny` synthetic model to a temporary directory first.

use floe::{Engine, EngineConfig, GenerateOptions, SamplingParams};

fn main() -> Result<(), floe::Error> {
    let mut args = std::env::args().skip(1);
    let tmp = tempfile::tempdir().map_err(|e| floe::Error::Invalid(e.to_string()))?;
    let model = match args.next() {
        Some(dir) => dir.into(),
        None => {
            let dir = tmp.path().join("tiny");
            let shape = floe::formats::synth::SynthShape::preset("tiny")?;
            floe::formats::synth::synth(
                &shape,
                &dir,
                floe::kernels::DType::Q4_0,
                0,
                &mut |_, _| {},
            )?;
            dir
        }
    };
    let prompt = args.next().unwrap_or_else(|| "Once upon a time".into());

    let engine = Engine::open(&model, EngineConfig::default())?;
    let options = GenerateOptions {
        max_tokens: 24,
        sampling: SamplingParams { temperature: 0.8, seed: 1, ..Default::default() },
        ..Default::default()
    };
    let mut tokens = 0;
    for piece in engine.generate(&prompt, options)? {
        let piece = piece?;
        print!("{}", piece.text);
        tokens += 1;
    }
    let stats = engine.stats();
    println!();
    eprintln!(
        "{tokens} tokens, {:.1} decode tok/s, cache hit ratio {:.2}",
        stats.generation.decode_tok_s,
        stats.streaming.map(|s| s.cache.hit_ratio()).unwrap_or(1.0)
    );
    assert!(tokens > 0, "nothing generated");
    Ok(())
}
