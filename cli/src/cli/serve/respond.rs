//! Answering `/v1/chat/completions` and `/v1/completions`: the body read under a deadline and a
//! size cap, the prompt tokenized off the async threads (with the context checked first by a
//! bound on its bytes), the generation streamed through the stop-string scanner, and the
//! answer in OpenAI's shapes (log-probabilities and usage included).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use floe::{GenerateOptions, SamplingParams, TokenLogprobs};
use futures::StreamExt;
use serde_json::{json, Value};

use super::openai::{shown, ApiError, Request};
use super::reasoning::{Splitter, Style};
use super::stop::StopScanner;
use super::tools::{calls_json, CallReader, ToolChoice};
use super::{AppState, Shared};
use floe::model::tools::{calls_grammar, dialect_for, ToolCall};

/// Largest request body read.
pub const MAX_BODY_BYTES: usize = 16 << 20;

fn too_large() -> ApiError {
    ApiError::status(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// The body, whole, within `timeout` and [`MAX_BODY_BYTES`] (a larger `Content-Length` is
/// refused before reading).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Err(_) => Err(ApiError::status(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!("the request body did not arrive within {} s", timeout.as_secs()),
        )),
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                Err(too_large())
            } else {
                Err(ApiError::bad("body", format!("cannot read the request body: {inner}")))
            }
        }
    }
}

/// A validated request: the prompt's tokens, the options, and what the answer needs to say.
pub(super) struct Job {
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    pub stops: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// Choices asked for.
    pub n: usize,
    /// Reads the model's tool calls, when tools are offered.
    pub calls: Option<CallReader>,
    /// Sets the model's reasoning apart from its answer (chat, without tools).
    pub reasoning: Option<Splitter>,
}

fn context_exceeded(message: String) -> ApiError {
    let mut e = ApiError::bad("messages", message);
    e.code = Some("context_length_exceeded");
    e
}

