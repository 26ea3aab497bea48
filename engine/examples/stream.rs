//! The floe Engine in a tokio program: tokens arrive as a `futures::Stream` while the model
//! runs on a blocking thread.
//!
//! `cargo run --release -p floe --example stream -- MODEL_DIR "prompt"`; without a model
//! directory it writes the `tiny` synthetic model to a temporary directory first.

use std::sync::Arc;

use floe::{Engine, EngineConfig, GenerateOptions};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), floe::Error> {
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

    let engine = Arc::new(Engine::open(&model, EngineConfig::default())?);
    let options = GenerateOptions { max_tokens: 24, ..Default::default() };
    // Two generations at once share the engine: decoded together, each expert read once.
    let ids = engine.tokenizer().encode(&prompt)?;
    let a = engine.generate_stream(ids.clone(), options.clone());
    let b = engine.generate_stream(ids, options);
    let (a, b): (Vec<_>, Vec<_>) = futures::join!(a.collect(), b.collect());
    let a: Vec<floe::Token> = a.into_iter().collect::<Result<_, _>>()?;
    let b: Vec<floe::Token> = b.into_iter().collect::<Result<_, _>>()?;
    let text: String = a.iter().map(|t| t.text.as_str()).collect();
    println!("{text}");
    // Greedy decoding is deterministic: both streams agree.
    assert_eq!(
        a.iter().map(|t| t.id).collect::<Vec<_>>(),
        b.iter().map(|t| t.id).collect::<Vec<_>>()
    );
    eprintln!("{} tokens twice, concurrently", a.len());
    Ok(())
}
