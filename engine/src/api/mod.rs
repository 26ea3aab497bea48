//! The embeddable API: open a model, generate text, read the counters.
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("tiny");
//! # floe::formats::synth::synth(&floe::formats::synth::SynthShape::preset("tiny").unwrap(), &path,
//! #     floe::kernels::DType::Q4_0, 0, &mut |_, _| {}).unwrap();
//! use floe::{Engine, EngineConfig, GenerateOptions};
//!
//! let engine = Engine::open(&path, EngineConfig::default())?;
//! let mut text = String::new();
//! for piece in engine.generate("Hello", GenerateOptions { max_tokens: 8, ..Default::default() })? {
//!     text.push_str(&piece?.text);
//! }
//! println!("{text} ({:.1} decode tok/s)", engine.stats().generation.decode_tok_s);
//! # Ok::<(), floe::Error>(())
//! ```

mod kept;
mod kv_budget;
pub mod kv_quality;
mod scheduler;
mod score;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use futures::StreamExt;
use parking_lot::Mutex;

use crate::error::{Error, RequestError, Result};
use crate::formats::source::open_model;
use crate::model::tokenizer::{IncrementalDecoder, TextCodec};
use crate::pipeline::{
    CacheMode, PrefetchMode, PrefetchTuning, StreamingConfig, StreamingExperts, StreamingStats,
};
use crate::runtime::constraint::ConstraintCompiler;
use crate::runtime::experts::{ExpertSource, ResidentExperts};
use crate::runtime::generate::{GenStats, GenerateOptions};
use crate::runtime::sampling::TokenLogprobs;
use crate::runtime::ExpertSelection;
use crate::runtime::{Model, SessionOptions};
use scheduler::{Core, Event, Job};
pub use scheduler::{FinishReason, Finished, SchedulerStats};
pub use score::{divergence, Divergence};

/// How an [`Engine`] holds the routed experts.
#[derive(Debug, Clone, PartialEq)]
pub enum ExpertMemory {
    /// All experts loaded into RAM (the model must fit).
    Resident,
    /// Streamed from disk through a slab cache of this many bytes (`None`: a quarter of the
    /// experts).
    Streamed {
        /// Slab cache bytes.
        cache_bytes: Option<u64>,
    },
    /// Streamed, with the whole process held to this many bytes: the dense weights, every
    /// sequence's KV cache at its full context and a fixed overhead come first, the slab
    /// cache gets the rest. Without a context set, the context is capped at what a quarter of
    /// the budget holds.
    Budget {
        /// Bytes for the whole process.
        total_bytes: u64,
        /// The least context the cap may leave (a prompt and answer known to be coming).
        min_context: usize,
    },
}

/// Engine settings. `Default` streams experts through an LRU cache of a quarter of the experts
/// with gate prefetch, the platform's best I/O backend and every core.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Resident or streamed experts.
    pub experts: ExpertMemory,
    /// Cache mode when streaming.
    pub cache: CacheMode,
    /// Prefetch when streaming.
    pub prefetch: PrefetchMode,
    /// I/O backend when streaming (`None`: uring where available, `FLOE_IO` respected).
    pub io: Option<floe_io::BackendKind>,
    /// Reads the I/O thread keeps in flight when streaming.
    pub queue_depth: usize,
    /// Compute threads (0: one per core).
    pub threads: usize,
    /// Check every checksum when opening.
    pub verify: bool,
    /// A directory with the tokenizer.json to use instead of the model's own.
    pub tokenizer: Option<std::path::PathBuf>,
    /// Each generation's context and KV cache type (default: the model's context, f16).
    pub session: SessionOptions,
    /// Most generations decoded together (one forward pass per step over all of them); more
    /// requests wait their turn.
    pub max_sequences: usize,
    /// Finished generations whose state is kept for a later prompt that starts with the same
    /// tokens (0: none).
    pub kept_sessions: usize,
    /// A chat template (Jinja text) to use instead of the model's own.
    pub chat_template: Option<String>,
    /// Fewer routed experts per token than the model's router picks (lossy; default exact).
    pub expert_selection: ExpertSelection,
    /// How prefetching and eviction work together when streaming.
    pub prefetch_tuning: PrefetchTuning,
    /// A file of per-expert use counts kept across runs (read at open, written by
    /// [`Engine::save_usage`] and when the engine is dropped). Streaming only.
    pub usage_file: Option<std::path::PathBuf>,
    /// Bytes of the slab cache given to the most used experts of `usage_file` for good, read
    /// before the first token (0: none).
    pub pin_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            experts: ExpertMemory::Streamed { cache_bytes: None },
            cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
            prefetch: PrefetchMode::Gate,
            io: None,
            queue_depth: 16,
            threads: 0,
            verify: false,
            tokenizer: None,
            session: SessionOptions {
                ctx: None,
                kv: crate::KvTypes::all(floe_kernels::ops::KvDType::F16),
            },
            max_sequences: 8,
            kept_sessions: 4,
            chat_template: None,
            expert_selection: ExpertSelection::default(),
            prefetch_tuning: PrefetchTuning::default(),
            usage_file: None,
            pin_bytes: 0,
        }
    }
}