/// Checks the request against the model and tokenizes its prompt (blocking work).
fn prepare(s: &AppState, req: Request, chat: bool) -> Result<Job, ApiError> {
    if let Some(m) = &req.model {
        if m != &s.name && !s.any_model {
            let mut e = ApiError::status(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("model {:?} does not exist (this server runs {:?})", shown(m), s.name),
            );
            e.code = Some("model_not_found");
            e.param = Some("model".into());
            return Err(e);
        }
    }
    let vocab = s.engine.spec().vocab;
    if let Some(&(id, _)) = req.logit_bias.iter().find(|(id, _)| *id as usize >= vocab) {
        return Err(ApiError::bad(
            "logit_bias",
            format!("token {id} is outside the vocabulary of {vocab}"),
        ));
    }
    let codec = s.engine.tokenizer();
    // With tools: the template's call syntax; a call required (or named) is forced by its
    // grammar.
    let mut grammar = req.grammar.clone();
    let calls = match &req.tools {
        Some(t) if t.choice != ToolChoice::None => {
            let dialect = codec.chat_template().and_then(dialect_for).ok_or_else(|| {
                ApiError::unsupported(
                    "tools",
                    "with this model: its chat template writes no tool-call syntax floe reads",
                )
            })?;
            let only = match &t.choice {
                ToolChoice::Named(n) => Some(n.as_str()),
                _ => None,
            };
            if matches!(t.choice, ToolChoice::Required | ToolChoice::Named(_)) {
                if grammar.is_some() {
                    return Err(ApiError::bad(
                        "tool_choice",
                        "a required tool call and response_format cannot be combined",
                    ));
                }
                let lark = calls_grammar(dialect, codec, &t.specs, only, t.parallel)
                    .map_err(|e| ApiError::bad("tools", e.to_string()))?;
                grammar = Some(floe::Grammar::Lark(lark));
            }
            Some(CallReader::new(dialect, t.specs.clone()))
        }
        _ => None,
    };
    if let Some(g) = &grammar {
        // Compiled here too, so that a schema llguidance refuses is the client's 400.
        let compiler = s.engine.constraint_compiler().map_err(|e| {
            ApiError::status(StatusCode::NOT_IMPLEMENTED, "server_error", e.to_string())
        })?;
        let param = if req.grammar.is_some() { "response_format" } else { "tools" };
        compiler.compile(g).map_err(|e| ApiError::bad(param, e.to_string()))?;
    }
    if let Some(k) = req.experts_per_token {
        let top_k = s.engine.config().top_k;
        if k > top_k || s.engine.config().experts == 0 {
            return Err(ApiError::bad(
                "experts_per_token",
                format!("this server runs {top_k} routed experts per token; give 1 to {top_k}"),
            ));
        }
    }
    let ctx = s.engine.context();
    // A prompt of n bytes has at least n / max_token_bytes tokens (halved for normalizers
    // that shorten text): one that surely cannot fit is refused before tokenizing.
    let bytes = if chat {
        req.messages.iter().map(|m| m.to_string().len()).sum()
    } else {
        req.prompt.len()
    };
    let fewest = bytes / (2 * s.max_token_bytes);
    if fewest > ctx {
        return Err(context_exceeded(format!(
            "the prompt has at least {fewest} tokens, more than the {ctx} positions a request has"
        )));
    }
    let prompt = if chat {
        let tools = req.tools.as_ref().map(|t| t.json.as_slice());
        codec
            .encode_conversation(&req.messages, tools)
            .map_err(|e| ApiError::bad("messages", e.to_string()))?
    } else {
        codec.encode(&req.prompt).map_err(|e| ApiError::bad("prompt", e.to_string()))?
    };
    let prompt_tokens = prompt.len();
    if prompt_tokens == 0 {
        return Err(ApiError::bad("prompt", "the prompt has no tokens"));
    }
    let room = ctx.saturating_sub(prompt_tokens);
    let max_tokens = req.max_tokens.unwrap_or(s.default_max_tokens.min(room.max(1)));
    if prompt_tokens + max_tokens > ctx {
        return Err(context_exceeded(format!(
            "the prompt ({prompt_tokens} tokens) and max_tokens ({max_tokens}) need more than \
             the {ctx} positions a request has"
        )));
    }
    let sampling = SamplingParams {
        temperature: req.temperature as f32,
        top_p: req.top_p as f32,
        top_k: req.top_k,
        repetition_penalty: req.repetition_penalty as f32,
        presence_penalty: req.presence_penalty as f32,
        frequency_penalty: req.frequency_penalty as f32,
        logit_bias: req.logit_bias,
        // Without a seed every request draws afresh ("regenerate" gives another answer).
        seed: req.seed.unwrap_or_else(rand::random),
    };
    let options = GenerateOptions {
        max_tokens,
        sampling,
        logprobs: req.logprobs,
        grammar,
        experts_per_token: req.experts_per_token,
        min_expert_weight: req.min_expert_weight,
        ..Default::default()
    };
    Ok(Job {
        prompt,
        options,
        stops: req.stops,
        stream: req.stream,
        include_usage: req.include_usage,
        n: req.n,
        reasoning: if chat && calls.is_none() {
            codec.chat_template().and_then(Style::detect).map(Splitter::new)
        } else {
            None
        },
        calls,
    })
}

pub async fn chat(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    respond(s, headers, body, true).await
}

pub async fn completions(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    respond(s, headers, body, false).await
}

pub(super) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Counts a request in flight while it lives.
pub(super) struct Active(pub Shared);
impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One step of an answer: the text that can be sent, the tokens' log-probabilities, and at the
/// end the finish reason.
pub(super) struct Piece {
    pub text: String,
    /// New reasoning text (`reasoning_content`).
    pub reasoning: String,
    pub logprobs: Option<TokenLogprobs>,
    pub finish: Option<&'static str>,
    /// On a `stop` finish caused by a stop string: which one.
    pub stop: Option<String>,
    pub tokens: usize,
    pub cached: usize,
    /// On the last piece: the tool calls the answer made.
    pub calls: Vec<ToolCall>,
}

