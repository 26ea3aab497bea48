//! What a client's text can reach: every tool-call syntax reading arbitrary generated text
//! (calls it finds always carry a JSON object), and a chat template rendering an arbitrary
//! message (a content never adds a special token: the template's are all there are).
#![no_main]

use std::sync::OnceLock;

use floe::model::tokenizer::TextCodec;
use floe::model::tools::{ToolSpec, DIALECTS};
use libfuzzer_sys::fuzz_target;

fn codec() -> &'static TextCodec {
    static CODEC: OnceLock<TextCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let json = floe::formats::synth::synth_tokenizer_json(1024);
        let tpl = "{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}";
        TextCodec::from_json(&json, &serde_json::json!({ "chat_template": tpl })).expect("codec")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let tools = [ToolSpec {
        name: "f".into(),
        parameters: serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
    }];
    let dialect = DIALECTS[pick as usize % DIALECTS.len()];
    for call in dialect.parse(&text, &tools).calls {
        let v: serde_json::Value = serde_json::from_str(&call.arguments).expect("arguments are JSON");
        assert!(v.is_object(), "{}: {:?}", dialect.name(), call);
    }
    let c = codec();
    let specials = |ids: &[u32]| ids.iter().filter(|&&id| id == 256).count();
    let message = |content: &str| vec![serde_json::json!({"role": "user", "content": content})];
    let with = c.encode_conversation(&message(&text), None).expect("renders");
    let without = c.encode_conversation(&message(""), None).expect("renders");
    assert_eq!(specials(&with), specials(&without), "a content added a special token");
});
