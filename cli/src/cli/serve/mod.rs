//! `floe serve`: an OpenAI-compatible HTTP server over one [`floe::Engine`]
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`, `/metrics`, `/stats`,
//! and a chat page at `/`), on axum. Requests go to the engine's scheduler, which decodes all
//! of them together (one pass per step, each expert read once for all) and continues a
//! conversation from its kept state. Streamed answers are server-sent events ending in
//! `data: [DONE]`; a client that goes away drops its stream, which ends its generation.

mod openai;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use floe::kernels::ops::KvDType;
use floe::runtime::SessionOptions;
use floe::{Engine, EngineConfig, GenerateOptions, SamplingParams};
use futures::StreamExt;
use serde_json::{json, Value};

use openai::{ApiError, Request, StopScanner};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model directory made by `floe pack` or `floe synth`, or a GGUF file.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (loopback by default: give 0.0.0.0 to serve the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every /v1 request.
    #[arg(long)]
    api_key: Option<String>,
    /// The model id /v1/models lists and requests may name (default: the model's file name).
    #[arg(long)]
    model_name: Option<String>,
    #[command(flatten)]
    stream: super::StreamingFlags,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Positions per request (prompt and answer together; default: the model's context).
    #[arg(long, value_name = "N")]
    ctx: Option<usize>,
    /// KV cache type: f16, q8_0 or f32.
    #[arg(long, default_value = "f16")]
    kv_dtype: String,
    /// Most requests decoded together: each step is one forward pass over all of them, so an
    /// expert several chose is read and run once. More requests wait their turn.
    #[arg(long, default_value_t = 8, value_name = "N")]
    parallel: usize,
    /// Finished conversations whose state is kept, so a request continuing one (or sharing its
    /// start) does not run those tokens again (0: none).
    #[arg(long, default_value_t = 4, value_name = "N")]
    keep_sessions: usize,
    /// Answer length when a request gives no max_tokens.
    #[arg(long, default_value_t = 256)]
    default_max_tokens: usize,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    active: AtomicU64,
}

struct AppState {
    engine: Arc<Engine>,
    name: String,
    api_key: Option<String>,
    default_max_tokens: usize,
    counters: Counters,
}

type Shared = Arc<AppState>;

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let kv_dtype = KvDType::parse(&a.kv_dtype)
        .with_context(|| format!("unknown KV cache type {:?} (f16, q8_0, f32)", a.kv_dtype))?;
    let config = EngineConfig {
        threads: a.threads.unwrap_or(0),
        session: SessionOptions { ctx: a.ctx, kv_dtype },
        max_sequences: a.parallel.max(1),
        kept_sessions: a.keep_sessions,
        ..a.stream.engine_config(false, 0, "moe")?
    };
    let engine = Arc::new(
        Engine::open(&a.model, config).with_context(|| format!("opening {}", a.model.display()))?,
    );
    let name = a.model_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or("floe".into())
    });
    let state = Arc::new(AppState {
        engine,
        name,
        api_key: a.api_key.clone(),
        default_max_tokens: a.default_max_tokens.max(1),
        counters: Counters::default(),
    });
    let app = Router::new()
        .route("/", get(|| async { axum::response::Html(include_str!("chat.html")) }))
        .route("/stats", get(stats))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(&state));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", a.host, a.port)
            .parse()
            .with_context(|| format!("not an address: {}:{}", a.host, a.port))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("floe serve: listening on http://{local} (model {:?})", state.name);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("server")
    })
}

fn authorise(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &s.api_key else { return Ok(()) };
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(key.as_str()) {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "invalid_request_error",
            code: Some("invalid_api_key"),
            param: None,
            message: "missing or wrong API key (Authorization: Bearer ...)".into(),
        })
    }
}

async fn models(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(e) = authorise(&s, &headers) {
        return e.into_response();
    }
    Json(json!({"object": "list", "data": [
        {"id": s.name, "object": "model", "created": 0, "owned_by": "floe"}]}))
    .into_response()
}

/// The engine's counters as JSON (what the chat page shows).
async fn stats(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(e) = authorise(&s, &headers) {
        return e.into_response();
    }
    let st = s.engine.stats();
    let streaming = st.streaming.map(|ss| {
        json!({"hits": ss.cache.hits, "misses": ss.cache.misses, "hit_ratio": ss.cache.hit_ratio(),
               "bytes_read": ss.io_bytes, "stall_s": ss.stall_s})
    });
    Json(json!({"model": s.name, "generation": st.generation, "scheduler": st.scheduler,
                "streaming": streaming}))
    .into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let c = &s.counters;
    let st = s.engine.stats();
    let g = &st.generation;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let mut rows: Vec<(&str, &str, &str, f64)> = vec![
        ("requests_total", "counter", "Completion requests.", load(&c.requests)),
        ("request_errors_total", "counter", "Requests answered with an error.", load(&c.errors)),
        ("prompt_tokens_total", "counter", "Prompt tokens.", load(&c.prompt_tokens)),
        ("generated_tokens_total", "counter", "Generated tokens.", load(&c.generated_tokens)),
        ("requests_in_flight", "gauge", "Requests being answered.", load(&c.active)),
        (
            "active_sequences",
            "gauge",
            "Generations in the decode batch.",
            st.scheduler.active_sequences as f64,
        ),
        ("waiting_requests", "gauge", "Requests waiting to join.", st.scheduler.waiting as f64),
        (
            "decode_passes_total",
            "counter",
            "Decode passes (each over every sequence in flight).",
            st.scheduler.decode_passes as f64,
        ),
        (
            "decode_batch_tokens_total",
            "counter",
            "Tokens run by decode passes.",
            st.scheduler.decode_tokens as f64,
        ),
        (
            "reused_prompt_tokens_total",
            "counter",
            "Prompt tokens taken from kept sessions.",
            st.scheduler.reused_tokens as f64,
        ),
        (
            "decode_tokens_per_second",
            "gauge",
            "Decode speed of the last generation.",
            g.decode_tok_s,
        ),
        (
            "prefill_tokens_per_second",
            "gauge",
            "Prefill speed of the last generation.",
            g.prefill_tok_s,
        ),
    ];
    if let Some(ss) = &st.streaming {
        rows.extend([
            ("cache_hits_total", "counter", "Slab cache hits.", ss.cache.hits as f64),
            ("cache_misses_total", "counter", "Slab cache misses.", ss.cache.misses as f64),
            ("cache_hit_ratio", "gauge", "Slab cache hit ratio.", ss.cache.hit_ratio()),
            ("read_bytes_total", "counter", "Bytes read from disk.", ss.io_bytes as f64),
            (
                "stall_seconds_total",
                "counter",
                "Compute time spent waiting for experts.",
                ss.stall_s,
            ),
        ]);
    }
    let out: String = rows
        .iter()
        .map(|(name, kind, help, v)| {
            format!("# HELP floe_{name} {help}\n# TYPE floe_{name} {kind}\nfloe_{name} {v}\n")
        })
        .collect();
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// A validated request: the prompt text, the options, and what the answer needs to say.
struct Job {
    prompt: Vec<u32>,
    prompt_tokens: usize,
    options: GenerateOptions,
    stops: Vec<String>,
    stream: bool,
}

fn prepare(s: &AppState, body: &Bytes, chat: bool) -> Result<Job, ApiError> {
    let req: Request = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad("body", format!("malformed JSON request: {e}")))?;
    if let Some(m) = &req.model {
        if m != &s.name {
            return Err(ApiError {
                status: StatusCode::NOT_FOUND,
                kind: "invalid_request_error",
                code: Some("model_not_found"),
                param: Some("model"),
                message: format!("model {m:?} does not exist (this server runs {:?})", s.name),
            });
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad("n", "floe returns one choice per request (n = 1)"));
    }
    let codec = s.engine.tokenizer();
    let prompt = if chat {
        let messages = req
            .messages
            .as_ref()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad("messages", "messages must be a non-empty array"))?;
        let mut turns = Vec::with_capacity(messages.len());
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer") {
                return Err(ApiError::bad("messages", format!("unknown role {:?}", m.role)));
            }
            let role = if m.role == "developer" { "system".to_string() } else { m.role.clone() };
            turns.push((role, m.text()?));
        }
        let pairs: Vec<(&str, &str)> =
            turns.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect();
        codec.render_chat(&pairs).map_err(|e| ApiError::bad("messages", e.to_string()))?
    } else {
        match &req.prompt {
            Some(Value::String(p)) => p.clone(),
            Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                a[0].as_str().unwrap_or_default().to_string()
            }
            _ => return Err(ApiError::bad("prompt", "prompt must be a string")),
        }
    };
    let prompt = codec.encode(&prompt).map_err(|e| ApiError::bad("prompt", e.to_string()))?;
    let prompt_tokens = prompt.len();
    if prompt_tokens == 0 {
        return Err(ApiError::bad("prompt", "the prompt has no tokens"));
    }
    let ctx = s.engine.context();
    let room = ctx.saturating_sub(prompt_tokens);
    let max_tokens = match req.max_tokens {
        Some(n) if n < 1 => {
            return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1"))
        }
        Some(n) => n as usize,
        None => s.default_max_tokens.min(room.max(1)),
    };
    if prompt_tokens + max_tokens > ctx {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: Some("context_length_exceeded"),
            param: Some("messages"),
            message: format!(
                "the prompt ({prompt_tokens} tokens) and max_tokens ({max_tokens}) need more than \
                 the {ctx} positions a request has"
            ),
        });
    }
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::bad("temperature", "temperature must be in [0, 2]"));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad("top_p", "top_p must be in (0, 1]"));
    }
    let sampling = SamplingParams {
        temperature: temperature as f32,
        top_p: top_p as f32,
        seed: req.seed.unwrap_or(0),
        ..Default::default()
    };
    let stops = req.stops()?;
    let options = GenerateOptions { max_tokens, sampling, ..Default::default() };
    Ok(Job { prompt, prompt_tokens, options, stops, stream: req.stream })
}

async fn chat(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    respond(s, headers, body, true).await
}

async fn completions(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    respond(s, headers, body, false).await
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Counts a sequence in flight while it lives.
struct Active(Shared);
impl Drop for Active {
    fn drop(&mut self) {
        self.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn respond(s: Shared, headers: HeaderMap, body: Bytes, chat: bool) -> Response {
    s.counters.requests.fetch_add(1, Ordering::Relaxed);
    let job = match authorise(&s, &headers).and_then(|()| prepare(&s, &body, chat)) {
        Ok(j) => j,
        Err(e) => {
            s.counters.errors.fetch_add(1, Ordering::Relaxed);
            return e.into_response();
        }
    };
    s.counters.prompt_tokens.fetch_add(job.prompt_tokens as u64, Ordering::Relaxed);
    s.counters.active.fetch_add(1, Ordering::Relaxed);
    let active = Active(Arc::clone(&s));
    let id = format!("{}-{:x}", if chat { "chatcmpl" } else { "cmpl" }, rand::random::<u64>());
    let created = now();
    let tokens = s.engine.generate_stream(job.prompt, job.options);
    let mut scan = StopScanner::new(job.stops);
    // The generation's text pieces, ending with its finish reason.
    let pieces = tokens.scan((0usize, false), move |(n, done), item| {
        let out = if *done {
            None
        } else {
            Some(match item {
                Err(e) => Err(e.to_string()),
                Ok(t) => {
                    *n += 1;
                    let (text, hit) = scan.push(&t.text);
                    let finish = if hit {
                        Some("stop")
                    } else {
                        t.finished.as_ref().map(|f| f.reason.as_str())
                    };
                    let text = match finish {
                        Some(_) if !hit => text + &scan.finish(),
                        _ => text,
                    };
                    *done = finish.is_some();
                    Ok((text, finish, *n))
                }
            })
        };
        futures::future::ready(out)
    });
    let model = s.name.clone();
    let prompt_tokens = job.prompt_tokens;
    let usage = move |n: usize| json!({"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n});
    if job.stream {
        let state = Arc::clone(&s);
        let events = pieces
            .map(move |p| {
                let _keep = &active;
                match p {
                    Ok((text, finish, n)) => {
                        if finish.is_some() {
                            state.counters.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        let choice = if chat {
                            json!({"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish})
                        } else {
                            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
                        };
                        let mut chunk = json!({"id": id, "object": if chat { "chat.completion.chunk" } else { "text_completion" },
                                               "created": created, "model": model, "choices": [choice]});
                        if finish.is_some() {
                            chunk["usage"] = usage(n);
                        }
                        Ok::<_, std::convert::Infallible>(Event::default().data(chunk.to_string()))
                    }
                    Err(e) => Ok(Event::default().data(json!({"error": {"message": e, "type": "server_error"}}).to_string())),
                }
            })
            .chain(futures::stream::once(async { Ok(Event::default().data("[DONE]")) }));
        return Sse::new(events).into_response();
    }
    let collected: Vec<_> = pieces.collect().await;
    drop(active);
    let (mut text, mut finish, mut n) = (String::new(), "length", 0);
    for p in collected {
        match p {
            Ok((t, f, k)) => {
                text.push_str(&t);
                n = k;
                if let Some(f) = f {
                    finish = f;
                }
            }
            Err(e) => {
                s.counters.errors.fetch_add(1, Ordering::Relaxed);
                return (StatusCode::INTERNAL_SERVER_ERROR,
                        Json(json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}})))
                    .into_response();
            }
        }
    }
    s.counters.generated_tokens.fetch_add(n as u64, Ordering::Relaxed);
    let choice = if chat {
        json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish})
    } else {
        json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
    };
    Json(json!({"id": id, "object": if chat { "chat.completion" } else { "text_completion" },
                "created": created, "model": model, "choices": [choice], "usage": usage(n)}))
    .into_response()
}
