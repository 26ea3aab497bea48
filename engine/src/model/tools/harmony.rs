//! gpt-oss (harmony): a call is a message on the commentary channel addressed to the function,
//! `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>` (the
//! recipient may also come before the channel); the answer is the `final` channel's message.

use super::{json_args, GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct Harmony;

const CALL_END: &str = "<|call|>";

impl ToolDialect for Harmony {
    fn name(&self) -> &'static str {
        "harmony"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("<|channel|>") && template.contains("to=")
    }
    fn start(&self) -> &'static str {
        " to=functions."
    }
    fn parse(&self, text: &str, _tools: &[ToolSpec]) -> Parsed {
        let mut calls = Vec::new();
        let mut content = String::new();
        // Messages: each header ends at <|message|>, each body at <|end|>, <|call|> or <|return|>.
        let mut rest = text;
        while let Some(m) = rest.find("<|message|>") {
            let header = &rest[..m];
            let body_start = m + "<|message|>".len();
            let body_end = ["<|end|>", CALL_END, "<|return|>"]
                .iter()
                .filter_map(|e| rest[body_start..].find(e).map(|i| (i, e.len())))
                .min()
                .map(|(i, l)| (body_start + i, body_start + i + l));
            let (end, next) = body_end.unwrap_or((rest.len(), rest.len()));
            let body = &rest[body_start..end];
            if let Some(to) = header.find("to=functions.") {
                let name: String = header[to + "to=functions.".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
                    .collect();
                if let Some(arguments) = json_args(body) {
                    calls.push(ToolCall { name, arguments });
                }
            } else if header.contains("final") {
                content.push_str(body);
            }
            rest = &rest[next..];
        }
        if calls.is_empty() && content.is_empty() {
            content = text.to_string();
        }
        Parsed { content, calls }
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let head = format!(
            "<|channel|>commentary to=functions.{} <|constrain|>json<|message|>",
            tool.name
        );
        format!("{} {} {}", g.lit(&head), g.args(&tool.parameters), g.lit(CALL_END))
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("", None, "")
    }
}
