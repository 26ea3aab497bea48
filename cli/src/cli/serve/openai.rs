//! The OpenAI wire format floe serves: requests (every field checked: one floe does not
//! implement is a 400 naming it), error bodies, and the shapes of log-probabilities.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::stop::MAX_STOP_BYTES;
use super::tools::{ToolChoice, Tools};

/// An API error: its HTTP status and OpenAI's `{"error": {...}}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
    pub message: String,
}

impl ApiError {
    pub fn bad(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            param: Some(shown(param)),
            message: message.into(),
        }
    }

    /// A field floe does not implement (or not with that value).
    pub fn unsupported(param: &str, what: &str) -> Self {
        let mut e = Self::bad(param, format!("floe does not support {} {what}", shown(param)));
        e.code = Some("unsupported_parameter");
        e
    }

    /// An error with any status (its body says `type`, as OpenAI's do).
    pub fn status(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self { status, kind, code: None, param: None, message: message.into() }
    }
}

/// A generation that failed after the server admitted it: a request the engine refuses is the
/// client's error (400), anything else floe's (500).
impl From<floe::Error> for ApiError {
    fn from(e: floe::Error) -> Self {
        if e.is_request_error() {
            Self::status(StatusCode::BAD_REQUEST, "invalid_request_error", e.to_string())
        } else {
            Self::status(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind,
                                    "param": self.param, "code": self.code}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A client's string as shown in an error: at most a short prefix of it.
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}... ({} bytes)", &s[..at], s.len()),
        None => s.to_string(),
    }
}

/// A checked request to `/v1/chat/completions` or `/v1/completions`.
#[derive(Debug, Default)]
pub struct Request {
    pub model: Option<String>,
    /// The conversation as the chat template renders it.
    pub messages: Vec<Value>,
    pub prompt: String,
    pub stream: bool,
    pub include_usage: bool,
    pub max_tokens: Option<usize>,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub presence_penalty: f64,
    pub frequency_penalty: f64,
    pub logit_bias: Vec<(u32, f32)>,
    pub stops: Vec<String>,
    pub seed: Option<u64>,
    /// Log-probabilities asked for: how many alternatives per token.
    pub logprobs: Option<usize>,
    /// What the output must match (`response_format`, `grammar`).
    pub grammar: Option<floe::Grammar>,
    /// The tools offered (none, or `tool_choice` none: `None`).
    pub tools: Option<Tools>,
    /// Choices (`n`).
    pub n: usize,
    /// Routed experts per token, below the server's (floe's own field; lossy).
    pub experts_per_token: Option<usize>,
    /// Skip an expert below this fraction of the token's top routing weight (floe's own field;
    /// lossy), in place of the server's `--min-expert-weight`.
    pub min_expert_weight: Option<f32>,
}

/// Most choices one request may ask for.
pub const MAX_CHOICES: usize = 8;

fn num(v: &Value, key: &str, lo: f64, hi: f64) -> Result<f64, ApiError> {
    match v.as_f64() {
        Some(x) if x >= lo && x <= hi => Ok(x),
        _ => Err(ApiError::bad(key, format!("{key} must be a number in [{lo}, {hi}]"))),
    }
}

fn int(v: &Value, key: &str, lo: i64, hi: i64) -> Result<i64, ApiError> {
    match v.as_i64() {
        Some(x) if x >= lo && x <= hi => Ok(x),
        _ => Err(ApiError::bad(key, format!("{key} must be an integer in [{lo}, {hi}]"))),
    }
}

fn boolean(v: &Value, key: &str) -> Result<bool, ApiError> {
    v.as_bool().ok_or_else(|| ApiError::bad(key, format!("{key} must be true or false")))
}

/// Whether a value is its field's "nothing": an empty array or object.
pub fn empty(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty) || v.as_object().is_some_and(Map::is_empty)
}

