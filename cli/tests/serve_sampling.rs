//! `floe serve`'s sampling parameters and answer shapes: log-probabilities (consistent with
//! the chosen tokens), seeds, logit bias, penalties, the usage chunk, cached tokens.

mod common;

use common::{events, http, post, start, tiny_model};
use serde_json::{json, Value};

fn chunks(port: u16, path: &str, body: Value) -> Vec<Value> {
    let (st, raw) = http(port, "POST", path, Some(&body.to_string()), None);
    assert_eq!(st, 200, "{raw}");
    let ev = events(&raw);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[test]
fn logprobs_seeds_bias_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let p = srv.port;
    let msgs = json!([{"role": "user", "content": "Tell me a story"}]);

    // Greedy with logprobs: one entry per token, the chosen token first among its top 3, its
    // logprob equal to that top entry's, all probabilities at most 1 and summing below 1.
    let greedy = json!({"messages": msgs, "max_tokens": 12, "temperature": 0, "logprobs": true,
                        "top_logprobs": 3});
    let (st, v) = post(p, "/v1/chat/completions", greedy.clone());
    assert_eq!(st, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap().clone();
    assert_eq!(content.len() as u64, v["usage"]["completion_tokens"].as_u64().unwrap());
    for e in &content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        assert_eq!(top[0]["token"], e["token"], "{e}");
        assert_eq!(top[0]["logprob"], e["logprob"]);
        let lp: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(lp.windows(2).all(|w| w[0] >= w[1]) && lp[0] <= 0.0, "{lp:?}");
        assert!(lp.iter().map(|l| l.exp()).sum::<f64>() <= 1.0 + 1e-5);
    }
    let text: String = content.iter().map(|e| e["token"].as_str().unwrap()).collect();
    assert_eq!(text, v["choices"][0]["message"]["content"].as_str().unwrap());
    // Streamed: the same entries, chunk by chunk; include_usage's last chunk has no choices.
    let mut s = greedy.clone();
    s["stream"] = json!(true);
    s["stream_options"] = json!({"include_usage": true});
    let c = chunks(p, "/v1/chat/completions", s);
    let last = c.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], v["usage"]["completion_tokens"]);
    assert!(c[..c.len() - 1].iter().all(|k| k["usage"].is_null()));
    let streamed: Vec<Value> = c[..c.len() - 1]
        .iter()
        .flat_map(|k| {
            k["choices"][0]["logprobs"]["content"].as_array().cloned().unwrap_or_default()
        })
        .collect();
    assert_eq!(streamed, content);

    // Completions' logprobs shape.
    let (st, v) = post(
        p,
        "/v1/completions",
        json!({"prompt": "Once upon", "max_tokens": 5, "temperature": 0, "logprobs": 2}),
    );
    assert_eq!(st, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5);
    // Keyed by token text, as OpenAI's are: two ids that spell the same text share a key.
    let top = lp["top_logprobs"][0].as_object().unwrap();
    assert!((1..=2).contains(&top.len()), "{lp}");
    assert_eq!(
        top.values().map(|x| x.as_f64().unwrap()).fold(f64::MIN, f64::max),
        lp["token_logprobs"][0].as_f64().unwrap()
    );

    // Seeds: unseeded requests at temperature 1 differ, seeded ones agree.
    let draw = |seed: Option<u64>| {
        let mut b = json!({"prompt": "Once upon", "max_tokens": 24, "temperature": 1});
        if let Some(s) = seed {
            b["seed"] = json!(s);
        }
        post(p, "/v1/completions", b).1["choices"][0]["text"].as_str().unwrap().to_string()
    };
    assert_ne!(draw(None), draw(None), "two unseeded answers were equal");
    assert_eq!(draw(Some(9)), draw(Some(9)));

    // Logit bias: banning the greedy first token changes it; forcing a token repeats it.
    let first = content[0]["token"].as_str().unwrap().to_string();
    let ids = |body: Value| -> Vec<String> {
        let (st, v) = post(p, "/v1/chat/completions", body);
        assert_eq!(st, 200, "{v}");
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["token"].as_str().unwrap().to_string())
            .collect()
    };
    let forced = json!({"messages": msgs, "max_tokens": 4, "temperature": 0, "logprobs": true,
                        "logit_bias": {"97": 100}});
    assert_eq!(ids(forced), vec!["a"; 4], "token 97 is the byte 'a'");
    let banned_first = {
        let mut b = greedy.clone();
        // Find the first token's id through the bias: ban every byte token spelling it.
        let bytes = first.as_bytes();
        if bytes.len() == 1 {
            b["logit_bias"] = json!({ bytes[0].to_string(): -100 });
            Some(b)
        } else {
            None
        }
    };
    if let Some(b) = banned_first {
        assert_ne!(ids(b)[0], first);
    }
    // Penalties are accepted within OpenAI's range and refused beyond.
    let pen = json!({"messages": msgs, "max_tokens": 4, "presence_penalty": 1.5, "frequency_penalty": -0.5});
    assert_eq!(post(p, "/v1/chat/completions", pen).0, 200);
    assert_eq!(
        post(p, "/v1/chat/completions", json!({"messages": msgs, "presence_penalty": 3})).0,
        400
    );

    // n choices: choice i is the single answer drawn with seed + i; streamed, each index ends
    // and the usage counts them all.
    let (st, v) = post(
        p,
        "/v1/completions",
        json!({"prompt": "Once upon", "max_tokens": 10, "temperature": 1, "seed": 20, "n": 3}),
    );
    assert_eq!(st, 200, "{v}");
    let texts: Vec<String> = (0..3)
        .map(|i| {
            assert_eq!(v["choices"][i]["index"], json!(i));
            v["choices"][i]["text"].as_str().unwrap().to_string()
        })
        .collect();
    for (i, t) in texts.iter().enumerate() {
        let (_, one) = post(
            p,
            "/v1/completions",
            json!({"prompt": "Once upon", "max_tokens": 10, "temperature": 1, "seed": 20 + i}),
        );
        assert_eq!(one["choices"][0]["text"].as_str().unwrap(), t, "choice {i}");
    }
    let total: u64 =
        (0..3).map(|_| 0).sum::<u64>() + v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(total >= 3, "{v}");
    let c = chunks(
        p,
        "/v1/chat/completions",
        json!({"messages": msgs, "max_tokens": 5, "n": 2,
        "stream": true, "stream_options": {"include_usage": true}}),
    );
    for i in 0..2 {
        let ends = c
            .iter()
            .filter(|k| {
                k["choices"][0]["index"] == json!(i) && !k["choices"][0]["finish_reason"].is_null()
            })
            .count();
        assert_eq!(ends, 1, "choice {i} ends once");
    }
    let total = c.last().unwrap()["usage"]["completion_tokens"].as_u64().unwrap();
    assert!((2..=10).contains(&total), "{total}");

    // The model by id; cached tokens when a conversation continues.
    assert_eq!(http(p, "GET", "/v1/models/tiny", None, None).0, 200);
    assert_eq!(http(p, "GET", "/v1/models/other", None, None).0, 404);
    let (_, v) = post(
        p,
        "/v1/chat/completions",
        json!({"messages": msgs, "max_tokens": 4, "temperature": 0}),
    );
    assert!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 0, "{v}");
}

