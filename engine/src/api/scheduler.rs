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
use crate::runtime::constraint::Constraint;
use crate::runtime::generate::{GenStats, GenerateOptions};
use crate::runtime::sampling::{Sampler, TokenLogprobs};
use crate::runtime::session::SeqExperts;
use crate::runtime::session::{BatchScratch, PassKind};
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
    Token { id: u32, logprobs: Option<TokenLogprobs>, reused: usize, finished: Option<Finished> },
    /// The generation failed.
    Failed(Error),
}

/// A request waiting for the scheduler.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    /// The compiled grammar of `options.grammar`.
    pub constraint: Option<Constraint>,
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
    /// The memory budget the slab cache shares with growing KV caches, if any.
    pub kv_budget: Option<super::kv_budget::KvBudget>,
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
    /// False once it has finished or its consumer went away.
    going: bool,
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
        self.sampler.adjust(logits, &self.history);
        let mut grammar_done = false;
        if let Some(c) = self.job.constraint.as_mut() {
            if let Err(e) = c.mask(logits) {
                let _ = self.job.events.send(Event::Failed(e));
                return false;
            }
        }
        let tok = self.sampler.choose(logits);
        if let Some(c) = self.job.constraint.as_mut() {
            if let Err(e) = c.commit(tok) {
                let _ = self.job.events.send(Event::Failed(e));
                return false;
            }
            grammar_done = c.is_done();
        }
        self.sampler.note(tok);
        let logprobs = self.job.options.logprobs.map(|top| Sampler::logprobs(logits, tok, top));
        self.history.push(tok);
        self.generated += 1;
        if self.generated == 1 {
            self.ttft_s = self.job.submitted.elapsed().as_secs_f64();
            self.decode_start = Instant::now();
        }
        let o = &self.job.options;
        let reason = if grammar_done || !o.ignore_eos && core.model.cfg.eos_token_ids.contains(&tok)
        {
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
        let sent = self
            .job
            .events
            .send(Event::Token { id: tok, logprobs, reused: self.reused, finished })
            .is_ok();
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
/// Each turn runs one prefill pass (the next chunk of every prompt being admitted, together:
/// prompts arriving at once read their experts once), then one decode pass over every
/// sequence in flight, so a long prompt delays the others by a chunk at a time.
pub(crate) fn run(core: Arc<Core>, jobs: Receiver<Job>) {
    let rewindable = core.model.spec.layers.iter().all(|l| l.mixer.rewindable());
    let mut kept = KeptSessions::new(core.kept_sessions, rewindable);
    let mut batch = BatchScratch::new();
    let mut live: Vec<Live> = Vec::new();
    let mut admitting: Vec<Admitting> = Vec::new();
    let vocab = core.model.spec.vocab;
    loop {
        // Admit: wait when idle, else take what is waiting while there is room.
        if live.is_empty() && admitting.is_empty() {
            match jobs.recv() {
                Ok(job) => admitting.extend(start(&core, job, &mut kept)),
                Err(_) => return,
            }
        }
        while live.len() + admitting.len() < core.max_sequences.max(1) {
            match jobs.try_recv() {
                Ok(job) => admitting.extend(start(&core, job, &mut kept)),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        core.counters.waiting.store(jobs.len(), Ordering::Relaxed);
        admitting.retain(|a| !a.job.gone());
        fit_kv(&core, &live, &admitting, &kept);
        if !admitting.is_empty() {
            // One prefill pass: the next chunk of every prompt being admitted.
            match prefill_pass(&core, &mut admitting, &mut batch) {
                Ok(done) => {
                    let mut rest = Vec::with_capacity(admitting.len());
                    for (a, logits) in admitting.drain(..).zip(done) {
                        match logits {
                            Some(mut l) => live.push(a.into_live(&core, &mut l)),
                            None => rest.push(a),
                        }
                    }
                    admitting = rest;
                    // A first token that ended its generation.
                    retire(&core, &mut live, &mut kept);
                }
                Err(e) => fail_all(admitting.drain(..).map(|a| a.job), "prefill", &e),
            }
        }
        // Consumers that went away leave before the step.
        retire(&core, &mut live, &mut kept);
        if live.is_empty() {
            continue;
        }
        fit_kv(&core, &live, &[], &kept);
        // One decode step over every sequence in flight.
        let tokens: Vec<[u32; 1]> = live
            .iter()
            .map(|l| [*l.history.last().expect("a live generation has a token")])
            .collect();
        let toks: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
        let mut sessions: Vec<&mut Session> = live.iter_mut().map(|l| &mut l.session).collect();
        let result = core.model.pass(&mut batch, &mut sessions, &toks, PassKind::Decode, false);
        drop(sessions);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                fail_all(live.drain(..).map(|l| l.job), "decode step", &e);
                continue;
            }
        };
        core.counters.passes.fetch_add(1, Ordering::Relaxed);
        core.counters.decode_tokens.fetch_add(live.len() as u64, Ordering::Relaxed);
        for (l, row) in live.iter_mut().zip(logits.chunks_exact_mut(vocab)) {
            l.going = l.take_token(&core, row);
        }
        // Finished sessions are kept before the next request is looked at, so a client that
        // answers at once finds its conversation's state.
        retire(&core, &mut live, &mut kept);
    }
}

/// Limits the slab cache to what the memory budget leaves once every session's KV cache has
/// grown for the coming passes: the next chunk of each prompt being admitted, one token for
/// each live generation.
fn fit_kv(core: &Core, live: &[Live], admitting: &[Admitting], kept: &KeptSessions) {
    let Some(b) = &core.kv_budget else { return };
    let sessions = live.iter().map(|l| (&l.session, l.session.position() + 1)).chain(
        admitting.iter().map(|a| (&a.session, prefill_end(a).max(a.session.position()) + 1)),
    );
    let sessions = sessions.map(|(s, after)| (s.kv_bytes() as u64, after));
    let prefill: usize = admitting.iter().map(|a| prefill_end(a) - a.at).sum();
    if let Err(e) = b.fit(sessions, kept.bytes() as u64, prefill.max(live.len())) {
        tracing::warn!("resizing the slab cache: {e}");
    }
}

/// Where the next prefill chunk of `a` ends.
fn prefill_end(a: &Admitting) -> usize {
    let chunk = a.job.options.prefill_chunk.max(1);
    ((a.at / chunk + 1) * chunk).min(a.job.prompt.len())
}

/// Moves the generations that finished or lost their consumer out of `live` into `kept`.
fn retire(core: &Core, live: &mut Vec<Live>, kept: &mut KeptSessions) {
    let mut still = Vec::with_capacity(live.len());
    for l in live.drain(..) {
        if l.job.gone() || !l.going {
            let (tokens, session) = l.into_kept();
            kept.put(tokens, session);
        } else {
            still.push(l);
        }
    }
    *live = still;
    core.counters.active.store(live.len(), Ordering::Relaxed);
    core.counters.kept.store(kept.len(), Ordering::Relaxed);
    core.counters.kept_bytes.store(kept.bytes(), Ordering::Relaxed);
}

/// Ends every one of `jobs` with the error of the pass they shared.
fn fail_all(jobs: impl Iterator<Item = Job>, pass: &str, e: &Error) {
    for job in jobs {
        let _ = job.events.send(Event::Failed(Error::Invalid(format!("{pass} failed: {e}"))));
    }
}

/// A request whose prompt is being run, a chunk per scheduler turn.
struct Admitting {
    job: Job,
    session: Session,
    reused: usize,
    /// Prompt tokens the session holds so far.
    at: usize,
    start: Instant,
}

impl Admitting {
    /// Samples the first token: a live generation (not `going` if that token ended it).
    fn into_live(self, core: &Core, logits: &mut [f32]) -> Live {
        core.counters
            .prefill_tokens
            .fetch_add((self.job.prompt.len() - self.reused) as u64, Ordering::Relaxed);
        core.counters.reused_tokens.fetch_add(self.reused as u64, Ordering::Relaxed);
        let mut l = Live {
            sampler: Sampler::new(self.job.options.sampling.clone()),
            history: self.job.prompt.clone(),
            job: self.job,
            session: self.session,
            generated: 0,
            reused: self.reused,
            prefill_s: self.start.elapsed().as_secs_f64(),
            ttft_s: 0.0,
            decode_start: Instant::now(),
            going: true,
        };
        l.going = l.take_token(core, logits);
        l
    }
}

/// Takes `job` in: its session (from a kept one holding a prefix of its prompt, or new), or
/// None when it is refused (the error sent) or already gone.
fn start(core: &Core, job: Job, kept: &mut KeptSessions) -> Option<Admitting> {
    if job.gone() {
        return None;
    }
    let ctx = core.context();
    if job.prompt.is_empty() || job.prompt.len() > ctx {
        let _ = job.events.send(Event::Failed(Error::Invalid(format!(
            "the prompt has {} tokens: a generation holds 1 to {ctx}",
            job.prompt.len()
        ))));
        return None;
    }
    core.counters.admitted.fetch_add(1, Ordering::Relaxed);
    let knobs = SeqExperts {
        per_token: job.options.experts_per_token,
        min_weight: job.options.min_expert_weight,
    };
    let fresh = || {
        Session::new(core.session_options)
            .with_experts_per_token(knobs.per_token)
            .with_min_expert_weight(knobs.min_weight)
    };
    let (session, reused) = match job.options.record_routes {
        true => (fresh().record_routes(), 0),
        false => kept.take(&job.prompt, knobs).unwrap_or_else(|| (fresh(), 0)),
    };
    Some(Admitting { job, session, reused, at: reused, start: Instant::now() })
}

/// Runs the next chunk of every prompt being admitted as one pass (chunks end at multiples of
/// the prefill chunk, so a continued prompt is cut where a fresh one is); for each, its last
/// token's logits once its prompt is done.
fn prefill_pass(
    core: &Core,
    admitting: &mut [Admitting],
    batch: &mut BatchScratch,
) -> Result<Vec<Option<Vec<f32>>>> {
    let vocab = core.model.spec.vocab;
    let ends: Vec<usize> = admitting.iter().map(prefill_end).collect();
    let chunks: Vec<&[u32]> =
        admitting.iter().zip(&ends).map(|(a, &end)| &a.job.prompt[a.at..end]).collect();
    let chunks: Vec<Vec<u32>> = chunks.into_iter().map(<[u32]>::to_vec).collect();
    let toks: Vec<&[u32]> = chunks.iter().map(Vec::as_slice).collect();
    let mut sessions: Vec<&mut Session> = admitting.iter_mut().map(|a| &mut a.session).collect();
    let logits = core.model.pass(batch, &mut sessions, &toks, PassKind::Prefill, false)?;
    let mut out = Vec::with_capacity(admitting.len());
    for ((a, &end), row) in admitting.iter_mut().zip(&ends).zip(logits.chunks_exact(vocab)) {
        a.at = end;
        out.push((end == a.job.prompt.len()).then(|| row.to_vec()));
    }
    Ok(out)
}
