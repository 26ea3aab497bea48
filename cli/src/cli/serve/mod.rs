//! `floe serve`: an OpenAI-compatible HTTP server over one [`floe::Engine`]
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`, `/metrics`, `/stats`,
//! and a chat page at `/`), on axum. Requests go to the engine's scheduler, which decodes all
//! of them together (one pass per step, each expert read once for all) and continues a
//! conversation from its kept state. Streamed answers are server-sent events ending in
//! `data: [DONE]`; a client that goes away drops its stream, which ends its generation.

mod anthropic;
mod guard;
mod net;
mod openai;
mod reasoning;
mod respond;
mod stop;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use floe::runtime::SessionOptions;
use floe::{Engine, EngineConfig};
use serde_json::json;

use guard::{Access, Hosts};
use openai::{shown, ApiError};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A model directory made by `floe pack` or `floe synth`, or a GGUF file.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Address to listen on (loopback by default: give 0.0.0.0 to serve the network).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every request but `/` and `/health`.
    #[arg(long)]
    api_key: Option<String>,
    /// Host names the server answers to besides the loopback ones (comma-separated; `*`:
    /// any). Without it, a server on a loopback address refuses requests naming another host
    /// (which stops DNS-rebinding pages) and one on another address serves any host.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    allowed_hosts: Vec<String>,
    /// Web page origins (`https://app.example`; `*`: any) that may call the API from a
    /// browser (CORS). Other pages' requests are refused.
    #[arg(long, value_delimiter = ',', value_name = "ORIGINS")]
    cors_origin: Vec<String>,
    /// Seconds a client has to send a request's headers, and then its body.
    #[arg(long, default_value_t = 30, value_name = "S")]
    timeout: u64,
    /// Connections open at once (more are answered 503).
    #[arg(long, default_value_t = 256, value_name = "N")]
    max_connections: usize,
    /// The model id /v1/models lists and requests may name (default: the model's file name).
    #[arg(long)]
    model_name: Option<String>,
    #[command(flatten)]
    stream: super::StreamingFlags,
    /// Compute threads (default: all cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Positions per request (prompt and answer together; default: the model's context).
    #[arg(long, short = 'c', alias = "ctx-size", value_name = "N")]
    ctx: Option<usize>,
    #[command(flatten)]
    kv: crate::cli::kv_flags::KvFlags,
    /// Most requests decoded together: each step is one forward pass over all of them, so an
    /// expert several chose is read and run once. More requests wait their turn.
    #[arg(long, default_value_t = 8, value_name = "N")]
    parallel: usize,
    /// Finished conversations whose state is kept, so a request continuing one (or sharing its
    /// start) does not run those tokens again (0: none).
    #[arg(long, default_value_t = 4, value_name = "N")]
    keep_sessions: usize,
    /// Answer requests that name any model with this one (as llama-server does; the answer
    /// says which model wrote it). Without it a request naming another model gets a 404.
    #[arg(long)]
    any_model: bool,
    /// A chat template (Jinja) to use instead of the model's own, as llama.cpp's flag of the
    /// same name.
    #[arg(long, value_name = "FILE")]
    chat_template_file: Option<PathBuf>,
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
    access: Access,
    default_max_tokens: usize,
    counters: Counters,
    /// Prompts tokenized at once.
    tokenizing: tokio::sync::Semaphore,
    /// The tokenizer's longest token in bytes (bounds a prompt's tokens from its bytes).
    max_token_bytes: usize,
    body_timeout: Duration,
    /// Requests naming another model are answered too (`--any-model`).
    any_model: bool,
}

