//! `floe run`: generate text with a packed model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use floe::model::experts::ResidentExperts;
use floe::model::format::{DenseWeights, PackedModel};
use floe::model::forward::{Model, Session};
use floe::model::generate::{generate, GenerateOptions};
use floe::model::sampling::SamplingParams;
use floe::model::tokenizer::TextCodec;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A model directory made by `floe pack`.
    #[arg(long)]
    model: PathBuf,
    /// The prompt.
    #[arg(long, short = 'p', default_value = "Once upon a time")]
    prompt: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalise tokens already seen (1: off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Check every checksum of the model before running.
    #[arg(long)]
    verify: bool,
    /// Print one JSON object (prompt_ids, generated_ids, text, stats) instead of streaming text.
    #[arg(long)]
    json: bool,
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let packed = PackedModel::open(&a.model, a.verify)?;
    let codec =
        if packed.manifest.has_tokenizer { Some(TextCodec::load(&packed.dir)?) } else { None };
    let codec = codec
        .context("this model has no tokenizer.json; floe run needs one for text in and out")?;
    let prompt = if a.chat { codec.apply_chat_template(&a.prompt)? } else { a.prompt.clone() };
    let ids = codec.encode(&prompt)?;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let dense = DenseWeights::load(&packed)?;
    let experts = ResidentExperts::load(&packed)?;
    let model = Model::new(packed.manifest.config.clone(), dense, Box::new(experts), threads)?;
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        },
        ignore_eos: a.ignore_eos,
        ..GenerateOptions::default()
    };
    let mut session = Session::default();
    let mut out_ids = Vec::new();
    let mut printed = String::new();
    let stdout = std::io::stdout();
    let (generated, stats) = generate(&model, &mut session, &ids, &opts, &mut |tok| {
        out_ids.push(tok);
        if !a.json {
            // Print only what decodes to complete text so far (byte-level pieces may split
            // a character across tokens).
            let text = codec.decode(&out_ids)?;
            if let Some(new) = text.strip_prefix(printed.as_str()) {
                if !new.ends_with('\u{fffd}') {
                    let mut lock = stdout.lock();
                    let _ = lock.write_all(new.as_bytes());
                    let _ = lock.flush();
                    printed = text;
                }
            }
        }
        Ok(true)
    })?;
    let text = codec.decode(&generated)?;
    if a.json {
        let v = serde_json::json!({
            "prompt_ids": ids,
            "generated_ids": generated,
            "text": text,
            "stats": stats,
        });
        println!("{v}");
    } else {
        if let Some(rest) = text.strip_prefix(printed.as_str()) {
            print!("{rest}");
        }
        println!();
        eprintln!(
            "{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token after {:.3} s",
            stats.prompt_tokens, stats.generated_tokens, stats.prefill_tok_s, stats.decode_tok_s, stats.ttft_s
        );
    }
    Ok(())
}
