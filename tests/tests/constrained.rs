//! Constrained decoding on a random model: whatever it would say, the output under a grammar
//! parses and satisfies it (checked here by an independent reading of the output, not by
//! llguidance), ends when the grammar is complete, and a constrained generation decoded beside
//! others gets the tokens it gets alone.

use std::sync::Arc;

#[allow(unused_imports)]
use floe::model::tools::ToolDialect;
use floe::runtime::sampling::SamplingParams;
use floe::{Engine, EngineConfig, ExpertMemory, GenerateOptions, Grammar};
use floe_kernels::DType;
use serde_json::{json, Value};

fn engine() -> (tempfile::TempDir, Arc<Engine>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q8_0, 4, &mut |_, _| {}).unwrap();
    let cfg = EngineConfig { experts: ExpertMemory::Resident, threads: 2, ..Default::default() };
    (dir, Arc::new(Engine::open(&path, cfg).unwrap()))
}

fn generate(
    e: &Engine,
    prompt: &str,
    grammar: Option<Grammar>,
    seed: u64,
) -> (Vec<u32>, String, String) {
    let opts = GenerateOptions {
        max_tokens: 300,
        sampling: SamplingParams { temperature: 1.0, seed, ..Default::default() },
        grammar,
        ..Default::default()
    };
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut reason = String::new();
    for t in e.generate(prompt, opts).unwrap() {
        let t = t.unwrap();
        ids.push(t.id);
        text.push_str(&t.text);
        if let Some(f) = &t.finished {
            reason = f.reason.as_str().to_string();
        }
    }
    (ids, text, reason)
}

fn person_schema() -> Value {
    json!({"type": "object",
           "properties": {"name": {"type": "string", "maxLength": 8},
                          "age": {"type": "integer", "minimum": 0, "maximum": 120},
                          "tags": {"type": "array", "items": {"enum": ["red", "blue"]}, "maxItems": 3}},
           "required": ["name", "age", "tags"], "additionalProperties": false})
}

/// The schema, checked by hand.
fn is_person(v: &Value) -> bool {
    let o = match v.as_object() {
        Some(o) => o,
        None => return false,
    };
    o.len() == 3
        && o["name"].as_str().is_some_and(|s| s.chars().count() <= 8)
        && o["age"].as_i64().is_some_and(|a| (0..=120).contains(&a))
        && o["tags"]
            .as_array()
            .is_some_and(|t| t.len() <= 3 && t.iter().all(|x| x == "red" || x == "blue"))
}

