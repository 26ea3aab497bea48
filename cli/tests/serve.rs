//! `floe serve` end to end on loopback: health, models, chat and completions streamed and not
//! (equal to `floe run`'s greedy text), concurrent requests, the error bodies, the API key.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{events, floe_run_text, http, post, start, tiny_model};
use serde_json::{json, Value};

#[test]
fn serve_answers_as_floe_run_does_and_refuses_bad_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let srv = start(&model, &[]);
    let port = srv.port;

    let (st, body) = http(port, "GET", "/health", None, None);
    assert_eq!((st, body.contains("ok")), (200, true));
    let (st, body) = http(port, "GET", "/v1/models", None, None);
    assert_eq!(st, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["data"][0]["id"], "tiny");

    // Completions: greedy equals `floe run`, streamed equals not streamed.
    let req = json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 12, "temperature": 0});
    let (st, v) = post(port, "/v1/completions", req.clone());
    assert_eq!(st, 200, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert_eq!(text, floe_run_text(&model, "Once upon", 12, false));
    let n = v["usage"]["completion_tokens"].as_u64().unwrap();
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(n == 12 && finish == "length" || n < 12 && finish == "stop", "{v}");
    let mut sreq = req.clone();
    sreq["stream"] = json!(true);
    let (st, body) = http(port, "POST", "/v1/completions", Some(&sreq.to_string()), None);
    assert_eq!(st, 200);
    let ev = events(&body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let streamed: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, text);

    // Chat through the template: equal to `floe run --chat`.
    let chat = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 10, "temperature": 0});
    let (st, v) = post(port, "/v1/chat/completions", chat.clone());
    assert_eq!(st, 200, "{v}");
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(answer, floe_run_text(&model, "hello", 10, true));
    let mut schat = chat.clone();
    schat["stream"] = json!(true);
    let (_, body) = http(port, "POST", "/v1/chat/completions", Some(&schat.to_string()), None);
    let ev = events(&body);
    let streamed: String = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, answer);

    // Four clients at once each get the single-request answer.
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let req = req.clone();
            std::thread::spawn(move || {
                post(port, "/v1/completions", req).1["choices"][0]["text"].clone()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), json!(text));
    }

    // Errors: status and an OpenAI error body.
    let (st, body) = http(port, "POST", "/v1/chat/completions", Some("{not json"), None);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((st, e["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    let (st, e) = post(port, "/v1/completions", json!({"model": "gpt-9", "prompt": "x"}));
    assert_eq!((st, e["error"]["code"].as_str()), (404, Some("model_not_found")));
    let (st, e) = post(port, "/v1/completions", json!({"prompt": "x", "max_tokens": 100_000_000}));
    assert_eq!((st, e["error"]["code"].as_str()), (400, Some("context_length_exceeded")));
    let (st, e) = post(port, "/v1/completions", json!({"prompt": "x", "temperature": 5}));
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("temperature")));
    let (st, _) = post(port, "/v1/chat/completions", json!({"messages": []}));
    assert_eq!(st, 400);

    let (st, m) = http(port, "GET", "/metrics", None, None);
    assert_eq!(st, 200);
    assert!(m.contains("floe_requests_total") && m.contains("floe_generated_tokens_total"), "{m}");
}

#[test]
fn serve_with_an_api_key_refuses_requests_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let srv = start(&model, &["--api-key", "sekrit"]);
    let (st, _) = http(srv.port, "GET", "/v1/models", None, None);
    assert_eq!(st, 401);
    let (st, _) = http(srv.port, "GET", "/v1/models", None, Some("sekrit"));
    assert_eq!(st, 200);
}

/// A client that goes away mid-stream ends its generation: the server's active sequences drop
/// back to zero long before the requested tokens could have been made.
#[test]
fn a_disconnected_stream_stops_its_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let srv = start(&model, &[]);
    let body = json!({"prompt": "Once", "max_tokens": 30000, "stream": true, "temperature": 1})
        .to_string();
    let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut first = [0u8; 256];
    let n = s.read(&mut first).unwrap();
    assert!(n > 0 && String::from_utf8_lossy(&first[..n]).contains("200"));
    let gauge = |port, name: &str| {
        let (_, m) = http(port, "GET", "/metrics", None, None);
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("floe_{name} ")))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap()
    };
    assert_eq!(gauge(srv.port, "requests_in_flight"), 1.0);
    drop(s);
    let start = std::time::Instant::now();
    while gauge(srv.port, "requests_in_flight") != 0.0 || gauge(srv.port, "active_sequences") != 0.0
    {
        assert!(start.elapsed().as_secs() < 20, "the generation did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `--any-model` answers requests naming another model (llama-server's behaviour), saying
/// which model wrote the answer; without it they get a 404.
#[test]
fn any_model_answers_other_names_with_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let srv = start(&model, &["--any-model"]);
    let (st, v) = post(
        srv.port,
        "/v1/completions",
        json!({"model": "gpt-4o", "prompt": "x", "max_tokens": 2}),
    );
    assert_eq!((st, v["model"].as_str()), (200, Some("tiny")), "{v}");
}