/// gpt-oss's analysis channel comes back as `reasoning_content`, its final channel as the
/// content, streamed and not (the harmony structure forced by a grammar on the random model).
#[test]
fn harmony_reasoning_is_set_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let tpl = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/templates/openai-gpt-oss-120b.jinja"
    );
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "2048", "--chat-template-file", tpl]);
    let grammar = "%llguidance {}\nstart: \"<|channel|>analysis<|message|>\" /[a-z]{3,8}/ \"<|end|><|start|>assistant<|channel|>final<|message|>\" /[A-Z]{3,8}/ \"<|return|>\"";
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200,
                      "temperature": 1, "seed": 3, "grammar": grammar});
    let (st, v) = post(srv.port, "/v1/chat/completions", body.clone());
    assert_eq!(st, 200, "{v}");
    let m = &v["choices"][0]["message"];
    let (reasoning, content) =
        (m["reasoning_content"].as_str().unwrap(), m["content"].as_str().unwrap());
    assert!(
        reasoning.chars().all(|c| c.is_ascii_lowercase()) && (3..=8).contains(&reasoning.len()),
        "{m}"
    );
    assert!(
        content.chars().all(|c| c.is_ascii_uppercase()) && (3..=8).contains(&content.len()),
        "{m}"
    );
    let mut sbody = body;
    sbody["stream"] = json!(true);
    let c = chunks(srv.port, "/v1/chat/completions", sbody);
    let field = |f: &str| -> String {
        c.iter().filter_map(|k| k["choices"][0]["delta"][f].as_str()).collect()
    };
    assert_eq!(
        (field("reasoning_content"), field("content")),
        (reasoning.to_string(), content.to_string())
    );
}

