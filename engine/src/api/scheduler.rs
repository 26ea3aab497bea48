//! The scheduler: one thread runs every generation of an [`Engine`](super::Engine), with
//! continuous batching. A new request is admitted between decode steps: its prompt runs alone
//! (from a kept session's state when one holds a prefix of it), then it joins the decode batch,
//! where every step is one forward pass over all sequences in flight ([`Model::pass`]): an
//! expert chosen by several of them is read from SSD once and run once over their tokens.
//! Sequences leave the batch when they finish or their consumer goes away.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::Mutex;

use super::kept::KeptSessions;
use crate::error::{Error, Result};
use crate::runtime::generate::{GenStats, GenerateOptions};
use crate::runtime::sampling::Sampler;
use crate::runtime::session::BatchScratch;
use crate::runtime::{Model, Session, SessionOptions};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token.
    Stop,
    /// `max_tokens`, or the session's context is full.
    Length,
}

impl FinishReason {
    /// The OpenAI API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// How a generation ended and what it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Why it ended.
    pub reason: FinishReason,
    /// Its timings and counts.
    pub stats: GenStats,
    /// Every routing decision, when the options asked for them.
    pub routes: Option<Vec<crate::runtime::RouteRecord>>,
}

/// What the scheduler sends a generation.
pub(crate) enum Event {
    /// A generated token; the last one says how the generation ended.
    Token { id: u32, finished: Option<Finished> },
    /// The generation failed.
    Failed(Error),
}

/// A request waiting for the scheduler.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub events: Sender<Event>,
    pub cancel: Arc<AtomicBool>,
    pub submitted: Instant,
}