/// The generation as pieces of the answer, made on a thread of its own: the stop-string scan
/// and the tool-call reading run there, not on the async threads. Dropping the stream ends
/// the generation.
pub(super) fn answer_pieces(
    engine: Arc<floe::Engine>,
    prompt: Vec<u32>,
    options: GenerateOptions,
    stops: &[String],
    mut reader: Option<CallReader>,
    mut splitter: Option<Splitter>,
) -> impl futures::Stream<Item = Result<Piece, ApiError>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Piece, ApiError>>(16);
    let mut scan = StopScanner::new(stops);
    let stops = stops.to_vec();
    let work = move || {
        let generation = match engine.generate_ids(prompt, options) {
            Ok(g) => g,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        for (n, item) in generation.enumerate() {
            let t = match item {
                Ok(t) => t,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            // With a reasoning style, the answer is what its splitter reads as answer.
            let (reasoning, answer) = match splitter.as_mut() {
                Some(sp) => sp.push(engine.tokenizer(), t.id, t.finished.is_some()),
                None => (String::new(), t.text),
            };
            let (text, hit) = scan.push(&answer);
            let mut finish =
                if hit { Some("stop") } else { t.finished.as_ref().map(|f| f.reason.as_str()) };
            let mut text = if finish.is_some() && !hit { text + &scan.finish() } else { text };
            let mut calls = Vec::new();
            if let Some(r) = reader.as_mut() {
                let codec = engine.tokenizer();
                text = r.push(codec, t.id, &text);
                if finish.is_some() {
                    let (made, rest) = r.finish(codec);
                    text.push_str(&rest);
                    if !made.is_empty() {
                        finish = Some("tool_calls");
                    }
                    calls = made;
                }
            }
            let piece = Piece {
                text,
                reasoning,
                logprobs: t.logprobs,
                finish,
                stop: scan.matched().and_then(|k| stops.get(k).cloned()),
                tokens: n + 1,
                cached: t.reused_prompt_tokens,
                calls,
            };
            // A consumer gone (client disconnected) or a stop string hit: dropping the
            // generation ends it.
            if tx.blocking_send(Ok(piece)).is_err() || finish.is_some() {
                return;
            }
        }
    };
    let spawned = std::thread::Builder::new().name("floe-answer".into()).spawn(work);
    let failed = spawned.is_err().then(|| {
        Err(ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "cannot start a thread for the answer",
        ))
    });
    futures::stream::iter(failed).chain(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

async fn start(s: &Shared, headers: HeaderMap, body: Body, chat: bool) -> Result<Job, ApiError> {
    let bytes = read_body(&headers, body, s.body_timeout).await?;
    let req = Request::parse(&bytes, chat)?;
    drop(bytes);
    admit(s, req, chat).await
}

/// Checks a parsed request and tokenizes its prompt.
pub(super) async fn admit(s: &Shared, req: Request, chat: bool) -> Result<Job, ApiError> {
    // At most a few prompts are tokenized at once, on blocking threads: a flood of huge
    // prompts neither starves the async threads nor multiplies the tokenizer's memory.
    let _permit = s.tokenizing.acquire().await.map_err(|_| {
        ApiError::status(StatusCode::SERVICE_UNAVAILABLE, "server_error", "shutting down")
    })?;
    let state = Arc::clone(s);
    tokio::task::spawn_blocking(move || prepare(&state, req, chat)).await.map_err(|e| {
        ApiError::status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("tokenizer: {e}"),
        )
    })?
}

async fn respond(s: Shared, headers: HeaderMap, body: Body, chat: bool) -> Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let job = match start(&s, headers, body, chat).await {
        Ok(j) => j,
        Err(e) => {
            s.counters.errors.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    let prompt_tokens = job.prompt.len();
    s.counters.prompt_tokens.fetch_add(prompt_tokens as u64, Ordering::Relaxed);
    s.counters.active.fetch_add(1, Ordering::Relaxed);
    let active = Active(Arc::clone(&s));
    let id = format!("{}-{:x}", if chat { "chatcmpl" } else { "cmpl" }, rand::random::<u64>());
    let created = now();
    // `n` choices: n generations of the same prompt, each drawing from its own seed, decoded
    // together by the scheduler.
    let choices = job.n;
    let streams = (0..choices).map(|i| {
        let mut options = job.options.clone();
        options.sampling.seed = options.sampling.seed.wrapping_add(i as u64);
        let prompt = job.prompt.clone();
        answer_pieces(
            Arc::clone(&s.engine),
            prompt,
            options,
            &job.stops,
            job.calls.clone(),
            job.reasoning.clone(),
        )
        .map(move |p| (i, p))
        .boxed()
    });
    let pieces = futures::stream::select_all(streams);
    let usage = move |n: usize, cached: usize| {
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": n,
               "total_tokens": prompt_tokens + n,
               "prompt_tokens_details": {"cached_tokens": cached}})
    };
    let object = match (chat, job.stream) {
        (true, true) => "chat.completion.chunk",
        (true, false) => "chat.completion",
        (false, _) => "text_completion",
    };
    let model = s.name.clone();
    let head = move || json!({"id": id, "object": object, "created": created, "model": model});
    let codec_state = Arc::clone(&s);
    let lp_json = move |lps: &[TokenLogprobs]| logprobs_json(&codec_state, lps, chat);
    if job.stream {
        let state = Arc::clone(&s);
        let include_usage = job.include_usage;
        // Tokens and cached tokens of the choices that have finished, and how many have.
        let (mut done, mut tokens, mut cached) = (0, 0, 0);
        let mut started = vec![false; choices];
        let events = pieces
            .map(move |(i, p)| {
                let _keep = &active;
                let mut out = Vec::new();
                match p {
                    Ok(p) => {
                        if p.finish.is_some() {
                            state.counters.generated_tokens.fetch_add(p.tokens as u64, Ordering::Relaxed);
                            done += 1;
                            tokens += p.tokens;
                            cached = p.cached;
                        }
                        let lps: Vec<TokenLogprobs> = p.logprobs.into_iter().collect();
                        let logprobs = if lps.is_empty() { Value::Null } else { lp_json(&lps) };
                        let mut chunk = |choice: Value| {
                            let mut c = head();
                            c["choices"] = json!([choice]);
                            if include_usage {
                                c["usage"] = Value::Null;
                            }
                            out.push(c);
                        };
                        if chat && !started[i] {
                            // Each choice opens with its role, as OpenAI's streams do.
                            started[i] = true;
                            chunk(json!({"index": i, "delta": {"role": "assistant", "content": null},
                                         "logprobs": null, "finish_reason": null}));
                        }
                        if chat && !p.reasoning.is_empty() {
                            chunk(json!({"index": i, "delta": {"reasoning_content": p.reasoning},
                                         "logprobs": null, "finish_reason": null}));
                        }
                        if !chat {
                            chunk(json!({"index": i, "text": p.text, "logprobs": logprobs, "finish_reason": p.finish}));
                        } else if p.calls.is_empty() {
                            // No empty content deltas: a token that completes no text (part of
                            // a character) sends nothing, and the end has an empty delta.
                            let delta = if p.text.is_empty() { json!({}) } else { json!({"content": p.text}) };
                            if !p.text.is_empty() || p.finish.is_some() || !logprobs.is_null() {
                                chunk(json!({"index": i, "delta": delta, "logprobs": logprobs,
                                             "finish_reason": p.finish}));
                            }
                        } else {
                            // The content left, the calls, then the end, each its own chunk.
                            if !p.text.is_empty() || !logprobs.is_null() {
                                chunk(json!({"index": i, "delta": {"content": p.text},
                                             "logprobs": logprobs, "finish_reason": null}));
                            }
                            chunk(json!({"index": i, "delta": {"tool_calls": calls_json(&p.calls, true)},
                                         "logprobs": null, "finish_reason": null}));
                            chunk(json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": p.finish}));
                        }
                        if include_usage && p.finish.is_some() && done == choices {
                            let mut c = head();
                            c["choices"] = json!([]);
                            c["usage"] = usage(tokens, cached);
                            out.push(c);
                        }
                    }
                    Err(e) => out.push(json!({"error": {"message": e.message, "type": e.kind, "param": e.param, "code": e.code}})),
                }
                futures::stream::iter(
                    out.into_iter()
                        .map(|c| Ok::<_, std::convert::Infallible>(Event::default().data(c.to_string()))),
                )
            })
            .flatten()
            .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
        return Sse::new(events).into_response();
    }
    let collected: Vec<_> = pieces.collect().await;
    drop(active);
    struct Answer {
        text: String,
        reasoning: String,
        finish: &'static str,
        tokens: usize,
        lps: Vec<TokenLogprobs>,
        calls: Vec<ToolCall>,
    }
    let mut answers: Vec<Answer> = (0..choices)
        .map(|_| Answer {
            text: String::new(),
            reasoning: String::new(),
            finish: "length",
            tokens: 0,
            lps: Vec::new(),
            calls: Vec::new(),
        })
        .collect();
    let mut cached = 0;
    for (i, p) in collected {
        match p {
            Ok(p) => {
                let a = &mut answers[i];
                a.text.push_str(&p.text);
                a.reasoning.push_str(&p.reasoning);
                a.calls.extend(p.calls);
                a.tokens = p.tokens;
                a.lps.extend(p.logprobs);
                cached = p.cached;
                if let Some(f) = p.finish {
                    a.finish = f;
                }
            }
            Err(e) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
                return e.into_response();
            }
        }
    }
    let tokens: usize = answers.iter().map(|a| a.tokens).sum();
    s.counters.generated_tokens.fetch_add(tokens as u64, Ordering::Relaxed);
    let list: Vec<Value> = answers
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let logprobs = if a.lps.is_empty() { Value::Null } else { lp_json(&a.lps) };
            if chat && !a.calls.is_empty() {
                let content =
                    if a.text.trim().is_empty() { Value::Null } else { Value::from(a.text) };
                json!({"index": i, "message": {"role": "assistant", "content": content,
                                               "tool_calls": calls_json(&a.calls, false)},
                       "logprobs": logprobs, "finish_reason": a.finish})
            } else if chat {
                let mut message = json!({"role": "assistant", "content": a.text});
                if !a.reasoning.is_empty() {
                    message["reasoning_content"] = Value::from(a.reasoning);
                }
                json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": a.finish})
            } else {
                json!({"index": i, "text": a.text, "logprobs": logprobs, "finish_reason": a.finish})
            }
        })
        .collect();
    let mut out = head();
    out["choices"] = Value::Array(list);
    out["usage"] = usage(tokens, cached);
    Json(out).into_response()
}