/// Checks `selection` against the model and routes `config`'s tokens to its expert count.
fn apply_expert_selection(
    config: &mut crate::model::config::ModelConfig,
    selection: &ExpertSelection,
) -> Result<()> {
    if let Some(k) = selection.experts_per_token {
        if config.experts == 0 {
            return Err(RequestError::ExpertsPerToken { asked: k, top_k: None }.into());
        }
        if k == 0 || k > config.top_k {
            let top_k = Some(config.top_k);
            return Err(RequestError::ExpertsPerToken { asked: k, top_k }.into());
        }
        config.top_k = k;
    }
    check_min_expert_weight(selection.min_weight_ratio)
}

/// Refuses a weak-expert ratio outside [0, 1) (NaN included).
fn check_min_expert_weight(r: f32) -> Result<()> {
    if !(0.0..1.0).contains(&r) {
        return Err(RequestError::MinExpertWeight(r).into());
    }
    Ok(())
}

/// Bytes a process needs besides weights, KV caches and slabs: activations, the tokenizer,
/// thread stacks and the allocator's slack.
pub const OVERHEAD_BYTES: u64 = 64 << 20;

/// One generated token and the text it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Token id.
    pub id: u32,
    /// New text: what decoding the generation so far adds. Empty while a multi-byte character
    /// is still incomplete; it arrives with the token that completes it.
    pub text: String,
    /// Its log-probability and the likeliest alternatives, when the options asked for them.
    pub logprobs: Option<TokenLogprobs>,
    /// Prompt tokens the generation took from a kept session instead of running them.
    pub reused_prompt_tokens: usize,
    /// On the last token: why the generation ended and its statistics.
    pub finished: Option<Finished>,
}

/// Counters of the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// The last generation's timings (updated as it runs).
    pub generation: GenStats,
    /// Slab cache and I/O counters since opening, when streaming.
    pub streaming: Option<StreamingStats>,
    /// Batching and prefix reuse since opening.
    pub scheduler: SchedulerStats,
}

/// A loaded model, ready to generate.
///
/// `Engine` is `Send + Sync`: share it between threads with an `Arc`. Every generation runs on
/// the engine's scheduler thread, which decodes all generations in flight together (up to
/// [`EngineConfig::max_sequences`]): one forward pass per step over all of them, so an expert
/// several of them chose is read and run once. Each gets exactly the tokens it would get alone.
pub struct Engine {
    core: Arc<Core>,
    codec: TextCodec,
    streaming: Option<Arc<StreamingExperts>>,
    jobs: Option<Sender<Job>>,
    worker: Option<std::thread::JoinHandle<()>>,
    dense_bytes: u64,
    slot_bytes: u64,
    /// The grammar compiler, built by the first constrained request (or why it cannot be).
    constraints: std::sync::OnceLock<std::result::Result<ConstraintCompiler, String>>,
    /// Where the expert use counts are kept (`EngineConfig::usage_file`).
    usage_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.core.model)
            .field("streaming", &self.streaming.is_some())
            .finish()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the queue ends the scheduler once its generations are done (their consumers
        // are gone: a Generation borrows the engine).
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
        if let Err(e) = self.save_usage() {
            tracing::warn!("{e}");
        }
    }
}

