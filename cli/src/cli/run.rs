//! `floe run`: generate text with a packed model or a GGUF file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use floe::formats::packed::PackedModel;
use floe::runtime::SessionOptions;
use floe::{Engine, GenerateOptions, SamplingParams};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A model directory made by `floe pack` or `floe synth`, or a GGUF file (run in place: its
    /// experts are streamed straight from it, three reads each). Without it, floe runs its demo: a
    /// synthetic model (random weights, ~2 GB of experts) generated on first use in the cache
    /// directory ($FLOE_CACHE_DIR, else $XDG_CACHE_HOME/floe, else ~/.cache/floe), streamed
    /// with a quarter of its experts as cache.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A directory with the tokenizer.json to use (default: the model's own; for GGUF files,
    /// rebuilt from the file's metadata).
    #[arg(long, value_name = "DIR")]
    tokenizer: Option<PathBuf>,
    /// The prompt.
    #[arg(long, short = 'p', default_value = "Once upon a time")]
    prompt: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// Most tokens to generate.
    #[arg(long, short = 'n', default_value_t = 64)]
    max_tokens: usize,
    /// 0 is greedy (the default; 1.0 for the demo, whose random weights repeat one token when
    /// decoded greedily).
    #[arg(long)]
    temperature: Option<f32>,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalise tokens already seen (1: off).
    #[arg(long, alias = "repeat-penalty", default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Subtract this from the logit of every token generated so far (0: off).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Subtract this per earlier occurrence of a generated token (0: off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
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
    #[command(flatten)]
    stream: super::StreamingFlags,
    /// Write the routing of this run as a trace (floe's JSON lines) for `floe sim`.
    #[arg(long)]
    trace_out: Option<PathBuf>,
    /// Context in tokens (prompt and generation together). Default: the model's context; with
    /// --memory-mb, what the budget holds beside one layer's experts (the KV cache then grows
    /// inside the budget and the slab cache gives way). Given with --memory-mb, its whole KV
    /// cache is set aside up front.
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,
    #[command(flatten)]
    kv: super::kv_flags::KvFlags,
}

/// Peak resident set of this process (VmHWM), in bytes.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Where the demo model lives.
fn demo_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("FLOE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("floe")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/floe")))
        .context("no cache directory: set FLOE_CACHE_DIR or pass --model")?;
    // `-words`: the demo with word pieces (an older byte-level demo is not reused).
    Ok(base.join(format!("demo-v{}-words", floe::formats::packed::FORMAT_VERSION)))
}