impl Request {
    /// Parses and checks a request body. A field set to `null` counts as absent.
    pub fn parse(body: &[u8], chat: bool) -> Result<Self, ApiError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad("body", format!("malformed JSON request: {e}")))?;
        let Value::Object(fields) = v else {
            return Err(ApiError::bad("body", "the request must be a JSON object"));
        };
        let mut r = Request {
            temperature: 1.0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            n: 1,
            ..Default::default()
        };
        let mut logprobs_on = false;
        let mut top_logprobs = None;
        let mut tools = None;
        let mut choice = None;
        let mut parallel = true;
        for (key, v) in fields.iter().filter(|(_, v)| !v.is_null()) {
            let k = key.as_str();
            let constrains = matches!(k, "response_format" | "json_schema" | "grammar");
            if constrains && r.grammar.is_some() {
                return Err(ApiError::bad(
                    k,
                    "give one of response_format, json_schema and grammar",
                ));
            }
            match k {
                "model" => {
                    r.model = Some(
                        v.as_str()
                            .ok_or_else(|| ApiError::bad(k, "model must be a string"))?
                            .to_string(),
                    )
                }
                "messages" if chat => r.messages = super::tools::messages(v)?,
                "prompt" if !chat => {
                    r.prompt = match v {
                        Value::String(p) => p.clone(),
                        Value::Array(a) if a.len() == 1 && a[0].is_string() => {
                            a[0].as_str().unwrap_or_default().to_string()
                        }
                        _ => return Err(ApiError::bad(k, "prompt must be a string")),
                    }
                }
                "stream" => r.stream = boolean(v, k)?,
                "stream_options" => {
                    let o = v
                        .as_object()
                        .ok_or_else(|| ApiError::bad(k, "stream_options must be an object"))?;
                    for (sk, sv) in o.iter().filter(|(_, v)| !v.is_null()) {
                        match sk.as_str() {
                            "include_usage" => {
                                r.include_usage = boolean(sv, "stream_options.include_usage")?
                            }
                            other => {
                                return Err(ApiError::unsupported(
                                    &format!("stream_options.{other}"),
                                    "",
                                ))
                            }
                        }
                    }
                }
                "max_tokens" | "max_completion_tokens" => {
                    r.max_tokens = Some(int(v, k, 1, i64::from(u32::MAX))? as usize)
                }
                "temperature" => r.temperature = num(v, k, 0.0, 2.0)?,
                "top_p" => {
                    r.top_p = num(v, k, 0.0, 1.0)?;
                    if r.top_p == 0.0 {
                        return Err(ApiError::bad(k, "top_p must be in (0, 1]"));
                    }
                }
                "top_k" => r.top_k = int(v, k, 0, i64::from(u32::MAX))? as usize,
                "repetition_penalty" | "repeat_penalty" => {
                    r.repetition_penalty = num(v, k, 0.01, 10.0)?
                }
                "presence_penalty" => r.presence_penalty = num(v, k, -2.0, 2.0)?,
                "frequency_penalty" => r.frequency_penalty = num(v, k, -2.0, 2.0)?,
                "logit_bias" => r.logit_bias = logit_bias(v)?,
                "stop" => r.stops = stops(v)?,
                "seed" => {
                    r.seed = Some(
                        v.as_u64()
                            .or_else(|| v.as_i64().map(|x| x as u64))
                            .ok_or_else(|| ApiError::bad(k, "seed must be an integer"))?,
                    )
                }
                "n" => r.n = int(v, k, 1, MAX_CHOICES as i64)? as usize,
                "experts_per_token" => {
                    r.experts_per_token = Some(int(v, k, 1, i64::from(u16::MAX))? as usize)
                }
                "min_expert_weight" => {
                    let x = num(v, k, 0.0, 1.0)?;
                    if x >= 1.0 {
                        return Err(ApiError::bad(k, "give a fraction in [0, 1)"));
                    }
                    r.min_expert_weight = Some(x as f32)
                }
                "best_of" => {
                    if int(v, k, 1, 1).is_err() {
                        return Err(ApiError::unsupported(
                            k,
                            "other than 1 (one choice per request)",
                        ));
                    }
                }
                "logprobs" if chat => logprobs_on = boolean(v, k)?,
                "top_logprobs" if chat => top_logprobs = Some(int(v, k, 0, 20)? as usize),
                "logprobs" => r.logprobs = Some(int(v, k, 0, 5)? as usize),
                "echo" if !chat => {
                    if boolean(v, k)? {
                        return Err(ApiError::unsupported(k, "true"));
                    }
                }
                "suffix" if !chat => {
                    if v.as_str() != Some("") {
                        return Err(ApiError::unsupported(k, "(fill in the middle)"));
                    }
                }
                "tools" if chat => tools = Some(super::tools::parse_tools(v)?),
                "functions" | "function_call" if empty(v) => {}
                "tool_choice" if chat => choice = Some(super::tools::parse_choice(v)?),
                "parallel_tool_calls" if chat => parallel = boolean(v, k)?,
                "response_format" => r.grammar = response_format(v)?,
                // llama.cpp's top-level schema field.
                "json_schema" if v.is_object() || v.is_boolean() => {
                    r.grammar = Some(floe::Grammar::JsonSchema(v.clone()))
                }
                // llama.cpp's field; llguidance reads Lark (llama.cpp's `%llguidance` form).
                "grammar" => {
                    let g =
                        v.as_str().ok_or_else(|| ApiError::bad(k, "grammar must be a string"))?;
                    let lark = g.trim_start().strip_prefix("%llguidance").map(|rest| {
                        rest.trim_start().strip_prefix("{}").unwrap_or(rest).to_string()
                    });
                    match lark {
                        Some(l) => r.grammar = Some(floe::Grammar::Lark(l)),
                        None => {
                            return Err(ApiError::unsupported(
                                k,
                                "in GBNF: give a Lark grammar starting with %llguidance {}",
                            ))
                        }
                    }
                }
                // Tags for stored completions, which floe does not store (nor does OpenAI
                // without `store`).
                "user" | "metadata" => {}
                "store" if v.as_bool() == Some(false) => {}
                _ => {
                    return Err(ApiError::unsupported(
                        k,
                        &format!("(value {})", shown(&v.to_string())),
                    ))
                }
            }
        }
        r.tools = match (tools, choice) {
            (None, Some(ToolChoice::Required | ToolChoice::Named(_))) => {
                return Err(ApiError::bad("tool_choice", "tool_choice needs tools"))
            }
            (Some((json, specs)), choice) if !specs.is_empty() => {
                let choice = choice.unwrap_or(ToolChoice::Auto);
                if let ToolChoice::Named(n) = &choice {
                    if !specs.iter().any(|s| &s.name == n) {
                        return Err(ApiError::bad(
                            "tool_choice",
                            format!("no tool is named {:?}", shown(n)),
                        ));
                    }
                }
                Some(Tools { json, specs, choice, parallel })
            }
            _ => None,
        };
        if chat {
            if r.messages.is_empty() {
                return Err(ApiError::bad("messages", "messages must be a non-empty array"));
            }
            r.logprobs = match (logprobs_on, top_logprobs) {
                (true, top) => Some(top.unwrap_or(0)),
                (false, Some(n)) if n > 0 => {
                    return Err(ApiError::bad("top_logprobs", "top_logprobs needs logprobs: true"))
                }
                _ => None,
            };
        }
        if r.include_usage && !r.stream {
            return Err(ApiError::bad("stream_options", "stream_options needs stream: true"));
        }
        Ok(r)
    }
}

