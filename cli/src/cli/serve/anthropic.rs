//! Anthropic's Messages API (`POST /v1/messages`), which coding agents speak: the request is
//! translated into the chat request floe answers (system prompt, text, `tool_use` and
//! `tool_result` blocks, tools with `input_schema`, `tool_choice` auto/any/tool/none), answered
//! by the same path, and written back as content blocks, or as Anthropic's stream of events.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::openai::{shown, ApiError, Request};
use super::respond::{admit, answer_pieces, read_body, Active, Piece};
use super::tools::text as text_of;
use super::Shared;

/// An error in Anthropic's shape.
fn error_response(e: ApiError) -> Response {
    (e.status, Json(error_body(&e))).into_response()
}

/// An error as Anthropic's API shapes it (the body, or a stream's `error` event).
fn error_body(e: &ApiError) -> Value {
    let kind = match e.status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    };
    json!({"type": "error", "error": {"type": kind, "message": e.message}})
}

/// One Anthropic message as chat messages: tool results become `tool` messages (first, as
/// they answer the previous turn), text and `tool_use` blocks one user or assistant message.
fn convert_message(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("messages[{i}]");
    let role = match m.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "assistant")) => r,
        _ => return Err(ApiError::bad(&at, "role must be user or assistant")),
    };
    let keys = m
        .as_object()
        .map(|o| o.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect::<Vec<_>>());
    for k in keys.unwrap_or_default() {
        if k != "role" && k != "content" {
            return Err(ApiError::unsupported(&format!("{at}.{k}"), ""));
        }
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(b)) => b.clone(),
        _ => return Err(ApiError::bad(&at, "content must be a string or blocks")),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bat = format!("{at}.content[{j}]");
        let keys = b
            .as_object()
            .map(|o| o.iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect::<Vec<_>>());
        for k in keys.unwrap_or_default() {
            let known = [
                "type",
                "text",
                "id",
                "name",
                "input",
                "tool_use_id",
                "content",
                "is_error",
                "cache_control",
            ];
            if !known.contains(&k.as_str()) {
                return Err(ApiError::unsupported(&format!("{bat}.{k}"), ""));
            }
        }
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default())
            }
            Some("tool_use") if role == "assistant" => {
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad(&bat, "tool_use needs a name"))?;
                calls.push(json!({"id": b.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                                  "function": {"name": name, "arguments": b.get("input").cloned().unwrap_or(json!({}))}}));
            }
            Some("tool_result") if role == "user" => {
                let content = match b.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(c) => text_of(c, &bat)?,
                };
                let content = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                    format!("Error: {content}")
                } else {
                    content
                };
                out.push(json!({"role": "tool", "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                                "content": content}));
            }
            other => {
                return Err(ApiError::unsupported(
                    &bat,
                    &format!("(block type {:?})", shown(other.unwrap_or("none"))),
                ))
            }
        }
    }
    if !text.is_empty() || !calls.is_empty() || !blocks.iter().any(|b| b["type"] == "tool_result") {
        let mut msg = json!({"role": role, "content": text});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    }
    Ok(())
}

/// The request as a chat completion request.
fn to_chat(fields: &Map<String, Value>) -> Result<Value, ApiError> {
    let mut out = Map::new();
    let mut system = None;
    let mut messages = Vec::new();
    for (k, v) in fields.iter().filter(|(_, v)| !v.is_null()) {
        match k.as_str() {
            "model" | "temperature" | "top_p" | "top_k" | "stream" | "max_tokens" => {
                out.insert(k.clone(), v.clone());
            }
            "system" => system = Some(text_of(v, "system")?),
            "messages" => {
                let list = v
                    .as_array()
                    .ok_or_else(|| ApiError::bad("messages", "messages must be an array"))?;
                for (i, m) in list.iter().enumerate() {
                    convert_message(m, i, &mut messages)?;
                }
            }
            "stop_sequences" => {
                out.insert("stop".into(), v.clone());
            }
            "tools" => {
                let list =
                    v.as_array().ok_or_else(|| ApiError::bad("tools", "tools must be an array"))?;
                let mut tools = Vec::new();
                for (i, t) in list.iter().enumerate() {
                    if t.get("type").is_some_and(|ty| ty != "custom") {
                        return Err(ApiError::unsupported(
                            &format!("tools[{i}].type"),
                            "(server tools)",
                        ));
                    }
                    let mut f = json!({"name": t.get("name").cloned().unwrap_or(Value::Null),
                                       "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"}))});
                    if let Some(d) = t.get("description") {
                        f["description"] = d.clone();
                    }
                    tools.push(json!({"type": "function", "function": f}));
                }
                out.insert("tools".into(), Value::Array(tools));
            }
            "tool_choice" => {
                let choice = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => json!("auto"),
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => {
                        json!({"type": "function", "function": {"name": v.get("name").cloned().unwrap_or(Value::Null)}})
                    }
                    _ => {
                        return Err(ApiError::bad(
                            "tool_choice",
                            "tool_choice.type must be auto, any, tool or none",
                        ))
                    }
                };
                out.insert("tool_choice".into(), choice);
                if v.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                    out.insert("parallel_tool_calls".into(), json!(false));
                }
            }
            "thinking" if v.get("type").and_then(Value::as_str) == Some("disabled") => {}
            "metadata" => {}
            _ => return Err(ApiError::unsupported(k, "")),
        }
    }
    if !out.contains_key("max_tokens") {
        return Err(ApiError::bad("max_tokens", "max_tokens is required"));
    }
    if let Some(s) = system {
        messages.insert(0, json!({"role": "system", "content": s}));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}