#[test]
fn outputs_under_a_grammar_parse_and_satisfy_it() {
    let (_dir, e) = engine();
    for seed in 0..6 {
        let (_, text, reason) =
            generate(&e, "Who?", Some(Grammar::JsonSchema(person_schema())), seed);
        assert_eq!(reason, "stop", "seed {seed}: {text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(is_person(&v), "seed {seed}: {v}");
        let (_, text, reason) =
            generate(&e, "Code?", Some(Grammar::Regex("[a-c]{3}-[0-9]{2}".into())), seed);
        assert_eq!(reason, "stop");
        let b = text.as_bytes();
        assert!(
            b.len() == 6
                && b[..3].iter().all(|c| (b'a'..=b'c').contains(c))
                && b[3] == b'-'
                && b[4..].iter().all(u8::is_ascii_digit),
            "{text:?}"
        );
        let lark = "start: \"yes\" | \"no\" | \"maybe \" NUM\nNUM: /[0-9]/";
        let (_, text, _) = generate(&e, "Well?", Some(Grammar::Lark(lark.into())), seed);
        assert!(
            text == "yes" || text == "no" || text.len() == 7 && text.starts_with("maybe "),
            "{text:?}"
        );
    }
    // Any JSON object: unconstrained, a random model does not write one.
    let (_, free, _) = generate(&e, "Who?", None, 0);
    assert!(serde_json::from_str::<Value>(&free).is_err(), "{free:?}");
    // A grammar that does not compile is an error before anything runs.
    let bad =
        GenerateOptions { grammar: Some(Grammar::Lark("start: (".into())), ..Default::default() };
    assert!(e.generate("x", bad).is_err());
}

/// Penalties, a logit bias and log-probabilities: what a request asks for beyond plain
/// sampling.
fn with_extras(e: &Engine, prompt: &str, seed: u64) -> Vec<(u32, Option<floe::TokenLogprobs>)> {
    let opts = GenerateOptions {
        max_tokens: 40,
        sampling: SamplingParams {
            temperature: 0.9,
            seed,
            presence_penalty: 0.7,
            frequency_penalty: 0.3,
            logit_bias: vec![(97, 2.0), (98, -5.0)],
            ..Default::default()
        },
        logprobs: Some(3),
        ignore_eos: true,
        ..Default::default()
    };
    e.generate(prompt, opts).unwrap().map(|t| t.map(|t| (t.id, t.logprobs)).unwrap()).collect()
}

#[test]
fn constrained_and_penalised_generations_in_a_batch_get_their_tokens_alone() {
    let (_dir, e) = engine();
    let g = || Some(Grammar::JsonSchema(person_schema()));
    let alone_c = generate(&e, "Who?", g(), 3).0;
    let alone_f = generate(&e, "Free text", None, 4).0;
    let alone_x = with_extras(&e, "Extras", 5);
    assert!(alone_x
        .iter()
        .all(|(id, lp)| lp.as_ref().is_some_and(|l| l.id == *id && l.top.len() == 3)));
    for _ in 0..2 {
        let (e1, e2, e3) = (Arc::clone(&e), Arc::clone(&e), Arc::clone(&e));
        let a = std::thread::spawn(move || generate(&e1, "Who?", g(), 3).0);
        let b = std::thread::spawn(move || generate(&e2, "Free text", None, 4).0);
        let c = std::thread::spawn(move || with_extras(&e3, "Extras", 5));
        assert_eq!(a.join().unwrap(), alone_c);
        assert_eq!(b.join().unwrap(), alone_f);
        assert_eq!(
            c.join().unwrap(),
            alone_x,
            "logprobs and penalties in a batch equal alone, bit for bit"
        );
    }
}

/// Each family's chat template with tools (a full round: the tools offered, an assistant call,
/// the tool's answer), then a call forced by the grammar of that family's syntax: it reads
/// back as calls of offered tools whose arguments have every required field, typed.
#[test]
fn forced_tool_calls_read_back_in_every_family_syntax() {
    use floe::model::tools::{calls_grammar, dialect_for, ToolSpec};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/templates");
    let tools_json = vec![
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]}}}),
        json!({"type": "function", "function": {"name": "add", "description": "Sum",
            "parameters": {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                "b": {"type": "integer", "minimum": 0, "maximum": 99}}, "required": ["a", "b"]}}}),
    ];
    let tools: Vec<ToolSpec> = tools_json
        .iter()
        .map(|t| ToolSpec {
            name: t["function"]["name"].as_str().unwrap().into(),
            parameters: t["function"]["parameters"].clone(),
        })
        .collect();
    let messages = vec![
        json!({"role": "system", "content": "You help."}),
        json!({"role": "user", "content": "Weather in Paris?"}),
        // Mistral's template wants 9-character call ids.
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call00001", "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]}),
        json!({"role": "tool", "tool_call_id": "call00001", "content": "sunny"}),
        json!({"role": "assistant", "content": "It is sunny."}),
        json!({"role": "user", "content": "And 2 + 3?"}),
    ];
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "jinja").then_some(p)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 7, "template fixtures missing from {dir}");
    let dir_m = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir_m.path().join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &path, DType::Q8_0, 4, &mut |_, _| {}).unwrap();
    for file in files {
        let template = std::fs::read_to_string(&file).unwrap();
        let dialect = dialect_for(&template).unwrap();
        let cfg = EngineConfig {
            experts: ExpertMemory::Resident,
            threads: 2,
            chat_template: Some(template),
            ..Default::default()
        };
        let e = Engine::open(&path, cfg).unwrap();
        let codec = e.tokenizer();
        let prompt = codec
            .encode_conversation(&messages, Some(&tools_json))
            .unwrap_or_else(|err| panic!("{file:?}: {err}"));
        let rendered = codec.render_conversation(&messages, Some(&tools_json)).unwrap();
        assert!(rendered.contains("get_weather") && rendered.contains("sunny"), "{file:?}");
        for (only, seed) in [(None, 1), (Some("add"), 2), (None, 3)] {
            let lark = calls_grammar(dialect, codec, &tools, only, only.is_none()).unwrap();
            let opts = GenerateOptions {
                max_tokens: 400,
                sampling: SamplingParams { temperature: 1.0, seed, ..Default::default() },
                grammar: Some(Grammar::Lark(lark.clone())),
                ..Default::default()
            };
            let ids: Vec<u32> = e
                .generate_ids(prompt.clone(), opts)
                .unwrap_or_else(|err| panic!("{file:?}: {err}\n{lark}"))
                .map(|t| t.unwrap().id)
                .collect();
            let text = codec.decode_with_specials(&ids).unwrap();
            let parsed = dialect.parse(&text, &tools);
            assert!(!parsed.calls.is_empty(), "{file:?} {}: no call in {text:?}", dialect.name());
            for c in &parsed.calls {
                assert!(only.is_none_or(|n| n == c.name), "{file:?}: {}", c.name);
                let args: Value = serde_json::from_str(&c.arguments).unwrap();
                let ok = match c.name.as_str() {
                    "get_weather" => {
                        args["city"].as_str().is_some_and(|s| s.chars().count() <= 12)
                            && args["days"].as_i64().is_some_and(|d| (1..=7).contains(&d))
                    }
                    "add" => ["a", "b"]
                        .iter()
                        .all(|k| args[k].as_i64().is_some_and(|v| (0..=99).contains(&v))),
                    _ => false,
                };
                assert!(ok, "{file:?} {}: {c:?} from {text:?}", dialect.name());
            }
        }
    }
}
