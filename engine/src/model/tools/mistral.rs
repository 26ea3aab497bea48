//! Mistral / Mixtral-8x22B (v3 tokenizer): `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

use serde_json::Value;

use super::{GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct MistralJson;

const START: &str = "[TOOL_CALLS]";

impl ToolDialect for MistralJson {
    fn name(&self) -> &'static str {
        "mistral"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("[TOOL_CALLS][")
    }
    fn start(&self) -> &'static str {
        START
    }
    fn parse(&self, text: &str, _tools: &[ToolSpec]) -> Parsed {
        let Some(at) = text.find(START) else {
            return Parsed { content: text.to_string(), calls: Vec::new() };
        };
        let list: Option<Vec<Value>> = serde_json::from_str(text[at + START.len()..].trim()).ok();
        let calls: Vec<ToolCall> = list
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                let name = c.get("name")?.as_str()?.to_string();
                let args = c.get("arguments")?;
                let arguments = match args {
                    Value::String(s) => super::json_args(s)?,
                    o if o.is_object() => o.to_string(),
                    _ => return None,
                };
                Some(ToolCall { name, arguments })
            })
            .collect();
        Parsed::before(text, at, calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let head = format!("{{\"name\": {}, \"arguments\": ", Value::from(tool.name.as_str()));
        format!("{} {} {}", g.lit(&head), g.args(&tool.parameters), g.lit("}"))
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("[TOOL_CALLS][", Some(", "), "]")
    }
}
