//! Generation: prefill the prompt in chunks, then decode token by token with the KV cache.

use std::time::Instant;

use crate::error::{Error, Result};
use crate::runtime::sampling::{Sampler, SamplingParams};
use crate::runtime::{Model, Session};

/// How to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Keep going past end-of-sequence tokens.
    pub ignore_eos: bool,
    /// Prompt tokens run through the model together.
    pub prefill_chunk: usize,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            ignore_eos: false,
            prefill_chunk: 512,
        }
    }
}

/// Timings and counts of one generation.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct GenStats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Seconds from start to the first generated token.
    pub ttft_s: f64,
    /// Prompt tokens per second.
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
    /// Seconds of prefill.
    pub prefill_s: f64,
    /// Seconds of decode.
    pub decode_s: f64,
}

/// Generates after `prompt`, calling `on_token` with each new token (return false to stop).
pub fn generate(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<bool>,
) -> Result<(Vec<u32>, GenStats)> {
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let start = Instant::now();
    let mut sampler = Sampler::new(opts.sampling.clone());
    let mut logits = Vec::new();
    for chunk in prompt.chunks(opts.prefill_chunk.max(1)) {
        logits = model.forward(session, chunk, false)?;
    }
    let prefill_s = start.elapsed().as_secs_f64();
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    let mut ttft_s = 0.0;
    let decode_start = Instant::now();
    while out.len() < opts.max_tokens {
        let tok = sampler.sample(&mut logits, &history);
        if out.is_empty() {
            ttft_s = start.elapsed().as_secs_f64();
        }
        out.push(tok);
        history.push(tok);
        let stop = !opts.ignore_eos && model.cfg.eos_token_ids.contains(&tok);
        if !on_token(tok)? || stop || out.len() == opts.max_tokens {
            break;
        }
        logits = model.forward(session, &[tok], false)?;
    }
    let decode_s = decode_start.elapsed().as_secs_f64();
    let stats = GenStats {
        prompt_tokens: prompt.len(),
        generated_tokens: out.len(),
        ttft_s,
        prefill_tok_s: prompt.len() as f64 / prefill_s.max(1e-9),
        decode_tok_s: out.len().saturating_sub(1) as f64 / decode_s.max(1e-9),
        prefill_s,
        decode_s,
    };
    Ok((out, stats))
}