/// `experts_per_token` (floe's own field): fewer experts change the greedy answer, the
/// server's own count does not, and a count above it is a 400 naming the field.
#[test]
fn a_request_can_run_fewer_experts() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let p = srv.port;
    let ask = |experts: Option<u64>| {
        let mut body = json!({"prompt": "Tell me a story", "max_tokens": 16, "temperature": 0});
        if let Some(k) = experts {
            body["experts_per_token"] = k.into();
        }
        let (st, v) = post(p, "/v1/completions", body);
        (st, v)
    };
    let (st, exact) = ask(None);
    assert_eq!(st, 200, "{exact}");
    // The tiny model routes each token to 4 experts.
    let (st, same) = ask(Some(4));
    assert_eq!(st, 200, "{same}");
    assert_eq!(exact["choices"][0]["text"], same["choices"][0]["text"]);
    let (st, one) = ask(Some(1));
    assert_eq!(st, 200, "{one}");
    assert_ne!(
        exact["choices"][0]["text"], one["choices"][0]["text"],
        "one expert changed nothing"
    );
    let (st, v) = ask(Some(99));
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["error"]["param"], "experts_per_token", "{v}");
    let (st, v) = ask(Some(0));
    assert_eq!(st, 400, "{v}");
}

/// `min_expert_weight` (floe's own field): 0 is the exact answer, a high ratio (about one expert
/// per token) changes the greedy answer, and a ratio outside [0, 1) is a 400 naming the field.
#[test]
fn a_request_can_skip_weak_experts() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let p = srv.port;
    let ask = |ratio: Option<f64>| {
        let mut body = json!({"prompt": "Tell me a story", "max_tokens": 16, "temperature": 0});
        if let Some(r) = ratio {
            body["min_expert_weight"] = r.into();
        }
        post(p, "/v1/completions", body)
    };
    let (st, exact) = ask(None);
    assert_eq!(st, 200, "{exact}");
    let (st, same) = ask(Some(0.0));
    assert_eq!(st, 200, "{same}");
    assert_eq!(exact["choices"][0]["text"], same["choices"][0]["text"]);
    let (st, strict) = ask(Some(0.99));
    assert_eq!(st, 200, "{strict}");
    assert_ne!(
        exact["choices"][0]["text"], strict["choices"][0]["text"],
        "skipping weak experts changed nothing"
    );
    for bad in [1.0, -0.1, 7.0] {
        let (st, v) = ask(Some(bad));
        assert_eq!(st, 400, "{bad}: {v}");
        assert_eq!(v["error"]["param"], "min_expert_weight", "{v}");
    }
}
