//! DeepSeek-V3.1 and later V3: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}
//! <｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`; the parser also reads V3-0324's
//! `function<｜tool▁sep｜>NAME\n```json\n{...}\n``` ` form.

use super::{json_args, spans, GrammarText, Parsed, ToolCall, ToolDialect, ToolSpec};

#[derive(Debug)]
pub struct DeepSeekV31;

const BEGIN: &str = "<｜tool▁calls▁begin｜>";
const CALL: &str = "<｜tool▁call▁begin｜>";
const SEP: &str = "<｜tool▁sep｜>";
const CALL_END: &str = "<｜tool▁call▁end｜>";
const END: &str = "<｜tool▁calls▁end｜>";

impl ToolDialect for DeepSeekV31 {
    fn name(&self) -> &'static str {
        "deepseek-v3.1"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("tool▁call▁begin")
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
            let Some((name, args)) = inner.split_once(SEP) else { continue };
            let (name, args) = match name.trim() {
                // V3-0324: the type first, then the name and a fenced JSON block.
                "function" => match args.split_once('\n') {
                    Some((n, a)) => {
                        (n.trim(), a.trim().trim_start_matches("```json").trim_end_matches("```"))
                    }
                    None => continue,
                },
                n => (n, args),
            };
            if let Some(arguments) = json_args(args) {
                calls.push(ToolCall { name: name.to_string(), arguments });
            }
        }
        Parsed::before(text, begin, calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        format!(
            "{} {} {}",
            g.lit(&format!("{CALL}{}{SEP}", tool.name)),
            g.args(&tool.parameters),
            g.lit(CALL_END)
        )
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        (BEGIN, Some(""), END)
    }
}
