//! Qwen2.5/Qwen3 and Hermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.

use serde_json::Value;

use super::{json_args, spans, GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct Hermes;

impl ToolDialect for Hermes {
    fn name(&self) -> &'static str {
        "hermes"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("<tool_call>")
    }
    fn start(&self) -> &'static str {
        "<tool_call>"
    }
    fn parse(&self, text: &str, _tools: &[ToolSpec]) -> Parsed {
        let mut calls = Vec::new();
        let mut first = None;
        for (start, inner, _) in spans(text, "<tool_call>", "</tool_call>") {
            let Ok(v) = serde_json::from_str::<Value>(inner.trim()) else { continue };
            let name = v.get("name").and_then(Value::as_str);
            let args = v.get("arguments").map(|a| match a {
                Value::String(s) => json_args(s),
                o if o.is_object() => Some(o.to_string()),
                _ => None,
            });
            if let (Some(name), Some(Some(arguments))) = (name, args) {
                first.get_or_insert(start);
                calls.push(ToolCall { name: name.to_string(), arguments });
            }
        }
        Parsed::before(text, first.unwrap_or(0), calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let head = format!(
            "<tool_call>\n{{\"name\": {}, \"arguments\": ",
            Value::from(tool.name.as_str())
        );
        format!("{} {} {}", g.lit(&head), g.args(&tool.parameters), g.lit("}\n</tool_call>"))
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("", Some("\n"), "")
    }
}
