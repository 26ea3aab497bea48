//! Llama 3.1/3.2/3.3: one call as a bare JSON object, `{"name": ..., "parameters": {...}}`
//! (optionally after `<|python_tag|>`), the whole answer.

use serde_json::Value;

use super::{GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct Llama3Json;

impl ToolDialect for Llama3Json {
    fn name(&self) -> &'static str {
        "llama3-json"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("\"parameters\": dictionary of argument name")
    }
    fn start(&self) -> &'static str {
        "{\"name\""
    }
    fn parse(&self, text: &str, _tools: &[ToolSpec]) -> Parsed {
        let body = text.trim();
        let body = body.strip_prefix("<|python_tag|>").unwrap_or(body).trim();
        let call = serde_json::from_str::<Value>(body).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            let args = v.get("parameters").or_else(|| v.get("arguments"))?;
            let arguments = match args {
                Value::String(s) => super::json_args(s)?,
                o if o.is_object() => o.to_string(),
                _ => return None,
            };
            Some(ToolCall { name, arguments })
        });
        match call {
            Some(c) => Parsed { content: String::new(), calls: vec![c] },
            None => Parsed { content: text.to_string(), calls: Vec::new() },
        }
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let head = format!("{{\"name\": {}, \"parameters\": ", Value::from(tool.name.as_str()));
        format!("{} {} {}", g.lit(&head), g.args(&tool.parameters), g.lit("}"))
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("", None, "")
    }
}
