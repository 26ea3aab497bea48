//! Tool calls in each model family's own syntax: which syntax a chat template teaches (read off
//! the template), how to find the calls in generated text, and a Lark grammar that makes a
//! model write a valid call (for `tool_choice` `required` or a named function), whose
//! arguments follow each tool's JSON schema. One file per syntax; [`DIALECTS`] lists them.

mod deepseek;
mod glm;
mod harmony;
mod hermes;
mod kimi;
mod llama3;
mod mistral;
mod qwen_xml;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::tokenizer::TextCodec;

/// A function the model may call: its name and the JSON schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The function's name.
    pub name: String,
    /// The JSON schema of its arguments (an object).
    pub parameters: Value,
}

/// A call found in generated text: the function and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The function called.
    pub name: String,
    /// Its arguments: a JSON object's text.
    pub arguments: String,
}

/// Generated text split into what is said and what is called.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// The text that is not a call (before the calls).
    pub content: String,
    /// The calls, in order.
    pub calls: Vec<ToolCall>,
}

impl Parsed {
    /// Calls found from byte `start` of `text` on: the content is the text before them; with no
    /// call, all of `text` is content.
    pub(crate) fn before(text: &str, start: usize, calls: Vec<ToolCall>) -> Self {
        let content = if calls.is_empty() { text } else { text[..start].trim_end() };
        Parsed { content: content.to_string(), calls }
    }
}

/// One family's tool-call syntax.
pub trait ToolDialect: Sync + Send + std::fmt::Debug {
    /// Its name (in errors and logs).
    fn name(&self) -> &'static str;
    /// Whether a chat template writes calls this way.
    fn detect(&self, template: &str) -> bool;
    /// The text (special tokens spelled out) that starts the calls in generated text.
    fn start(&self) -> &'static str;
    /// Finds the calls in `text` (special tokens spelled out); text that is not a well-formed
    /// call stays content.
    fn parse(&self, text: &str, tools: &[ToolSpec]) -> Parsed;
    /// A Lark expression for one call of `tool`.
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String;
    /// What goes before the calls, between two calls (`None`: one call only) and after them.
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str);
}

/// Every syntax floe reads, most specific first (several share `<tool_call>`).
pub static DIALECTS: &[&dyn ToolDialect] = &[
    &qwen_xml::QwenXml,
    &glm::Glm45,
    &hermes::Hermes,
    &harmony::Harmony,
    &deepseek::DeepSeekV31,
    &kimi::KimiK2,
    &mistral::MistralJson,
    &llama3::Llama3Json,
];

/// The syntax a chat template teaches, if floe knows it.
pub fn dialect_for(template: &str) -> Option<&'static dyn ToolDialect> {
    DIALECTS.iter().copied().find(|d| d.detect(template))
}

/// Spells grammar pieces for one tokenizer: a marker that is a special token becomes that
/// token (text cannot produce it), anything else a quoted literal.
#[derive(Debug)]
pub struct GrammarText<'c> {
    codec: &'c TextCodec,
}