/// The demo model, generated on first use.
fn demo_model() -> anyhow::Result<PathBuf> {
    let dir = demo_dir()?;
    if PackedModel::open(&dir, false).is_ok() {
        eprintln!(
            "floe demo: a synthetic model with random weights (its text is meaningless) at {}",
            dir.display()
        );
        return Ok(dir);
    }
    eprintln!(
        "floe demo: no --model given, so floe writes its demo model first: a synthetic Qwen3-MoE-shaped \
         model with random weights (its text is meaningless), 24 layers x 64 experts, ~2 GB, to {}",
        dir.display()
    );
    std::fs::create_dir_all(dir.parent().unwrap_or(&dir))
        .with_context(|| format!("creating {}", dir.display()))?;
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "writing demo model [{bar:40}] {pos}/{len} ({eta} left)",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let shape = floe::formats::synth::SynthShape::preset("demo")?;
    floe::formats::synth::synth(&shape, &dir, floe::kernels::DType::Q4_0, 0, &mut |d, t| {
        bar.set_length(t);
        bar.set_position(d);
    })?;
    bar.finish_and_clear();
    Ok(dir)
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let demo = a.model.is_none();
    let model_dir = match &a.model {
        Some(m) => m.clone(),
        None => demo_model()?,
    };
    // Loading can take a while (dense weights into memory; a slab arena's first touch, which
    // io_uring's buffer registration does all at once, runs at well under 1 GB/s on some VMs):
    // say what is happening, and report it as `load_s`.
    let load_start = std::time::Instant::now();
    // Cleared when dropped, so an error is not printed after a stale spinner line.
    let spinner =
        indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner.set_message(format!(
        "loading {}{}",
        model_dir.display(),
        if demo
            || a.stream.cache.is_some()
            || a.stream.cache_mb.is_some()
            || a.stream.memory_mb.is_some()
        {
            " (dense weights, then the slab cache for streaming the experts)"
        } else {
            " (every expert into memory: use --cache to stream them)"
        }
    ));
    let config = floe::EngineConfig {
        threads: a.threads.unwrap_or(0),
        verify: a.verify,
        tokenizer: a.tokenizer.clone(),
        session: SessionOptions { ctx: a.ctx, kv: a.kv.types() },
        // One generation, and nothing kept after it.
        max_sequences: 1,
        kept_sessions: 0,
        // A memory budget's context cap leaves room for at least -n tokens after a prompt.
        ..a.stream.engine_config(demo, a.max_tokens + 1, "lru")?
    };
    let engine = Engine::open(&model_dir, config).map_err(|e| match e {
        floe::Error::Invalid(m) if m.contains("no tokenizer") => {
            anyhow::anyhow!("{m}; pass --tokenizer DIR with its tokenizer.json")
        }
        e => e.into(),
    })?;
    spinner.finish_and_clear();
    let load_s = load_start.elapsed().as_secs_f64();
    let codec = engine.tokenizer();
    let prompt = if a.chat { codec.apply_chat_template(&a.prompt)? } else { a.prompt.clone() };
    let ids = codec.encode(&prompt)?;
    let needed = ids.len() + a.max_tokens;
    let ctx = engine.context();
    anyhow::ensure!(
        needed <= ctx,
        "the prompt ({} tokens) and -n {} need {needed} positions, more than the context of {ctx}{}",
        ids.len(),
        a.max_tokens,
        if a.ctx.is_some() { " (--ctx)" } else { "" }
    );
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature.unwrap_or(if demo { 1.0 } else { 0.0 }),
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            presence_penalty: a.presence_penalty,
            frequency_penalty: a.frequency_penalty,
            logit_bias: Vec::new(),
            seed: a.seed,
        },
        ignore_eos: a.ignore_eos,
        record_routes: a.trace_out.is_some(),
        ..GenerateOptions::default()
    };
    let prefill_chunk = opts.prefill_chunk;
    let stdout = std::io::stdout();
    let print = |piece: &str| {
        let mut lock = stdout.lock();
        let _ = lock.write_all(piece.as_bytes());
        let _ = lock.flush();
    };
    let mut generation = engine.generate_ids(ids.clone(), opts)?;
    for token in generation.by_ref() {
        let token = token?;
        if !a.json {
            // Only what decodes to complete text so far (byte-level pieces may split a
            // character across tokens).
            print(&token.text);
        }
    }
    let generated = generation.generated().to_vec();
    let finished =
        generation.finished().cloned().context("the generation ended without finishing")?;
    drop(generation);
    let stats = finished.stats.clone();
    let text = codec.decode(&generated)?;
    let config = engine.config();
    let (_, slot_bytes) = engine.weight_bytes();
    if let Some(path) = &a.trace_out {
        let c = config;
        let shape = floe::cache::MoeShape {
            layers: c.layers as u16,
            experts: c.experts as u16,
            top_k: c.top_k as u16,
        };
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w =
            floe::cache::trace::TraceWriter::new(std::io::BufWriter::new(file), shape, slot_bytes)?;
        let routes = finished.routes.clone().unwrap_or_default();
        for r in floe::runtime::routing_trace::to_trace(&routes, ids.len(), prefill_chunk) {
            w.write(&r)?;
        }
        w.finish()?;
    }
    let spec = engine.spec();
    let options = engine.session_options();
    let mut st = serde_json::to_value(&stats)?;
    st["finish_reason"] = finished.reason.as_str().into();
    st["peak_rss_bytes"] = peak_rss_bytes().into();
    st["load_s"] = load_s.into();
    st["ctx"] = ctx.into();
    // Of which fixed-size (Gated DeltaNet layers' recurrent and convolution state).
    st["recurrent_bytes"] = SessionOptions::recurrent_bytes(spec).into();
    if let Ok((per_position, mha)) = options.bytes_per_position(spec) {
        st["kv_bytes_per_position"] = per_position.into();
        if mha != per_position {
            // MLA: what per-head keys and values would take, for comparison.
            st["mha_kv_bytes_per_position"] = mha.into();
        }
    }
    st["kv_types"] = options.kv.describe().into();
    if let Ok(parts) = options.kv_bytes(spec) {
        // Per cached part: keys, values, MLA rows.
        st["kv_bytes_per_position_parts"] = serde_json::json!({ "k": parts.k, "v": parts.v, "mla": parts.mla, "shared_kv": parts.shared_kv });
    }
    st["kernels"] = floe::kernels::dot::kernels().describe().into();
    st["experts_per_token"] = engine.config().top_k.into();
    st["mean_routed_experts"] = engine.mean_routed_experts().into();
    if let Some(s) = engine.streaming() {
        let ss = s.stats();
        let c = ss.cache;
        let secs = stats.prefill_s + stats.decode_s;
        st["hits"] = c.hits.into();
        st["misses"] = c.misses.into();
        st["hit_ratio"] = c.hit_ratio().into();
        st["demand_hits"] = c.demand_hits.into();
        st["demand_hit_ratio"] = c.demand_hit_ratio().into();
        st["prefetch_issued"] = c.prefetch_issued.into();
        st["prefetch_used"] = c.prefetch_used.into();
        st["prefetch_late"] = c.prefetch_late.into();
        st["prefetch_wasted"] = c.prefetch_wasted.into();
        st["slab_reads"] = c.reads().into();
        st["bytes_read"] = ss.io_bytes.into();
        let tokens = (stats.prompt_tokens + stats.generated_tokens).max(1);
        st["bytes_read_per_token"] = (ss.io_bytes / tokens as u64).into();
        st["read_gb_s"] = (ss.io_bytes as f64 / secs.max(1e-9) / 1e9).into();
        st["stall_s"] = ss.stall_s.into();
        st["stall_share"] = (ss.stall_s / secs.max(1e-9)).into();
        st["cache_slots"] = ss.slots.into();
        st["pinned_slots"] = c.pinned.into();
        // Below cache_slots when KV caches grew inside a memory budget (see --memory-mb).
        st["slot_limit"] = s.slot_limit().into();
        st["slot_bytes"] = slot_bytes.into();
        st["io"] = s.backend().name().into();
    }
    if a.json {
        let v = serde_json::json!({
            "prompt_ids": ids,
            "generated_ids": generated,
            "text": text,
            "stats": st,
        });
        println!("{v}");
    } else {
        println!();
        eprintln!(
            "{} prompt tokens, {} generated; prefill {:.1} tok/s, decode {:.1} tok/s, first token after {:.3} s \
             (loading took {:.1} s before that)",
            stats.prompt_tokens,
            stats.generated_tokens,
            stats.prefill_tok_s,
            stats.decode_tok_s,
            stats.ttft_s,
            load_s
        );
        if engine.streaming().is_some() {
            eprintln!(
                "experts: demand hit ratio {:.3} ({} kept, {} prefetched in time or late, {} misses), \
                 prefetch {} issued / {} used ({} late) / {} wasted, {} slab reads, \
                 {:.3} GB read at {:.2} GB/s, stall {:.0} % of the time, {} experts pinned, \
                 peak RSS {} MiB",
                st["demand_hit_ratio"].as_f64().unwrap_or(0.0),
                st["demand_hits"],
                st["prefetch_used"],
                st["misses"],
                st["prefetch_issued"],
                st["prefetch_used"],
                st["prefetch_late"],
                st["prefetch_wasted"],
                st["slab_reads"],
                st["bytes_read"].as_f64().unwrap_or(0.0) / 1e9,
                st["read_gb_s"].as_f64().unwrap_or(0.0),
                100.0 * st["stall_share"].as_f64().unwrap_or(0.0),
                st["pinned_slots"],
                peak_rss_bytes() >> 20
            );
        }
    }
    engine.save_usage()?;
    Ok(())
}
