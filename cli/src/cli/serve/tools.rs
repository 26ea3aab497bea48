//! Tools in the OpenAI API: the `tools` and `tool_choice` fields checked, messages with tool
//! calls and tool results turned into the conversation the chat template renders, and the
//! model's calls (in its family's syntax, see `floe::model::tools`) turned back into
//! `tool_calls`, whole or streamed.

use floe::model::tokenizer::TextCodec;
use floe::model::tools::{Parsed, ToolCall, ToolDialect, ToolSpec};
use serde_json::{json, Map, Value};

use super::openai::{shown, ApiError};

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

/// The tools a request offers and how they may be used.
#[derive(Debug, Clone)]
pub struct Tools {
    /// As given (what the chat template renders).
    pub json: Vec<Value>,
    pub specs: Vec<ToolSpec>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls`: more than one call per answer.
    pub parallel: bool,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// `tools`: a list of `{"type": "function", "function": {"name", "description", "parameters"}}`.
pub fn parse_tools(v: &Value) -> Result<(Vec<Value>, Vec<ToolSpec>), ApiError> {
    let list = v.as_array().ok_or_else(|| ApiError::bad("tools", "tools must be an array"))?;
    let mut json = Vec::with_capacity(list.len());
    let mut specs = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::bad(&at, "only tools of type function are supported"));
        }
        let f = t
            .get("function")
            .and_then(Value::as_object)
            .ok_or_else(|| ApiError::bad(&at, "a tool needs a function"))?;
        for k in f.keys() {
            if !matches!(k.as_str(), "name" | "description" | "parameters" | "strict") {
                return Err(ApiError::unsupported(&format!("{at}.function.{k}"), ""));
            }
        }
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_name(name) {
            return Err(ApiError::bad(
                &at,
                format!("tool name {:?} must be 1-64 letters, digits, _ . -", shown(name)),
            ));
        }
        if specs.iter().any(|s: &ToolSpec| s.name == name) {
            return Err(ApiError::bad(&at, format!("two tools are named {name:?}")));
        }
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(ApiError::bad(&at, "parameters must be a JSON schema object")),
        };
        specs.push(ToolSpec { name: name.to_string(), parameters: parameters.clone() });
        let mut function = f.clone();
        function.insert("parameters".into(), parameters);
        json.push(json!({"type": "function", "function": function}));
    }
    Ok((json, specs))
}

/// `tool_choice`: `none`, `auto`, `required` or `{"type": "function", "function": {"name"}}`.
pub fn parse_choice(v: &Value) -> Result<ToolChoice, ApiError> {
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            _ => Err(ApiError::bad(
                "tool_choice",
                "tool_choice must be none, auto, required or a function",
            )),
        },
        Value::Object(o) => {
            match o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
                Some(n) => Ok(ToolChoice::Named(n.to_string())),
                None => Err(ApiError::bad("tool_choice", "tool_choice.function.name is missing")),
            }
        }
        _ => Err(ApiError::bad("tool_choice", "tool_choice must be a string or an object")),
    }
}

/// An assistant message's `tool_calls`, arguments as objects (what templates expect).
fn calls_for_template(v: &Value, at: &str) -> Result<Value, ApiError> {
    let list = v.as_array().ok_or_else(|| ApiError::bad(at, "tool_calls must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let f =
            c.get("function").ok_or_else(|| ApiError::bad(at, "a tool call needs a function"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad(at, "a tool call needs a name"))?;
        let arguments = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| ApiError::bad(at, "tool call arguments must be a JSON object"))?,
            Some(o) if o.is_object() => o.clone(),
            None | Some(Value::Null) => json!({}),
            Some(_) => return Err(ApiError::bad(at, "tool call arguments must be a JSON object")),
        };
        out.push(json!({"id": c.get("id").cloned().unwrap_or(Value::Null), "type": "function",
                        "function": {"name": name, "arguments": arguments}}));
    }
    Ok(Value::Array(out))
}

/// `messages`: each turned into the conversation a chat template renders (`role`, `content`,
/// an assistant's `tool_calls`, a tool result's `tool_call_id` and `name`).
pub fn messages(v: &Value) -> Result<Vec<Value>, ApiError> {
    let list =
        v.as_array().ok_or_else(|| ApiError::bad("messages", "messages must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let o = m
            .as_object()
            .ok_or_else(|| ApiError::bad("messages", "a message must be an object"))?;
        let mut msg = Map::new();
        msg.insert("content".into(), Value::String(String::new()));
        for (key, v) in o.iter().filter(|(_, v)| !v.is_null()) {
            let at = format!("messages[{i}].{key}");
            match key.as_str() {
                "role" => {
                    let role = match v.as_str() {
                        Some("developer") => "system",
                        Some(r @ ("system" | "user" | "assistant" | "tool")) => r,
                        _ => {
                            return Err(ApiError::bad(
                                "messages",
                                format!("unknown role {}", shown(&v.to_string())),
                            ))
                        }
                    };
                    msg.insert("role".into(), Value::from(role));
                }
                "content" => {
                    msg.insert("content".into(), Value::String(text(v, &at)?));
                }
                "tool_calls" if super::openai::empty(v) => {}
                "tool_calls" => {
                    msg.insert("tool_calls".into(), calls_for_template(v, &at)?);
                }
                "tool_call_id" | "name" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| ApiError::bad(&at, format!("{key} must be a string")))?;
                    msg.insert(key.clone(), Value::from(s));
                }
                "annotations" if super::openai::empty(v) => {}
                "refusal" if v.as_str() == Some("") => {}
                _ => return Err(ApiError::unsupported(&at, "")),
            }
        }
        match msg.get("role").and_then(Value::as_str) {
            None => return Err(ApiError::bad("messages", format!("messages[{i}] has no role"))),
            Some(r) if r != "assistant" && msg.contains_key("tool_calls") => {
                return Err(ApiError::bad(
                    "messages",
                    format!("messages[{i}]: only assistant messages have tool_calls"),
                ))
            }
            _ => {}
        }
        out.push(Value::Object(msg));
    }
    if out.is_empty() {
        return Err(ApiError::bad("messages", "messages must be a non-empty array"));
    }
    Ok(out)
}

/// The text of a message's `content` (or Anthropic's `system`, a tool result's `content`): a
/// string, or the text parts of an array of parts.
pub fn text(v: &Value, at: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str))
                {
                    (Some("text"), Some(t)) => out.push_str(t),
                    _ => return Err(ApiError::unsupported(at, "parts other than text")),
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::bad(at, "content must be a string or text parts")),
    }
}

/// Calls in OpenAI's shape (streamed chunks add `index`).
pub fn calls_json(calls: &[ToolCall], stream: bool) -> Value {
    Value::Array(
        calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut v = json!({"id": format!("call_{:016x}", rand::random::<u64>()), "type": "function",
                                   "function": {"name": c.name, "arguments": c.arguments}});
                if stream {
                    v["index"] = json!(i);
                }
                v
            })
            .collect(),
    )
}

/// A generation read as it grows, for a request with tools: content goes out until the
/// model starts a call; the calls are read from the whole text at the end.
#[derive(Debug, Clone)]
pub struct CallReader {
    dialect: &'static dyn ToolDialect,
    specs: Vec<ToolSpec>,
    ids: Vec<u32>,
    /// Content sent so far.
    sent: String,
    /// Content held back: it could be the start of a call.
    held: String,
    calling: bool,
}

impl CallReader {
    pub fn new(dialect: &'static dyn ToolDialect, specs: Vec<ToolSpec>) -> Self {
        Self {
            dialect,
            specs,
            ids: Vec::new(),
            sent: String::new(),
            held: String::new(),
            calling: false,
        }
    }

    /// Adds a token and its text; returns the content that can go out now.
    pub fn push(&mut self, codec: &TextCodec, id: u32, text: &str) -> String {
        self.ids.push(id);
        if self.calling {
            return String::new();
        }
        let spelled = codec.decode_with_specials(&self.ids).unwrap_or_default();
        let start = self.dialect.start();
        if spelled.contains(start) {
            self.calling = true;
            return String::new();
        }
        self.held.push_str(text);
        // Hold back the longest tail that could still grow into the start of a call.
        let held = &self.held;
        let keep = (1..start.len())
            .rev()
            .find(|&k| {
                k <= held.len()
                    && held.is_char_boundary(held.len() - k)
                    && start.is_char_boundary(k)
                    && held.ends_with(&start[..k])
            })
            .unwrap_or(0);
        let out: String = self.held.drain(..self.held.len() - keep).collect();
        self.sent.push_str(&out);
        out
    }

    /// The calls made, and the content not sent yet (all of it if no call parses).
    pub fn finish(&mut self, codec: &TextCodec) -> (Vec<ToolCall>, String) {
        let spelled = codec.decode_with_specials(&self.ids).unwrap_or_default();
        let Parsed { calls, content } = self.dialect.parse(&spelled, &self.specs);
        if calls.is_empty() {
            let plain = codec.decode(&self.ids).unwrap_or_default();
            let rest = plain.strip_prefix(self.sent.as_str()).unwrap_or("").to_string();
            return (calls, rest);
        }
        let rest = content.strip_prefix(self.sent.as_str()).unwrap_or("").to_string();
        (calls, rest)
    }
}
