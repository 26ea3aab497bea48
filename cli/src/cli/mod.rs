//! Command-line front end: one file per subcommand.

mod bench_io;
mod export;
mod gguf_info;
mod kld;
mod kv_flags;
mod kv_quality;
mod pack;
mod plot;
mod run;
mod serve;
mod sim;
pub mod size;
mod synth;
mod tokenize;

use clap::{Parser, Subcommand};

/// floe runs Mixture-of-Experts models larger than RAM by streaming expert weights from SSD.
#[derive(Debug, Parser)]
#[command(name = "floe", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Whether this runs the HTTP server.
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate text with a packed model or a GGUF file.
    Run(run::RunArgs),
    /// Serve a model over an OpenAI-compatible HTTP API (chat and completions, streamed or not).
    Serve(serve::ServeArgs),
    /// Pack a Hugging Face checkpoint (safetensors) or a GGUF file into floe's format.
    Pack(pack::PackArgs),
    /// Write a packed model with random weights (presets of real shapes).
    Synth(synth::SynthArgs),
    /// Write a packed model as a GGUF file in llama.cpp's layout.
    Export(export::ExportArgs),
    /// Show what a GGUF file holds: metadata and tensors.
    GgufInfo(gguf_info::GgufInfoArgs),
    /// Measure random aligned slab reads per I/O backend (GB/s), optionally beside fio.
    BenchIo(bench_io::BenchIoArgs),
    /// Replay a routing trace through cache policies against Belady's optimum.
    Sim(sim::SimArgs),
    /// Print a model's token ids for a text (no weights are loaded).
    Tokenize(tokenize::TokenizeArgs),
    /// What fewer experts per token cost: KL divergence, top-1 agreement and perplexity of the
    /// next-token distributions against the model run exactly, over a text.
    Kld(kld::KldArgs),
    /// What each KV cache type costs: error of keys, values and attention outputs (synthetic
    /// heads with outlier channels, and a model's own vectors), and end to end against an f32
    /// cache.
    KvQuality(kv_quality::KvQualityArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Pack(args) => pack::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Export(args) => export::run(args),
        Command::GgufInfo(args) => gguf_info::run(args),
        Command::BenchIo(args) => bench_io::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Kld(args) => kld::run(args),
        Command::KvQuality(args) => kv_quality::run(args),
    }
}

