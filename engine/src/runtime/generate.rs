//! What a generation is asked to do and what it measured. The generation loop itself is the
//! engine's scheduler (`api/scheduler.rs`), which every front end (the CLI, the server, an
//! embedding program) goes through.

use crate::runtime::sampling::SamplingParams;

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
    /// Record every routing decision (for a trace); the generation then starts afresh, not
    /// from a kept session.
    pub record_routes: bool,
    /// Report each generated token's log-probability and this many most likely alternatives
    /// (`Some(0)`: the chosen token's only).
    pub logprobs: Option<usize>,
    /// What the output must match (constrained decoding); a generation ends when its grammar
    /// is complete.
    pub grammar: Option<crate::runtime::constraint::Grammar>,
    /// Routed experts per token for this generation, below the engine's (lossy; see
    /// [`ExpertSelection`](crate::ExpertSelection)); `None`: the engine's count.
    pub experts_per_token: Option<usize>,
    /// Skip, for this generation, a chosen expert whose routing weight is below this fraction
    /// of the token's largest (lossy; 0: off), in place of the engine's ratio; `None`: the
    /// engine's.
    pub min_expert_weight: Option<f32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            ignore_eos: false,
            prefill_chunk: 512,
            record_routes: false,
            logprobs: None,
            grammar: None,
            experts_per_token: None,
            min_expert_weight: None,
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
    /// Prompt tokens taken from a kept session (a shared prefix) instead of being run.
    pub reused_tokens: usize,
    /// Bytes the generation's state (KV caches, recurrent state) held at the end.
    pub kv_bytes: usize,
}
