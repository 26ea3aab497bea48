//! `floe kld`: what a lossy knob costs. Scores a text with the model run exactly and with each
//! setting asked for (fewer experts per token, a minimum expert weight), and reports the KL
//! divergence of the next-token distributions, top-1 agreement and perplexity per setting.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use floe::{Engine, ExpertSelection};

/// A neutral English passage scored when no text is given.
pub(crate) const DEFAULT_TEXT: &str =
    "The river rises in the hills north of the town and runs south \
through farmland for most of its length. In spring the water is high and brown with soil from \
the fields; by late summer it has fallen so far that children walk across the shallows to the \
gravel islands in the middle. The mill that once stood by the bridge was built in the \
eighteenth century to grind wheat and later to saw timber. It closed when the railway arrived, \
and for many years the building stood empty. Today it holds a small museum, a bakery and a \
workshop where volunteers repair old clocks. Visitors who follow the path along the east bank \
reach a stand of old oaks after an hour, and beyond them a village with a church, a school \
and a market that opens on Saturday mornings. The people who live there still speak of the \
great flood, when the water reached the church steps and the bridge was closed for a week.";

#[derive(Debug, Args)]
pub struct KldArgs {
    /// A model directory made by `floe pack` or `floe synth`, or a GGUF file.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Experts-per-token values to score against the model's own top-k (comma list).
    #[arg(long, value_delimiter = ',', value_name = "K,...")]
    experts_per_token: Vec<usize>,
    /// Minimum expert weight ratios to score (comma list; see `floe run --min-expert-weight`).
    #[arg(long, value_delimiter = ',', value_name = "RATIO,...")]
    min_expert_weight: Vec<f32>,
    /// A text file to score (default: a built-in English passage).
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Score at most this many tokens of the text.
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Tokens per forward pass.
    #[arg(long, default_value_t = 128)]
    chunk: usize,
    /// Compute threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// A directory with the tokenizer.json to use (default: the model's own).
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// Memory for the slab cache in MiB: stream the experts instead of loading them (for
    /// models larger than RAM; each setting is run in turn).
    #[arg(long)]
    cache_mb: Option<u64>,
    /// One JSON object per setting instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: KldArgs) -> anyhow::Result<()> {
    let mut settings: Vec<ExpertSelection> = a
        .experts_per_token
        .iter()
        .map(|&k| ExpertSelection { experts_per_token: Some(k), ..Default::default() })
        .collect();
    settings.extend(
        a.min_expert_weight
            .iter()
            .map(|&r| ExpertSelection { min_weight_ratio: r, ..Default::default() }),
    );
    anyhow::ensure!(
        !settings.is_empty(),
        "nothing to compare: give --experts-per-token K,... or --min-expert-weight RATIO,..."
    );
    let text = match &a.file {
        Some(f) => std::fs::read_to_string(f).with_context(|| format!("--file {}", f.display()))?,
        None => DEFAULT_TEXT.to_string(),
    };
    let open = |selection: ExpertSelection| -> anyhow::Result<Engine> {
        let config = floe::EngineConfig {
            experts: match a.cache_mb {
                Some(mb) => floe::ExpertMemory::Streamed { cache_bytes: Some(mb << 20) },
                None => floe::ExpertMemory::Resident,
            },
            threads: a.threads.unwrap_or(0),
            tokenizer: a.tokenizer.clone(),
            max_sequences: 1,
            kept_sessions: 0,
            expert_selection: selection,
            ..Default::default()
        };
        Engine::open(&a.model, config).with_context(|| format!("opening {}", a.model.display()))
    };
    eprintln!("scoring with the model's own experts ...");
    let exact = open(ExpertSelection::default())?;
    let mut ids = exact.tokenizer().encode(&text)?;
    ids.truncate(a.tokens.min(exact.context()));
    anyhow::ensure!(ids.len() >= 2, "the text has fewer than 2 tokens");
    let top_k = exact.config().top_k;
    let vocab = exact.spec().vocab;
    let reference = exact.next_token_logprobs(&ids, a.chunk, None)?;
    if !a.json {
        println!(
            "{}: {} tokens scored; the model routes each token to {top_k} experts (\"experts\": \
             the mean each setting ran per token and layer)",
            a.model.display(),
            ids.len()
        );
        println!(
            "{:<22} {:>8} {:>10} {:>10} {:>10} {:>8} {:>10} {:>10}",
            "setting", "experts", "mean KL", "p99 KL", "max KL", "top-1", "PPL", "PPL exact"
        );
    }
    for s in settings {
        let name = match s.experts_per_token {
            Some(k) => format!("experts-per-token {k}"),
            None => format!("min-expert-weight {}", s.min_weight_ratio),
        };
        eprintln!("scoring with {name} ...");
        // Fewer experts per token run on the same engine, as a request asking for them does;
        // the weight rule is an engine setting.
        let reopened;
        let (engine, experts) = match s.experts_per_token {
            Some(k) => (&exact, Some(k)),
            None => {
                reopened = open(s)?;
                (&reopened, None)
            }
        };
        let before = engine.routed_experts();
        let run = engine.next_token_logprobs(&ids, a.chunk, experts)?;
        let after = engine.routed_experts();
        let mean_experts = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
        let d = floe::divergence(&reference, &run, vocab, &ids)?;
        if a.json {
            let mut v = serde_json::to_value(d)?;
            v["model"] = a.model.display().to_string().into();
            v["model_top_k"] = top_k.into();
            v["experts_per_token"] = s.experts_per_token.unwrap_or(top_k).into();
            v["min_expert_weight"] = s.min_weight_ratio.into();
            v["mean_experts"] = mean_experts.into();
            println!("{v}");
        } else {
            println!(
                "{name:<22} {:>8.2} {:>10.5} {:>10.5} {:>10.5} {:>7.1}% {:>10.3} {:>10.3}",
                mean_experts,
                d.mean_kl,
                d.p99_kl,
                d.max_kl,
                100.0 * d.top1_agreement,
                d.perplexity,
                d.reference_perplexity
            );
        }
    }
    Ok(())
}