/// How experts stream from SSD (shared by `floe run` and `floe serve`).
#[derive(Debug, clap::Args)]
pub struct StreamingFlags {
    /// Stream experts from SSD through a slab cache with this policy (lru, lfu, arc, s3fifo,
    /// sieve, window, moe), or `os` (buffered reads, page cache) or `none` (read every time).
    /// Without --cache, --cache-mb or --memory-mb, every expert is loaded into memory. Default
    /// policy: lru for `floe run`, moe for `floe serve` (a decode batch's experts can outgrow
    /// the cache, and LRU then evicts each expert just before its next use).
    #[arg(long)]
    pub cache: Option<String>,
    /// Memory for the slab cache in MiB (default: a quarter of the experts).
    #[arg(long)]
    pub cache_mb: Option<u64>,
    /// Read predicted experts of the next MoE layer ahead of need during decode: gate (its router
    /// applied to this layer's input), temporal (its experts of the previous token), hot (its
    /// most chosen so far), affinity (what most often followed this layer's choice) or none.
    #[arg(long, default_value = "gate")]
    pub prefetch: String,
    /// I/O backend for streaming: uring, pread, buffered (default: uring where available).
    #[arg(long)]
    pub io: Option<String>,
    /// Memory for the whole process in MiB (dense weights + KV caches + pass scratch + slab
    /// cache): the slab cache gets what is left. Without --ctx the KV caches grow inside it
    /// and the slab cache shrinks as they do (its memory given back). Implies streaming.
    #[arg(long, conflicts_with = "cache_mb")]
    pub memory_mb: Option<u64>,
    /// Reads kept in flight by the I/O thread when streaming (each slab is read as pieces of
    /// up to 512 KiB; deeper queues let prefetches crowd out demand reads).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub queue_depth: usize,
    /// Run K routed experts per token instead of the model's own top-k. Lossy: each token
    /// reads and computes fewer experts, weighed as the model's router weighs its choice
    /// (renormalised over the K where the model renormalises). See the README for what it
    /// costs in accuracy.
    #[arg(long, visible_alias = "n-expert-used", value_name = "K")]
    pub experts_per_token: Option<usize>,
    /// Skip a routed expert whose weight is below this fraction of its token's top expert
    /// (lossy; the kept weights are renormalised where the model renormalises; 0: off).
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub min_expert_weight: f32,
    /// Let the cache policy alone choose victims, as if nothing were prefetched (default:
    /// prefetched experts their layer passed over go first, and experts predicted for the next
    /// layer stay). For comparisons.
    #[arg(long)]
    pub plain_eviction: bool,
    /// Keep per-expert use counts in FILE across runs (created if missing, refused if learned
    /// on another model; written when the run ends): what --pin-mb pins, and what the moe
    /// policy starts from (an expert hot in earlier runs is kept over a cold one).
    #[arg(long, value_name = "FILE")]
    pub usage: Option<std::path::PathBuf>,
    /// Give this many MiB of the slab cache to the experts --usage counted most, read in one
    /// pass before the first token and never evicted; the policy manages the rest.
    #[arg(long, value_name = "MiB", requires = "usage")]
    pub pin_mb: Option<u64>,
    /// Read every predicted expert ahead (default: a layer's prediction ranks that its router
    /// chose less than half of the time lately are not read). For comparisons.
    #[arg(long)]
    pub prefetch_all: bool,
    /// Read a predicted expert ahead only while its prediction rank was chosen at least this
    /// share of the time lately (higher: fewer slabs read ahead, more waiting).
    #[arg(long, default_value_t = 0.5, value_name = "SHARE")]
    pub prefetch_min_precision: f32,
}

impl StreamingFlags {
    /// The engine settings these flags give (`stream`: stream even without a flag asking;
    /// `min_context`: what a memory budget's context cap must leave; `policy`: the cache
    /// policy without --cache).
    pub fn engine_config(
        &self,
        stream: bool,
        min_context: usize,
        policy: &str,
    ) -> anyhow::Result<floe::EngineConfig> {
        use floe::ExpertMemory;
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.prefetch_min_precision),
            "--prefetch-min-precision {}: a share between 0 and 1",
            self.prefetch_min_precision
        );
        let experts = match (self.memory_mb, self.cache_mb) {
            (Some(mb), _) => ExpertMemory::Budget { total_bytes: mb << 20, min_context },
            (None, Some(mb)) => ExpertMemory::Streamed { cache_bytes: Some(mb << 20) },
            (None, None) if stream || self.cache.is_some() => {
                ExpertMemory::Streamed { cache_bytes: None }
            }
            (None, None) => ExpertMemory::Resident,
        };
        Ok(floe::EngineConfig {
            experts,
            cache: self.cache.as_deref().unwrap_or(policy).parse()?,
            prefetch: self.prefetch.parse().map_err(anyhow::Error::msg)?,
            io: self.io.as_deref().map(str::parse).transpose()?,
            queue_depth: self.queue_depth,
            expert_selection: floe::ExpertSelection {
                experts_per_token: self.experts_per_token,
                min_weight_ratio: self.min_expert_weight,
            },
            usage_file: self.usage.clone(),
            pin_bytes: self.pin_mb.unwrap_or(0) << 20,
            prefetch_tuning: floe::pipeline::PrefetchTuning {
                aware_eviction: !self.plain_eviction,
                adaptive_depth: !self.prefetch_all,
                min_precision: self.prefetch_min_precision,
            },
            ..Default::default()
        })
    }
}
