//! GLM-4.5/4.6/4.7: `<tool_call>NAME\n<arg_key>K</arg_key>\n<arg_value>V</arg_value>\n</tool_call>`,
//! values as plain text (JSON for non-strings).

use serde_json::{Map, Value};

use super::{
    param_schema, required_params, spans, typed_value, GrammarText, Parsed, ToolCall, ToolDialect,
    ToolSpec,
};

#[derive(Debug)]
pub struct Glm45;

impl ToolDialect for Glm45 {
    fn name(&self) -> &'static str {
        "glm-4.5"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("<arg_key>")
    }
    fn start(&self) -> &'static str {
        "<tool_call>"
    }
    fn parse(&self, text: &str, tools: &[ToolSpec]) -> Parsed {
        let mut calls = Vec::new();
        let mut first = None;
        for (start, inner, _) in spans(text, "<tool_call>", "</tool_call>") {
            let name_end = inner.find(['\n', '<']).unwrap_or(inner.len());
            let name = inner[..name_end].trim().to_string();
            if name.is_empty() {
                continue;
            }
            let keys = spans(inner, "<arg_key>", "</arg_key>");
            let values = spans(inner, "<arg_value>", "</arg_value>");
            let mut args = Map::new();
            for ((_, k, _), (_, v, _)) in keys.iter().zip(&values) {
                let key = k.trim().to_string();
                let v = typed_value(v, param_schema(tools, &name, &key));
                args.insert(key, v);
            }
            first.get_or_insert(start);
            calls.push(ToolCall { name, arguments: Value::Object(args).to_string() });
        }
        Parsed::before(text, first.unwrap_or(0), calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let mut out = g.lit(&format!("<tool_call>{}\n", tool.name));
        for (k, schema) in required_params(&tool.parameters) {
            out.push_str(&format!(
                " {} {} {}",
                g.lit(&format!("<arg_key>{k}</arg_key>\n<arg_value>")),
                g.xml_value(&schema),
                g.lit("</arg_value>\n")
            ));
        }
        out + " " + &g.lit("</tool_call>")
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("", Some("\n"), "")
    }
}