impl Job {
    fn gone(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Counters of the scheduler since the engine opened.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SchedulerStats {
    /// Generations in the decode batch now.
    pub active_sequences: usize,
    /// Requests waiting to be admitted.
    pub waiting: usize,
    /// Generations admitted.
    pub admitted: u64,
    /// Decode passes run (each over every sequence in flight).
    pub decode_passes: u64,
    /// Tokens those passes ran (their mean batch is this over `decode_passes`).
    pub decode_tokens: u64,
    /// Prompt tokens run.
    pub prefill_tokens: u64,
    /// Prompt tokens taken from kept sessions instead of being run.
    pub reused_tokens: u64,
    /// Sessions kept for prefix reuse, and the bytes their state holds.
    pub kept_sessions: usize,
    /// Bytes held by kept sessions' state.
    pub kept_bytes: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    active: AtomicUsize,
    pub waiting: AtomicUsize,
    admitted: AtomicU64,
    passes: AtomicU64,
    decode_tokens: AtomicU64,
    prefill_tokens: AtomicU64,
    reused_tokens: AtomicU64,
    kept: AtomicUsize,
    kept_bytes: AtomicUsize,
}

impl Counters {
    pub fn snapshot(&self) -> SchedulerStats {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SchedulerStats {
            active_sequences: self.active.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            admitted: l(&self.admitted),
            decode_passes: l(&self.passes),
            decode_tokens: l(&self.decode_tokens),
            prefill_tokens: l(&self.prefill_tokens),
            reused_tokens: l(&self.reused_tokens),
            kept_sessions: self.kept.load(Ordering::Relaxed),
            kept_bytes: self.kept_bytes.load(Ordering::Relaxed),
        }
    }
}

/// What the scheduler thread shares with the engine.
pub(crate) struct Core {
    pub model: Model,
    pub session_options: SessionOptions,
    /// Most sequences decoded together; more requests wait.
    pub max_sequences: usize,
    /// Sessions kept for prefix reuse.
    pub kept_sessions: usize,
    pub last: Mutex<GenStats>,
    pub counters: Counters,
}

/// A generation in the decode batch.
struct Live {
    job: Job,
    session: Session,
    sampler: Sampler,
    /// Prompt and generated tokens; the session has run all but the last.
    history: Vec<u32>,
    generated: usize,
    reused: usize,
    prefill_s: f64,
    ttft_s: f64,
    decode_start: Instant,
}

impl Live {
    fn stats(&self) -> GenStats {
        let prompt = self.job.prompt.len();
        let decode_s = self.decode_start.elapsed().as_secs_f64();
        GenStats {
            prompt_tokens: prompt,
            generated_tokens: self.generated,
            ttft_s: self.ttft_s,
            prefill_tok_s: (prompt - self.reused) as f64 / self.prefill_s.max(1e-9),
            decode_tok_s: self.generated.saturating_sub(1) as f64 / decode_s.max(1e-9),
            prefill_s: self.prefill_s,
            decode_s,
            reused_tokens: self.reused,
            kv_bytes: self.session.kv_bytes(),
        }
    }

    /// Samples the next token from `logits`, sends it; returns whether the generation goes on.
    fn take_token(&mut self, core: &Core, logits: &mut [f32]) -> bool {
        let tok = self.sampler.sample(logits, &self.history);
        self.history.push(tok);
        self.generated += 1;
        if self.generated == 1 {
            self.ttft_s = self.job.submitted.elapsed().as_secs_f64();
            self.decode_start = Instant::now();
        }
        let o = &self.job.options;
        let reason = if !o.ignore_eos && core.model.cfg.eos_token_ids.contains(&tok) {
            Some(FinishReason::Stop)
        } else if self.generated >= o.max_tokens || self.session.position() >= core.context() {
            Some(FinishReason::Length)
        } else {
            None
        };
        let stats = self.stats();
        *core.last.lock() = stats.clone();
        let finished =
            reason.map(|reason| Finished { reason, stats, routes: self.session.routes.take() });
        let sent = self.job.events.send(Event::Token { id: tok, finished }).is_ok();
        sent && reason.is_none() && !self.job.gone()
    }

    /// The session and the tokens it holds, for keeping.
    fn into_kept(self) -> (Vec<u32>, Session) {
        let mut tokens = self.history;
        tokens.truncate(self.session.position());
        (tokens, self.session)
    }
}

impl Core {
    /// Positions one generation holds.
    pub fn context(&self) -> usize {
        self.session_options.ctx_for(&self.model.spec).unwrap_or(self.model.spec.max_positions)
    }
}

/// The scheduler thread's loop: until the engine drops its sender and every generation ends.
pub(crate) fn run(core: Arc<Core>, jobs: Receiver<Job>) {
    let rewindable = core
        .model
        .spec
        .layers
        .iter()
        .all(|l| !matches!(l.mixer, crate::model::spec::MixerSpec::DeltaNet(_)));
    let mut kept = KeptSessions::new(core.kept_sessions, rewindable);
    let mut batch = BatchScratch::new();
    let mut live: Vec<Live> = Vec::new();
    let vocab = core.model.spec.vocab;
    loop {
        // Admit: wait when idle, else take what is waiting, up to the batch's size.
        if live.is_empty() {
            match jobs.recv() {
                Ok(job) => admit(&core, job, &mut kept, &mut batch, &mut live),
                Err(_) => return,
            }
        }
        while live.len() < core.max_sequences.max(1) {
            match jobs.try_recv() {
                Ok(job) => admit(&core, job, &mut kept, &mut batch, &mut live),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        core.counters.waiting.store(jobs.len(), Ordering::Relaxed);
        core.counters.active.store(live.len(), Ordering::Relaxed);
        // Consumers that went away leave before the step.
        let mut still = Vec::with_capacity(live.len());
        for l in live.drain(..) {
            if l.job.gone() {
                let (tokens, session) = l.into_kept();
                kept.put(tokens, session);
            } else {
                still.push(l);
            }
        }
        live = still;
        if live.is_empty() {
            continue;
        }
        // One decode step over every sequence in flight.
        let tokens: Vec<[u32; 1]> =
            live.iter().map(|l| [*l.history.last().expect("a live generation has a token")]).collect();
        let toks: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
        let mut sessions: Vec<&mut Session> = live.iter_mut().map(|l| &mut l.session).collect();
        let result = core.model.pass(&mut batch, &mut sessions, &toks, false);
        drop(sessions);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                let msg = e.to_string();
                for l in live.drain(..) {
                    let _ = l.job.events.send(Event::Failed(Error::Invalid(format!(
                        "decode step failed: {msg}"
                    ))));
                }
                continue;
            }
        };
        core.counters.passes.fetch_add(1, Ordering::Relaxed);
        core.counters.decode_tokens.fetch_add(live.len() as u64, Ordering::Relaxed);
        let mut going = Vec::with_capacity(live.len());
        for (l, row) in live.iter_mut().zip(logits.chunks_exact_mut(vocab)) {
            going.push(l.take_token(&core, row));
        }
        let mut still = Vec::with_capacity(live.len());
        for (l, go) in live.drain(..).zip(going) {
            if go {
                still.push(l);
            } else {
                let (tokens, session) = l.into_kept();
                kept.put(tokens, session);
            }
        }
        live = still;
        core.counters.kept.store(kept.len(), Ordering::Relaxed);
        core.counters.kept_bytes.store(kept.bytes(), Ordering::Relaxed);
        core.counters.active.store(live.len(), Ordering::Relaxed);
    }
}

/// Runs `job`'s prompt alone and samples its first token; it joins `live` unless that ended it.
fn admit(
    core: &Core,
    job: Job,
    kept: &mut KeptSessions,
    batch: &mut BatchScratch,
    live: &mut Vec<Live>,
) {
    if job.gone() {
        return;
    }
    core.counters.admitted.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let fresh = || Session::new(core.session_options);
    let (mut session, reused) = match job.options.record_routes {
        true => (fresh().record_routes(), 0),
        false => kept.take(&job.prompt).unwrap_or_else(|| (fresh(), 0)),
    };
    let result = prefill(core, &job, &mut session, reused, batch);
    let mut logits = match result {
        Ok(Some(l)) => l,
        Ok(None) => return, // cancelled
        Err(e) => {
            let _ = job.events.send(Event::Failed(e));
            return;
        }
    };
    core.counters.prefill_tokens.fetch_add((job.prompt.len() - reused) as u64, Ordering::Relaxed);
    core.counters.reused_tokens.fetch_add(reused as u64, Ordering::Relaxed);
    let mut l = Live {
        sampler: Sampler::new(job.options.sampling.clone()),
        history: job.prompt.clone(),
        job,
        session,
        generated: 0,
        reused,
        prefill_s: start.elapsed().as_secs_f64(),
        ttft_s: 0.0,
        decode_start: Instant::now(),
    };
    if l.take_token(core, &mut logits) {
        live.push(l);
    } else {
        let (tokens, session) = l.into_kept();
        kept.put(tokens, session);
    }
    core.counters.kept.store(kept.len(), Ordering::Relaxed);
    core.counters.kept_bytes.store(kept.bytes(), Ordering::Relaxed);
}

/// Runs the prompt from position `from` in chunks ending at multiples of the prefill chunk (so
/// a continued prompt is cut where a fresh one is); the last token's logits, or None if the
/// consumer went away.
fn prefill(
    core: &Core,
    job: &Job,
    session: &mut Session,
    from: usize,
    batch: &mut BatchScratch,
) -> Result<Option<Vec<f32>>> {
    let prompt = &job.prompt;
    if prompt.is_empty() {
        return Err(Error::Invalid("the prompt has no tokens".into()));
    }
    let ctx = core.context();
    if prompt.len() > ctx {
        return Err(Error::Invalid(format!(
            "the prompt has {} tokens, more than the {ctx} positions a generation holds",
            prompt.len()
        )));
    }
    let chunk = job.options.prefill_chunk.max(1);
    let mut at = from;
    let mut logits = Vec::new();
    while at < prompt.len() {
        if job.gone() {
            return Ok(None);
        }
        let end = ((at / chunk + 1) * chunk).min(prompt.len());
        logits = core.model.pass(batch, &mut [&mut *session], &[&prompt[at..end]], false)?.to_vec();
        at = end;
    }
    Ok(Some(logits))
}