impl Engine {
    /// Opens a model directory written by `floe pack` or `floe synth`, or a GGUF file (read in
    /// place, its tokenizer rebuilt from its metadata).
    pub fn open(path: &Path, config: EngineConfig) -> Result<Self> {
        let mut opened = open_model(path, config.verify, config.tokenizer.as_deref())?;
        let mut codec = opened.codec.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no tokenizer, the Engine needs text in and out (give a tokenizer directory)",
                path.display()
            ))
        })?;
        if let Some(t) = &config.chat_template {
            codec.set_chat_template(t.clone());
        }
        let dense = opened.dense;
        apply_expert_selection(&mut opened.config, &config.expert_selection)?;
        let spec = crate::model::spec::ModelSpec::from_config(&opened.config)?;
        let sequences = config.max_sequences.max(1) as u64;
        let mut session_options = config.session;
        let slot_bytes = opened.experts.slot_bytes as u64;
        let mut shared_budget = None;
        let cache_bytes = match config.experts {
            ExpertMemory::Resident => None,
            ExpertMemory::Streamed { cache_bytes } => {
                Some(cache_bytes.unwrap_or(opened.experts.experts_bytes() / 4))
            }
            ExpertMemory::Budget { total_bytes, min_context } => {
                let b = kv_budget::split(
                    &kv_budget::BudgetInputs {
                        total_bytes,
                        min_context,
                        // Without --ctx, KV caches grow inside the budget beside a slab cache
                        // that gives way (a policy's cache: the others keep no slabs).
                        elastic: session_options.ctx.is_none()
                            && matches!(config.cache, CacheMode::Policy(_)),
                        sequences,
                        dense_bytes: dense.bytes() as u64,
                        top_k: opened.config.top_k,
                        slot_bytes,
                    },
                    &spec,
                    &mut session_options,
                )?;
                shared_budget = b.shared;
                Some(b.cache_bytes)
            }
        };
        // Refuse an impossible context or KV type now, not at the first generation.
        session_options.state_bytes(&spec)?;
        let (experts, streaming): (Box<dyn ExpertSource>, _) = match cache_bytes {
            None if config.usage_file.is_some() || config.pin_bytes > 0 => {
                return Err(Error::Invalid(
                    "a usage file and pinned experts need streamed experts (every expert is in \
                     memory already)"
                        .into(),
                ))
            }
            None => (Box::new(ResidentExperts::load_file(opened.experts)?), None),
            Some(cache_bytes) => {
                let cfg = StreamingConfig {
                    cache: config.cache,
                    cache_bytes,
                    prefetch: config.prefetch,
                    io: config.io,
                    queue_depth: config.queue_depth,
                    shrinkable: shared_budget.is_some(),
                };
                let s = Arc::new(StreamingExperts::open_file(
                    opened.experts,
                    &opened.config,
                    &cfg,
                    None,
                )?);
                s.set_prefetch_tuning(config.prefetch_tuning);
                if let Some(path) = &config.usage_file {
                    let (pinned, learned) =
                        crate::pipeline::start_usage(&s, &opened.config, path, config.pin_bytes)?;
                    if config.pin_bytes > 0 && !learned {
                        tracing::warn!(
                            "{}: no use counted yet, so nothing is pinned this run (this run's \
                             use is counted for the next)",
                            path.display()
                        );
                    }
                    tracing::info!("{pinned} experts pinned from {}", path.display());
                } else if config.pin_bytes > 0 {
                    return Err(Error::Invalid(
                        "pinning experts needs a usage file to learn them from (--usage FILE)"
                            .into(),
                    ));
                }
                (Box::new(Arc::clone(&s)), Some(s))
            }
        };
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.threads
        };
        let dense_bytes = dense.bytes() as u64;
        let mut model = Model::new(opened.config, dense, experts, threads)?;
        model.set_min_expert_weight_ratio(config.expert_selection.min_weight_ratio);
        let core = Arc::new(Core {
            model,
            session_options,
            max_sequences: config.max_sequences.max(1),
            kept_sessions: config.kept_sessions,
            last: Mutex::new(GenStats::default()),
            counters: Default::default(),
            kv_budget: match (shared_budget, &streaming) {
                (Some(shared), Some(s)) => Some(kv_budget::KvBudget {
                    streaming: Arc::clone(s),
                    shared_bytes: shared.shared_bytes,
                    per_position: shared.per_position,
                    recurrent: shared.recurrent,
                    ctx: session_options.ctx_for(&spec)?,
                    slot_bytes,
                    scratch_per_token: kv_budget::scratch_bytes_per_token(&spec),
                    peak_tokens: Default::default(),
                }),
                _ => None,
            },
        });
        let (tx, rx) = crossbeam_channel::unbounded();
        let worker = {
            let core = Arc::clone(&core);
            std::thread::Builder::new()
                .name("floe-scheduler".into())
                .spawn(move || scheduler::run(core, rx))
                .map_err(|e| Error::Invalid(format!("cannot start the scheduler thread: {e}")))?
        };
        Ok(Self {
            core,
            codec,
            streaming,
            jobs: Some(tx),
            worker: Some(worker),
            dense_bytes,
            slot_bytes,
            constraints: std::sync::OnceLock::new(),
            usage_file: config.usage_file,
        })
    }

    /// Refuses an expert count per token the engine cannot run (above its own, or for a model
    /// without routed experts).
    pub(crate) fn check_experts_per_token(&self, k: usize) -> Result<()> {
        let top_k = self.core.model.spec.layers.iter().find_map(|l| l.ffn.moe().map(|m| m.top_k));
        match top_k {
            Some(top_k) if (1..=top_k).contains(&k) => Ok(()),
            _ => Err(RequestError::ExpertsPerToken { asked: k, top_k }.into()),
        }
    }

    /// Writes the use counted so far to the usage file (atomically), if one was given.
    pub fn save_usage(&self) -> Result<()> {
        match (&self.usage_file, self.streaming.as_ref().and_then(|s| s.usage())) {
            (Some(path), Some(usage)) => Ok(usage.save(path)?),
            _ => Ok(()),
        }
    }

    /// Starts generating after `prompt`; the returned iterator yields tokens as they are made.
    pub fn generate(&self, prompt: &str, options: GenerateOptions) -> Result<Generation<'_>> {
        let ids = self.codec.encode(prompt)?;
        self.generate_ids(ids, options)
    }

    /// Starts generating the answer to a conversation (`(role, content)` pairs of system, user
    /// and assistant turns) rendered by the model's chat template.
    pub fn chat(
        &self,
        messages: &[(&str, &str)],
        options: GenerateOptions,
    ) -> Result<Generation<'_>> {
        let ids = self.codec.encode_chat(messages)?;
        self.generate_ids(ids, options)
    }

    /// Starts generating after the token ids `prompt`.
    pub fn generate_ids(
        &self,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<Generation<'_>> {
        let (events, cancel) = self.submit(prompt, options)?;
        Ok(Generation {
            engine: self,
            events,
            cancel,
            pieces: IncrementalDecoder::new(),
            generated: Vec::new(),
            finished: None,
            done: false,
        })
    }

    fn submit(
        &self,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<(Receiver<Event>, Arc<AtomicBool>)> {
        if prompt.is_empty() {
            return Err(RequestError::EmptyPrompt.into());
        }
        let vocab = self.core.model.spec.vocab;
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(RequestError::TokenOutOfVocab { id, vocab }.into());
        }
        let ctx = self.context();
        if prompt.len() > ctx {
            return Err(RequestError::TooLong { tokens: prompt.len(), ctx }.into());
        }
        if let Some(k) = options.experts_per_token {
            self.check_experts_per_token(k)?;
        }
        if let Some(r) = options.min_expert_weight {
            check_min_expert_weight(r)?;
        }
        let constraint = match &options.grammar {
            Some(g) => Some(
                self.constraint_compiler()?
                    .compile(g)
                    .map_err(|e| RequestError::Grammar(e.to_string()))?,
            ),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let job = Job {
            prompt,
            constraint,
            options,
            events: tx,
            cancel: Arc::clone(&cancel),
            submitted: std::time::Instant::now(),
        };
        self.jobs
            .as_ref()
            .and_then(|j| j.send(job).ok())
            .ok_or(Error::Engine("the scheduler has stopped"))?;
        Ok((rx, cancel))
    }

    /// Generates on the scheduler and streams the tokens to async code (the executor's threads
    /// never run the model); dropping the stream ends the generation.
    pub fn generate_stream(
        self: &Arc<Self>,
        prompt: Vec<u32>,
        options: GenerateOptions,
    ) -> impl futures::Stream<Item = Result<Token>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Token>>(16);
        let engine = Arc::clone(self);
        // A plain thread relays (and decodes) the scheduler's events; it ends with them.
        let relay = move || {
            let generation = match engine.generate_ids(prompt, options) {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for item in generation {
                if tx.blocking_send(item).is_err() {
                    return; // the consumer dropped the stream: dropping `generation` cancels
                }
            }
        };
        let spawned = std::thread::Builder::new().name("floe-relay".into()).spawn(relay);
        let failed = spawned.is_err();
        let start = futures::stream::iter(
            failed.then_some(Err(Error::Engine("cannot start a thread for the generation"))),
        );
        start.chain(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// The grammar compiler for this model's vocabulary, built on first use.
    pub fn constraint_compiler(&self) -> Result<&ConstraintCompiler> {
        self.constraints
            .get_or_init(|| {
                let spec = &self.core.model.spec;
                ConstraintCompiler::new(&self.codec, &self.core.model.cfg.eos_token_ids, spec.vocab)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| Error::Unsupported(e.clone()))
    }

    /// Positions one generation holds (prompt and generated tokens together).
    pub fn context(&self) -> usize {
        self.core.context()
    }

    /// The model's configuration.
    pub fn config(&self) -> &crate::model::config::ModelConfig {
        &self.core.model.cfg
    }

    /// The model's layer spec.
    pub fn spec(&self) -> &crate::model::spec::ModelSpec {
        &self.core.model.spec
    }

    /// How each generation's session is sized (the context a memory budget chose included).
    pub fn session_options(&self) -> SessionOptions {
        self.core.session_options
    }

    /// Bytes of the resident dense weights, and of one expert's slab.
    pub fn weight_bytes(&self) -> (u64, u64) {
        (self.dense_bytes, self.slot_bytes)
    }

    /// The streaming expert source, when streaming (its backend, counters).
    pub fn streaming(&self) -> Option<&StreamingExperts> {
        self.streaming.as_deref()
    }

    /// The tokenizer (text <-> ids).
    pub fn tokenizer(&self) -> &TextCodec {
        &self.codec
    }

    /// Counters: the last generation's timings, batching and, when streaming, the cache and
    /// I/O counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            generation: self.core.last.lock().clone(),
            streaming: self.streaming.as_ref().map(|s| s.stats()),
            scheduler: self.core.counters.snapshot(),
        }
    }
}

/// A generation in progress: an iterator of [`Token`]s (or the error that ended it). Dropping
/// it ends the generation.
pub struct Generation<'e> {
    engine: &'e Engine,
    events: Receiver<Event>,
    cancel: Arc<AtomicBool>,
    pieces: IncrementalDecoder,
    generated: Vec<u32>,
    finished: Option<Finished>,
    done: bool,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("generated", &self.generated.len()).finish()
    }
}

