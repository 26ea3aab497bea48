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

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::formats::source::open_model;
use crate::model::tokenizer::{IncrementalDecoder, TextCodec};
use crate::pipeline::{CacheMode, PrefetchMode, StreamingConfig, StreamingExperts, StreamingStats};
use crate::runtime::experts::{ExpertSource, ResidentExperts};
use crate::runtime::generate::{GenStats, GenerateOptions};
use crate::runtime::sampling::Sampler;
use crate::runtime::{Model, Session, SessionOptions};

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
    /// Compute threads (0: one per core).
    pub threads: usize,
    /// Check every checksum when opening.
    pub verify: bool,
    /// Each generation's context and KV cache type (default: the model's context, f16).
    pub session: SessionOptions,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            experts: ExpertMemory::Streamed { cache_bytes: None },
            cache: CacheMode::Policy(floe_cache::PolicyKind::Lru),
            prefetch: PrefetchMode::Gate,
            io: None,
            threads: 0,
            verify: false,
            session: SessionOptions { ctx: None, kv_dtype: floe_kernels::ops::KvDType::F16 },
        }
    }
}

/// One generated token and the text it completes.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Token id.
    pub id: u32,
    /// New text: what decoding the generation so far adds. Empty while a multi-byte character
    /// is still incomplete; it arrives with the token that completes it.
    pub text: String,
}

/// Counters of the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    /// The last generation's timings (updated as it runs).
    pub generation: GenStats,
    /// Slab cache and I/O counters since opening, when streaming.
    pub streaming: Option<StreamingStats>,
}

/// A loaded model, ready to generate.
///
/// `Engine` is `Send + Sync`: share it between threads with an `Arc`. Generations running at
/// the same time each have their own KV cache and share the weights and the slab cache; with
/// streamed experts they take turns layer by layer.
pub struct Engine {
    model: Model,
    codec: TextCodec,
    streaming: Option<Arc<StreamingExperts>>,
    session_options: SessionOptions,
    last: Mutex<GenStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("streaming", &self.streaming.is_some())
            .finish()
    }
}

impl Engine {
    /// Opens a model directory written by `floe pack` or `floe synth`, or a GGUF file (read in
    /// place, its tokenizer rebuilt from its metadata).
    pub fn open(path: &Path, config: EngineConfig) -> Result<Self> {
        let opened = open_model(path, config.verify, None)?;
        let codec = opened.codec.ok_or_else(|| {
            Error::Invalid(format!(
                "{}: no tokenizer, the Engine needs text in and out",
                path.display()
            ))
        })?;
        let dense = opened.dense;
        let (experts, streaming): (Box<dyn ExpertSource>, _) = match config.experts {
            ExpertMemory::Resident => (Box::new(ResidentExperts::load_file(opened.experts)?), None),
            ExpertMemory::Streamed { cache_bytes } => {
                let cfg = StreamingConfig {
                    cache: config.cache,
                    cache_bytes: cache_bytes.unwrap_or(opened.experts.experts_bytes() / 4),
                    prefetch: config.prefetch,
                    io: config.io,
                    queue_depth: 16,
                };
                let s = Arc::new(StreamingExperts::open_file(
                    opened.experts,
                    &opened.config,
                    &cfg,
                    None,
                )?);
                (Box::new(Arc::clone(&s)), Some(s))
            }
        };
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            config.threads
        };
        let model = Model::new(opened.config, dense, experts, threads)?;
        let session_options = config.session;
        // Refuse an impossible context or KV type now, not at the first generation.
        session_options.state_bytes(&model.spec)?;
        Ok(Self { model, codec, streaming, session_options, last: Mutex::new(GenStats::default()) })
    }

    /// Starts generating after `prompt`; the returned iterator yields tokens as they are made.
    pub fn generate(&self, prompt: &str, options: GenerateOptions) -> Result<Generation<'_>> {
        let ids = self.codec.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::Invalid("the prompt has no tokens".into()));
        }
        let sampler = Sampler::new(options.sampling.clone());
        Ok(Generation {
            engine: self,
            session: Session::new(self.session_options),
            sampler,
            history: ids.clone(),
            prompt: ids,
            out: Vec::new(),
            pieces: IncrementalDecoder::new(),
            logits: None,
            options,
            done: false,
            start: std::time::Instant::now(),
            decode_start: None,
        })
    }

    /// Generates on a blocking thread of the tokio runtime and streams the tokens: the async
    /// executor's threads never run the model. Must be called from within a tokio runtime.
    pub fn generate_stream(
        self: &Arc<Self>,
        prompt: String,
        options: GenerateOptions,
    ) -> impl futures::Stream<Item = Result<Token>> + Send + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Token>>(16);
        let engine = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let generation = match engine.generate(&prompt, options) {
                Ok(g) => g,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            for item in generation {
                if tx.blocking_send(item).is_err() {
                    return; // the consumer dropped the stream
                }
            }
        });
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }

    /// Positions one generation holds (prompt and generated tokens together).
    pub fn context(&self) -> usize {
        self.session_options.ctx_for(&self.model.spec).unwrap_or(self.model.spec.max_positions)
    }

    /// The model's configuration.
    pub fn config(&self) -> &crate::model::config::ModelConfig {
        &self.model.cfg
    }

    /// The tokenizer (text <-> ids).
    pub fn tokenizer(&self) -> &TextCodec {
        &self.codec
    }

    /// Counters: the last generation's timings and, when streaming, the cache and I/O counters.
    pub fn stats(&self) -> EngineStats {
        EngineStats {
            generation: self.last.lock().clone(),
            streaming: self.streaming.as_ref().map(|s| s.stats()),
        }
    }
}

