//! Kimi-K2: `<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:IDX
//! <|tool_call_argument_begin|>{...}<|tool_call_end|>...<|tool_calls_section_end|>`.

use super::{json_args, spans, GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct KimiK2;

const BEGIN: &str = "<|tool_calls_section_begin|>";
const CALL: &str = "<|tool_call_begin|>";
const ARGS: &str = "<|tool_call_argument_begin|>";
const CALL_END: &str = "<|tool_call_end|>";
const END: &str = "<|tool_calls_section_end|>";

impl ToolDialect for KimiK2 {
    fn name(&self) -> &'static str {
        "kimi-k2"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("<|tool_calls_section_begin|>")
    }
    fn start(&self) -> &'static str {
        BEGIN
    }
    fn parse(&self, text: &str, _tools: &[ToolSpec]) -> Parsed {
        let Some(begin) = text.find(BEGIN) else {
            return Parsed { content: text.to_string(), calls: Vec::new() };
        };
        let mut calls = Vec::new();
        for (_, inner, _) in spans(&text[begin..], CALL, CALL_END) {
            let Some((id, args)) = inner.split_once(ARGS) else { continue };
            // `functions.NAME:IDX`
            let id = id.trim();
            let name = id.strip_prefix("functions.").unwrap_or(id);
            let name = name.rsplit_once(':').map_or(name, |(n, _)| n);
            if let Some(arguments) = json_args(args) {
                calls.push(ToolCall { name: name.to_string(), arguments });
            }
        }
        Parsed::before(text, begin, calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        format!(
            "{} /[0-9]/ {} {} {}",
            g.lit(&format!("{CALL}functions.{}:", tool.name)),
            g.lit(ARGS),
            g.args(&tool.parameters),
            g.lit(CALL_END)
        )
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        (BEGIN, Some(""), END)
    }
}
