//! Each syntax: a call written the way its family's chat template writes one (the templates in
//! llama.cpp's `models/templates`) is read back; malformed calls stay content.

use serde_json::json;

use super::*;

fn weather() -> Vec<ToolSpec> {
    vec![ToolSpec {
        name: "get_weather".into(),
        parameters: json!({"type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]}),
    }]
}

fn one(d: &dyn ToolDialect, text: &str) -> Parsed {
    d.parse(text, &weather())
}

fn want(content: &str) -> Parsed {
    Parsed {
        content: content.into(),
        calls: vec![ToolCall {
            name: "get_weather".into(),
            arguments: r#"{"city":"Paris","days":3}"#.into(),
        }],
    }
}

#[test]
fn each_syntax_reads_its_calls() {
    let cases: [(&dyn ToolDialect, &str); 9] = [
        (&llama3::Llama3Json, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\", \"days\": 3}}"),
        (&hermes::Hermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n</tool_call>"),
        (&qwen_xml::QwenXml, "Let me look.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"),
        (&glm::Glm45, "Let me look.\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"),
        (&harmony::Harmony, "<|channel|>analysis<|message|>Need weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\":\"Paris\",\"days\":3}<|call|>"),
        (&harmony::Harmony, "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\", \"days\": 3}<|call|>"),
        (&deepseek::DeepSeekV31, "Let me look.<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{\"city\": \"Paris\", \"days\": 3}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"),
        (&kimi::KimiK2, "Let me look.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\": \"Paris\", \"days\": 3}<|tool_call_end|><|tool_calls_section_end|>"),
        (&mistral::MistralJson, "Let me look.[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}]"),
    ];
    for (d, text) in cases {
        let content =
            if matches!(d.name(), "harmony" | "llama3-json") { "" } else { "Let me look." };
        assert_eq!(one(d, text), want(content), "{}", d.name());
    }
    // V3-0324's fenced form.
    let v3 = "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\", \"days\": 3}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>";
    assert_eq!(one(&deepseek::DeepSeekV31, v3), want(""));
    // Two calls, and harmony's final answer as content.
    let two = "<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": \"{\\\"x\\\": 1}\"}\n</tool_call>";
    let p = hermes::Hermes.parse(two, &[]);
    assert_eq!(
        p.calls.iter().map(|c| (c.name.as_str(), c.arguments.as_str())).collect::<Vec<_>>(),
        vec![("a", "{}"), ("b", r#"{"x":1}"#)]
    );
    let fin = "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>";
    assert_eq!(
        harmony::Harmony.parse(fin, &[]),
        Parsed { content: "Hello!".into(), calls: vec![] }
    );
}

#[test]
fn malformed_calls_stay_content() {
    for text in [
        "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": }\n</tool_call>",
        "<tool_call>\n{\"name\": \"f\"",
    ] {
        assert_eq!(hermes::Hermes.parse(text, &[]), Parsed { content: text.into(), calls: vec![] });
    }
    let text = "[TOOL_CALLS][{\"name\": 3}]";
    assert_eq!(mistral::MistralJson.parse(text, &[]).calls, vec![]);
}

#[test]
fn templates_pick_their_syntax() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/templates");
    for (file, name) in [
        ("Qwen-Qwen3-0.6B.jinja", "hermes"),
        ("Qwen3.5-4B.jinja", "qwen-xml"),
        ("openai-gpt-oss-120b.jinja", "harmony"),
        ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek-v3.1"),
        ("GLM-4.6.jinja", "glm-4.5"),
        ("moonshotai-Kimi-K2.jinja", "kimi-k2"),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral"),
        ("meta-llama-Llama-3.3-70B-Instruct.jinja", "llama3-json"),
    ] {
        let t = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        assert_eq!(dialect_for(&t).map(|d| d.name()), Some(name), "{file}");
    }
}