/// A generation in progress: an iterator of [`Token`]s (or the error that ended it).
pub struct Generation<'e> {
    engine: &'e Engine,
    session: Session,
    sampler: Sampler,
    prompt: Vec<u32>,
    history: Vec<u32>,
    out: Vec<u32>,
    pieces: IncrementalDecoder,
    logits: Option<Vec<f32>>,
    options: GenerateOptions,
    done: bool,
    start: std::time::Instant,
    decode_start: Option<std::time::Instant>,
}

impl std::fmt::Debug for Generation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation").field("generated", &self.out.len()).finish()
    }
}

impl Generation<'_> {
    fn step(&mut self) -> Result<Option<Token>> {
        if self.done || self.out.len() >= self.options.max_tokens {
            return Ok(None);
        }
        let mut logits = match self.logits.take() {
            Some(l) => l,
            None => {
                let mut l = Vec::new();
                for chunk in self.prompt.chunks(self.options.prefill_chunk.max(1)) {
                    l = self.engine.model.forward(&mut self.session, chunk, false)?;
                }
                let mut st = self.engine.last.lock();
                *st = GenStats { prompt_tokens: self.prompt.len(), ..GenStats::default() };
                st.prefill_s = self.start.elapsed().as_secs_f64();
                st.prefill_tok_s = self.prompt.len() as f64 / st.prefill_s.max(1e-9);
                l
            }
        };
        let tok = self.sampler.sample(&mut logits, &self.history);
        self.out.push(tok);
        self.history.push(tok);
        {
            let mut st = self.engine.last.lock();
            st.generated_tokens = self.out.len();
            match self.decode_start {
                None => {
                    st.ttft_s = self.start.elapsed().as_secs_f64();
                    self.decode_start = Some(std::time::Instant::now());
                }
                Some(t) => {
                    st.decode_s = t.elapsed().as_secs_f64();
                    st.decode_tok_s = (self.out.len() - 1) as f64 / st.decode_s.max(1e-9);
                }
            }
        }
        let eos = !self.options.ignore_eos && self.engine.model.cfg.eos_token_ids.contains(&tok);
        if eos || self.out.len() >= self.options.max_tokens {
            self.done = true;
        } else {
            self.logits = Some(self.engine.model.forward(&mut self.session, &[tok], false)?);
        }
        let mut piece = self.pieces.push(&self.engine.codec, tok)?;
        if self.done {
            piece.push_str(&self.pieces.flush(&self.engine.codec)?);
        }
        Ok(Some(Token { id: tok, text: piece }))
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
