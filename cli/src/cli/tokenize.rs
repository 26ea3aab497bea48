//! `floe tokenize`: a model's token ids for a text (as llama.cpp's llama-tokenize), without
//! loading any weights: the tokenizer of a packed directory, or the one rebuilt from a GGUF
//! file's metadata.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    /// A packed model directory or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// A directory with the tokenizer.json to use instead of the model's own.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The text.
    #[arg(short, long)]
    prompt: String,
    /// Print only the number of tokens.
    #[arg(long)]
    count: bool,
}

pub fn run(a: TokenizeArgs) -> anyhow::Result<()> {
    let codec = match &a.tokenizer {
        Some(dir) => floe::model::tokenizer::TextCodec::load(dir)?,
        None if a.model.is_dir() => floe::model::tokenizer::TextCodec::load(&a.model)?,
        None => {
            let g = floe::formats::gguf::GgufFile::open(&a.model)?;
            let (tok, cfg) = floe::formats::gguf::tokenizer::tokenizer_json(&g)
                .with_context(|| format!("{}: no tokenizer floe can rebuild", a.model.display()))?;
            floe::model::tokenizer::TextCodec::from_json(&tok.to_string(), &cfg)?
        }
    };
    let ids = codec.encode(&a.prompt)?;
    if a.count {
        println!("{}", ids.len());
    } else {
        println!("{}", serde_json::to_string(&ids)?);
    }
    Ok(())
}
