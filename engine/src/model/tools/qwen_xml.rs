//! Qwen3-Coder and Qwen3.5: `<tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n
//! </function>\n</tool_call>`, values as plain text (JSON for non-strings).

use serde_json::{Map, Value};

use super::{
    param_schema, required_params, spans, typed_value, GrammarText, Parsed, ToolCall, ToolDialect,
    ToolSpec,
};

#[derive(Debug)]
pub struct QwenXml;

impl ToolDialect for QwenXml {
    fn name(&self) -> &'static str {
        "qwen-xml"
    }
    fn detect(&self, template: &str) -> bool {
        template.contains("<tool_call>") && template.contains("<function=")
    }
    fn start(&self) -> &'static str {
        "<tool_call>"
    }
    fn parse(&self, text: &str, tools: &[ToolSpec]) -> Parsed {
        let mut calls = Vec::new();
        let mut first = None;
        for (start, inner, _) in spans(text, "<tool_call>", "</tool_call>") {
            let Some(f) = inner.find("<function=") else { continue };
            let rest = &inner[f + "<function=".len()..];
            let Some(gt) = rest.find('>') else { continue };
            let name = rest[..gt].trim().to_string();
            let mut args = Map::new();
            for (_, p, _) in spans(&rest[gt..], "<parameter=", "</parameter>") {
                let Some(gt) = p.find('>') else { continue };
                let key = p[..gt].trim().to_string();
                let mut value = &p[gt + 1..];
                value = value.strip_prefix('\n').unwrap_or(value);
                value = value.strip_suffix('\n').unwrap_or(value);
                let v = typed_value(value, param_schema(tools, &name, &key));
                args.insert(key, v);
            }
            first.get_or_insert(start);
            calls.push(ToolCall { name, arguments: Value::Object(args).to_string() });
        }
        Parsed::before(text, first.unwrap_or(0), calls)
    }
    fn call(&self, tool: &ToolSpec, g: &GrammarText) -> String {
        let mut out = g.lit(&format!("<tool_call>\n<function={}>\n", tool.name));
        for (k, schema) in required_params(&tool.parameters) {
            out.push_str(&format!(
                " {} {} {}",
                g.lit(&format!("<parameter={k}>\n")),
                g.xml_value(&schema),
                g.lit("\n</parameter>\n")
            ));
        }
        out + " " + &g.lit("</function>\n</tool_call>")
    }
    fn frame(&self) -> (&'static str, Option<&'static str>, &'static str) {
        ("", Some("\n"), "")
    }
}