type Shared = Arc<AppState>;

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let config = EngineConfig {
        threads: a.threads.unwrap_or(0),
        session: SessionOptions { ctx: a.ctx, kv: a.kv.types() },
        max_sequences: a.parallel.max(1),
        kept_sessions: a.keep_sessions,
        chat_template: match &a.chat_template_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .with_context(|| format!("--chat-template-file {}", f.display()))?,
            ),
            None => None,
        },
        ..a.stream.engine_config(false, 0, "moe")?
    };
    let engine = Arc::new(
        Engine::open(&a.model, config).with_context(|| format!("opening {}", a.model.display()))?,
    );
    let name = a.model_name.clone().unwrap_or_else(|| {
        a.model.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or("floe".into())
    });
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .or_else(|_| format!("[{}]:{}", a.host, a.port).parse())
        .with_context(|| format!("not an address: {}:{}", a.host, a.port))?;
    let any_host = a.allowed_hosts.iter().any(|h| h == "*");
    let hosts = if any_host || a.allowed_hosts.is_empty() && !addr.ip().is_loopback() {
        Hosts::Any
    } else {
        let mut names: Vec<String> = guard::LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        names.extend(a.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()));
        Hosts::Only(names)
    };
    let max_token_bytes = engine.tokenizer().max_token_bytes();
    let usage_keeper = a.stream.usage.is_some().then(|| Arc::clone(&engine));
    let state = Arc::new(AppState {
        engine,
        name,
        access: Access { api_key: a.api_key.clone(), hosts, cors_origins: a.cors_origin.clone() },
        default_max_tokens: a.default_max_tokens.max(1),
        counters: Counters::default(),
        tokenizing: tokio::sync::Semaphore::new(2),
        max_token_bytes,
        body_timeout: Duration::from_secs(a.timeout.max(1)),
        any_model: a.any_model,
    });
    let mut app = Router::new()
        .route("/", get(|| async { axum::response::Html(include_str!("chat.html")) }))
        .route("/stats", get(stats))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/chat/completions", post(respond::chat))
        // The same without `/v1`, as llama-server and vLLM also serve them.
        .route("/chat/completions", post(respond::chat))
        .route("/models", get(models))
        .route("/v1/completions", post(respond::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/metrics", get(metrics))
        .fallback(guard::not_found)
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), guard::guard))
        .with_state(Arc::clone(&state));
    if !a.cors_origin.is_empty() {
        use tower_http::cors::{AllowOrigin, CorsLayer};
        let origins = if a.cors_origin.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            let list: Vec<HeaderValue> = a
                .cors_origin
                .iter()
                .map(|o| HeaderValue::from_str(o).with_context(|| format!("--cors-origin {o:?}")))
                .collect::<anyhow::Result<_>>()?;
            AllowOrigin::list(list)
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    let limits = net::Limits {
        max_connections: a.max_connections,
        header_timeout: Duration::from_secs(a.timeout.max(1)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let saver = usage_keeper.clone();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("floe serve: listening on http://{local} (model {:?})", state.name);
        if let Some(engine) = saver {
            // The usage file stays current while the server runs (it is also written at exit).
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(USAGE_SAVE_INTERVAL).await;
                    let e = Arc::clone(&engine);
                    if let Ok(Err(err)) = tokio::task::spawn_blocking(move || e.save_usage()).await
                    {
                        tracing::warn!("{err}");
                    }
                }
            });
        }
        net::serve(listener, app, limits, shutdown_signal()).await.context("server")
    })?;
    if let Some(engine) = usage_keeper {
        engine.save_usage().context("writing the usage file")?;
    }
    Ok(())
}

/// How often `floe serve` writes the usage file (`--usage`).
const USAGE_SAVE_INTERVAL: Duration = Duration::from_secs(60);

/// Ctrl-C, or SIGTERM where there are signals (how service managers stop a server).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn model_object(s: &AppState) -> serde_json::Value {
    json!({"id": s.name, "object": "model", "created": 0, "owned_by": "floe"})
}

async fn models(State(s): State<Shared>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

async fn model(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    if id == s.name {
        return Json(model_object(&s)).into_response();
    }
    let mut e = ApiError::status(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("model {:?} does not exist (this server runs {:?})", shown(&id), s.name),
    );
    e.code = Some("model_not_found");
    e.into_response()
}

/// The engine's counters as JSON (what the chat page shows).
async fn stats(State(s): State<Shared>) -> Response {
    let st = s.engine.stats();
    let streaming = st.streaming.map(|ss| {
        let c = &ss.cache;
        json!({"hits": c.hits, "demand_hits": c.demand_hits, "misses": c.misses,
               "hit_ratio": c.hit_ratio(), "demand_hit_ratio": c.demand_hit_ratio(),
               "prefetch_issued": c.prefetch_issued, "prefetch_used": c.prefetch_used,
               "prefetch_late": c.prefetch_late, "prefetch_wasted": c.prefetch_wasted,
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
            (
                "cache_demand_hits_total",
                "counter",
                "Hits on experts kept from earlier use (prefetched ones not counted).",
                ss.cache.demand_hits as f64,
            ),
            (
                "prefetch_used_total",
                "counter",
                "Prefetched experts used.",
                ss.cache.prefetch_used as f64,
            ),
            (
                "prefetch_wasted_total",
                "counter",
                "Prefetched experts evicted unused.",
                ss.cache.prefetch_wasted as f64,
            ),
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