impl Drop for Generation<'_> {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Generation<'_> {
    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// How it ended, once it has.
    pub fn finished(&self) -> Option<&Finished> {
        self.finished.as_ref()
    }

    fn step(&mut self) -> Result<Option<Token>> {
        if self.done {
            return Ok(None);
        }
        let event = self
            .events
            .recv()
            .map_err(|_| Error::Engine("the scheduler stopped mid-generation"))?;
        match event {
            Event::Failed(e) => Err(e),
            Event::Token { id, logprobs, reused, finished } => {
                self.generated.push(id);
                let codec = &self.engine.codec;
                let mut text = self.pieces.push(codec, id)?;
                if finished.is_some() {
                    self.done = true;
                    text.push_str(&self.pieces.flush(codec)?);
                    self.finished.clone_from(&finished);
                }
                Ok(Some(Token { id, text, logprobs, reused_prompt_tokens: reused, finished }))
            }
        }
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<Token>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
        assert_send_sync::<Arc<Engine>>();
    }

    #[test]
    fn iterator_and_resident_engine_agree_with_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny");
        crate::formats::synth::synth(
            &crate::formats::synth::SynthShape::preset("tiny").unwrap(),
            &path,
            floe_kernels::DType::Q8_0,
            3,
            &mut |_, _| {},
        )
        .unwrap();
        let opts = GenerateOptions { max_tokens: 10, ignore_eos: true, ..Default::default() };
        let ids = |cfg: EngineConfig| -> Vec<u32> {
            let e = Engine::open(&path, cfg).unwrap();
            let out: Vec<u32> =
                e.generate("abc", opts.clone()).unwrap().map(|t| t.unwrap().id).collect();
            assert_eq!(e.stats().generation.generated_tokens, 10);
            out
        };
        let resident = ids(EngineConfig { experts: ExpertMemory::Resident, ..Default::default() });
        let streamed = ids(EngineConfig::default());
        assert_eq!(resident, streamed);
        assert_eq!(resident.len(), 10);
    }
}