fn stop_reason(p: &Piece) -> &'static str {
    match p.finish {
        Some("tool_calls") => "tool_use",
        Some("length") => "max_tokens",
        _ if p.stop.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

fn tool_use(c: &floe::model::tools::ToolCall) -> Value {
    let input: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
    json!({"type": "tool_use", "id": format!("toolu_{:016x}", rand::random::<u64>()), "name": c.name, "input": input})
}

pub async fn messages(State(s): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    match answer(s, headers, body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn answer(s: Shared, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    s.counters.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bytes = read_body(&headers, body, s.body_timeout).await?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad("body", format!("malformed JSON request: {e}")))?;
    let fields =
        v.as_object().ok_or_else(|| ApiError::bad("body", "the request must be a JSON object"))?;
    let chat = to_chat(fields)?;
    let req = Request::parse(chat.to_string().as_bytes(), true)?;
    let job = admit(&s, req, true).await?;
    let prompt_tokens = job.prompt.len();
    s.counters.active.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let active = Active(Arc::clone(&s));
    let id = format!("msg_{:016x}", rand::random::<u64>());
    let model = s.name.clone();
    // Reasoning is set apart and not sent (no thinking blocks).
    let pieces = answer_pieces(
        Arc::clone(&s.engine),
        job.prompt,
        job.options,
        &job.stops,
        job.calls,
        job.reasoning,
    );
    if !job.stream {
        let collected: Vec<Result<Piece, ApiError>> = pieces.collect().await;
        drop(active);
        let mut text = String::new();
        let mut last = None;
        for p in collected {
            let p = p?;
            text.push_str(&p.text);
            last = Some(p);
        }
        let last = last.ok_or_else(|| {
            ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "no answer")
        })?;
        let mut content = Vec::new();
        if !text.is_empty() || last.calls.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        content.extend(last.calls.iter().map(tool_use));
        return Ok(Json(json!({"id": id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason(&last), "stop_sequence": last.stop,
            "usage": {"input_tokens": prompt_tokens - last.cached, "output_tokens": last.tokens,
                      "cache_read_input_tokens": last.cached}}))
        .into_response());
    }
    let start = json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": prompt_tokens, "output_tokens": 0}}});
    let event = |name: &str, data: Value| {
        Ok::<_, std::convert::Infallible>(Event::default().event(name).data(data.to_string()))
    };
    let mut text_open = false;
    let events = futures::stream::iter([event("message_start", start)]).chain(
        pieces
            .map(move |p| {
                let _keep = &active;
                let mut out = Vec::new();
                match p {
                    Ok(p) => {
                        if !p.text.is_empty() {
                            if !text_open {
                                text_open = true;
                                out.push(event("content_block_start", json!({"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}})));
                            }
                            out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                                "delta": {"type": "text_delta", "text": p.text}})));
                        }
                        if p.finish.is_some() {
                            let mut index = 0;
                            if text_open {
                                out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
                                index = 1;
                            }
                            for c in &p.calls {
                                let mut block = tool_use(c);
                                block["input"] = json!({});
                                out.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": block})));
                                out.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "input_json_delta", "partial_json": c.arguments}})));
                                out.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
                                index += 1;
                            }
                            out.push(event("message_delta", json!({"type": "message_delta",
                                "delta": {"stop_reason": stop_reason(&p), "stop_sequence": p.stop},
                                "usage": {"output_tokens": p.tokens}})));
                            out.push(event("message_stop", json!({"type": "message_stop"})));
                        }
                    }
                    Err(e) => out.push(event("error", error_body(&e))),
                }
                futures::stream::iter(out)
            })
            .flatten(),
    );
    Ok(Sse::new(events).into_response())
}