/// Log-probabilities in OpenAI's shapes: chat's `{"content": [{token, logprob, bytes,
/// top_logprobs}]}`, or the completions API's `{tokens, token_logprobs, top_logprobs,
/// text_offset}`.
fn logprobs_json(s: &AppState, lps: &[TokenLogprobs], chat: bool) -> Value {
    let codec = s.engine.tokenizer();
    let entry = |id: u32, lp: f32| {
        let token = codec.token_text(id);
        let bytes: Vec<u8> = token.as_bytes().to_vec();
        (token, lp, bytes)
    };
    if chat {
        let content: Vec<Value> = lps
            .iter()
            .map(|t| {
                let (token, logprob, bytes) = entry(t.id, t.logprob);
                let top: Vec<Value> = t
                    .top
                    .iter()
                    .map(|&(id, lp)| {
                        let (token, logprob, bytes) = entry(id, lp);
                        json!({"token": token, "logprob": logprob, "bytes": bytes})
                    })
                    .collect();
                json!({"token": token, "logprob": logprob, "bytes": bytes, "top_logprobs": top})
            })
            .collect();
        return json!({"content": content, "refusal": null});
    }
    let mut offset = 0;
    let (mut tokens, mut token_logprobs, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for t in lps {
        let (token, logprob, _) = entry(t.id, t.logprob);
        offsets.push(offset);
        offset += token.chars().count();
        tokens.push(token);
        token_logprobs.push(logprob);
        // Keyed by text: of two ids that spell the same text, the likelier (first) stays.
        let mut top = serde_json::Map::new();
        for &(id, lp) in &t.top {
            top.entry(codec.token_text(id)).or_insert(json!(lp));
        }
        tops.push(top);
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets})
}