impl GrammarText<'_> {
    /// A literal: special tokens inside become token references.
    pub fn lit(&self, text: &str) -> String {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match self.codec.find_special(rest) {
                Some((at, len, id)) => {
                    if at > 0 {
                        parts.push(quote(&rest[..at]));
                    }
                    parts.push(format!("<[{id}]>"));
                    rest = &rest[at + len..];
                }
                None => {
                    parts.push(quote(rest));
                    break;
                }
            }
        }
        if parts.is_empty() {
            "\"\"".to_string()
        } else {
            parts.join(" ")
        }
    }

    /// A tool's arguments under its parameters' schema, written compactly; properties the
    /// schema does not name are not written (unless it allows them explicitly).
    pub fn args(&self, parameters: &Value) -> String {
        let mut s = parameters.clone();
        if let Some(o) = s.as_object_mut() {
            o.entry("additionalProperties").or_insert(Value::Bool(false));
        }
        self.json(&s)
    }

    /// A JSON value under `schema`, written compactly.
    pub fn json(&self, schema: &Value) -> String {
        let mut s = if schema.is_object() { schema.clone() } else { serde_json::json!({}) };
        if let Some(o) = s.as_object_mut() {
            o.entry("x-guidance").or_insert(serde_json::json!({"whitespace_flexible": false}));
        }
        format!("%json {s}")
    }

    /// A parameter value written as plain text (XML-style syntaxes): a string parameter is
    /// text without `<` (within its length bounds; one of its values if it lists them), any
    /// other a compact JSON value under its schema.
    pub fn xml_value(&self, schema: &Value) -> String {
        let is_string = schema.get("type").and_then(Value::as_str).is_none_or(|t| t == "string");
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            let words: Vec<String> = values.iter().filter_map(Value::as_str).map(quote).collect();
            if is_string && words.len() == values.len() && !words.is_empty() {
                return format!("({})", words.join(" | "));
            }
        }
        if !is_string {
            return self.json(schema);
        }
        let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0);
        match schema.get("maxLength").and_then(Value::as_u64) {
            Some(max) => format!("/[^<]{{{min},{}}}/", max.max(min)),
            None => format!("/[^<]{{{min},}}/"),
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The parameters a call must give, in the schema's order: the required ones.
pub fn required_params(schema: &Value) -> Vec<(String, Value)> {
    let props = schema.get("properties").and_then(Value::as_object);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(props) = props {
        for (k, v) in props {
            if required.contains(&k.as_str()) {
                out.push((k.clone(), v.clone()));
            }
        }
    }
    out
}

/// The Lark grammar of one call (of `only`, when named), or of several when `many` and the
/// syntax allows it.
pub fn calls_grammar(
    dialect: &dyn ToolDialect,
    codec: &TextCodec,
    tools: &[ToolSpec],
    only: Option<&str>,
    many: bool,
) -> Result<String> {
    let g = GrammarText { codec };
    let chosen: Vec<&ToolSpec> =
        tools.iter().filter(|t| only.is_none_or(|n| t.name == n)).collect();
    if chosen.is_empty() {
        return Err(Error::Invalid(format!("no tool named {:?}", only.unwrap_or(""))));
    }
    let mut rules = String::new();
    let names: Vec<String> = chosen
        .iter()
        .enumerate()
        .map(|(i, t)| {
            rules.push_str(&format!("call_{i}: {}\n", dialect.call(t, &g)));
            format!("call_{i}")
        })
        .collect();
    let (open, sep, close) = dialect.frame();
    let open = if open.is_empty() { String::new() } else { g.lit(open) + " " };
    let close = if close.is_empty() { String::new() } else { " ".to_string() + &g.lit(close) };
    let many = match (sep, many) {
        (Some(sep), true) => {
            format!(" ({} call)*", if sep.is_empty() { String::new() } else { g.lit(sep) })
        }
        _ => String::new(),
    };
    Ok(format!("start: {open}call{many}{close}\ncall: {}\n{rules}", names.join(" | ")))
}

/// Compact JSON text of a value that parses, else `None`.
pub(crate) fn json_args(text: &str) -> Option<String> {
    let v: Value = serde_json::from_str(text.trim()).ok()?;
    v.is_object().then(|| v.to_string())
}

/// Each `open ... close` span of `text` after `from`: (start of open, inner text, end).
pub(crate) fn spans<'t>(text: &'t str, open: &str, close: &str) -> Vec<(usize, &'t str, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(s) = text[at..].find(open).map(|i| at + i) {
        let inner = s + open.len();
        match text[inner..].find(close) {
            Some(e) => {
                out.push((s, &text[inner..inner + e], inner + e + close.len()));
                at = inner + e + close.len();
            }
            None => break,
        }
    }
    out
}

/// A value of an XML-style parameter in the type its schema asks for.
pub(crate) fn typed_value(text: &str, schema: Option<&Value>) -> Value {
    let is_string =
        schema.and_then(|s| s.get("type")).and_then(Value::as_str).is_none_or(|t| t == "string");
    if !is_string {
        if let Ok(v) = serde_json::from_str::<Value>(text.trim()) {
            return v;
        }
    }
    Value::String(text.to_string())
}

/// The schema of `tool`'s parameter `name`.
pub(crate) fn param_schema<'a>(tools: &'a [ToolSpec], tool: &str, name: &str) -> Option<&'a Value> {
    tools.iter().find(|t| t.name == tool)?.parameters.get("properties")?.get(name)
}

#[cfg(test)]
mod tests;