/// `response_format`: `text`, `json_object`, or `json_schema` with its `schema`.
fn response_format(v: &Value) -> Result<Option<floe::Grammar>, ApiError> {
    let k = "response_format";
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        // llama.cpp also reads a `schema` beside `json_object`.
        Some("json_object") => match v.get("schema") {
            None | Some(Value::Null) => Ok(Some(floe::Grammar::JsonObject)),
            Some(s) if s.is_object() || s.is_boolean() => {
                Ok(Some(floe::Grammar::JsonSchema(s.clone())))
            }
            Some(_) => Err(ApiError::bad(k, "response_format.schema must be a JSON schema")),
        },
        Some("json_schema") => {
            let spec = v
                .get("json_schema")
                .ok_or_else(|| ApiError::bad(k, "json_schema needs response_format.json_schema"))?;
            let schema = spec.get("schema").cloned().unwrap_or(json!({}));
            if !schema.is_object() && !schema.is_boolean() {
                return Err(ApiError::bad(
                    k,
                    "response_format.json_schema.schema must be a JSON schema",
                ));
            }
            Ok(Some(floe::Grammar::JsonSchema(schema)))
        }
        _ => Err(ApiError::bad(k, "response_format.type must be text, json_object or json_schema")),
    }
}

/// `stop`: one string or up to four, none empty or longer than [`MAX_STOP_BYTES`].
fn stops(v: &Value) -> Result<Vec<String>, ApiError> {
    let list: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let bad = || {
        ApiError::bad(
            "stop",
            format!("stop takes up to 4 non-empty strings of at most {MAX_STOP_BYTES} bytes"),
        )
    };
    if list.len() > 4 {
        return Err(bad());
    }
    list.into_iter()
        .map(|s| match s.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_STOP_BYTES => Ok(s.to_string()),
            _ => Err(bad()),
        })
        .collect()
}

/// `logit_bias`: token id (as a string key) to a bias in [-100, 100].
fn logit_bias(v: &Value) -> Result<Vec<(u32, f32)>, ApiError> {
    let o =
        v.as_object().ok_or_else(|| ApiError::bad("logit_bias", "logit_bias must be an object"))?;
    o.iter()
        .map(|(id, b)| {
            let id: u32 = id.parse().map_err(|_| {
                ApiError::bad("logit_bias", format!("{:?} is not a token id", shown(id)))
            })?;
            Ok((id, num(b, "logit_bias", -100.0, 100.0)? as f32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_is_the_clients_error_and_a_failure_floes() {
        let refused: ApiError = floe::Error::from(floe::RequestError::EmptyPrompt).into();
        assert_eq!(
            (refused.status, refused.kind),
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        );
        assert_eq!(refused.message, "the prompt has no tokens");
        let failed: ApiError = floe::Error::Engine("the scheduler has stopped").into();
        assert_eq!(
            (failed.status, failed.kind),
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
        );
    }
}
