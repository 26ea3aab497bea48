//! `floe serve` against hostile and careless clients: each item of the hardening list has a
//! regression test here (resets, long stop strings, huge prompts, forged special tokens,
//! rebinding hosts and foreign origins, slow clients, too many connections, unknown fields).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http, parse_response, post, request, start, tiny_model};
use serde_json::{json, Value};

fn alive(port: u16) {
    let (st, body) = http(port, "GET", "/health", None, None);
    assert_eq!((st, body.contains("ok")), (200, true), "the server no longer answers");
}

/// Sets SO_LINGER to 0, so that closing the socket resets the connection (RST).
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid open socket and a `linger` value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"].clone()
}

#[test]
fn reset_clients_cut_bodies_and_broken_streams_leave_the_server_up() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    // A body cut off, then a reset: before any key check, before any answer.
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n{{\"pro").unwrap();
        reset_on_close(&s);
        drop(s);
    }
    // A reset in the middle of a streamed answer (the server then writes to a dead socket).
    let body = json!({"prompt": "Once", "max_tokens": 400, "stream": true}).to_string();
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut first = [0u8; 64];
        assert!(s.read(&mut first).unwrap() > 0);
        reset_on_close(&s);
        drop(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    alive(srv.port);
}

#[test]
fn hosts_origins_keys_and_every_rejection_body_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let srv = start(&model, &["--api-key", "sekrit", "--cors-origin", "https://app.example"]);
    let key = [("Authorization", "bearer sekrit")];
    let port = srv.port;
    // DNS rebinding: a page at evil.example resolving to 127.0.0.1 sends Host: evil.example.
    let (st, _, body) =
        request(port, "GET", "/v1/models", &[key[0], ("Host", "evil.example:8080")], None);
    assert_eq!((st, error_of(&body)["code"].as_str()), (403, Some("host_not_allowed")));
    // A cross-site POST from a web page (its Origin is not this server's nor allowed).
    let chat =
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    let evil = [key[0], ("Origin", "https://evil.example")];
    let (st, _, body) = request(port, "POST", "/v1/chat/completions", &evil, Some(&chat));
    assert_eq!((st, error_of(&body)["code"].as_str()), (403, Some("origin_not_allowed")));
    // The allowed origin gets CORS headers, its preflight too; the server's own page is served.
    let app = [key[0], ("Origin", "https://app.example")];
    let (st, head, _) = request(port, "POST", "/v1/chat/completions", &app, Some(&chat));
    assert_eq!(st, 200);
    assert!(head.contains("access-control-allow-origin: https://app.example"), "{head}");
    let pre = [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")];
    let (st, head, _) = request(port, "OPTIONS", "/v1/chat/completions", &pre, None);
    assert!(st < 300 && head.contains("access-control-allow-origin"), "{st} {head}");
    let own = [key[0], ("Origin", "http://localhost")];
    let (st, _, _) = request(port, "POST", "/v1/chat/completions", &own, Some(&chat));
    assert_eq!(st, 200);
    // The key: any case of "Bearer", required on /metrics too, not on /health.
    assert_eq!(http(port, "GET", "/metrics", None, None).0, 401);
    assert_eq!(request(port, "GET", "/metrics", &key, None).0, 200);
    assert_eq!(http(port, "GET", "/health", None, None).0, 200);
    // axum's own rejections carry OpenAI error bodies.
    let (st, _, body) = request(port, "GET", "/v2/nothing", &key, None);
    assert_eq!(st, 404);
    error_of(&body);
    let (st, head, body) = request(port, "GET", "/v1/chat/completions", &key, None);
    assert_eq!(st, 405);
    assert!(head.contains("allow:"), "{head}");
    error_of(&body);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sekrit\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n{{",
        64 << 20
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (st, _, body) = parse_response(&String::from_utf8_lossy(&raw));
    assert_eq!(st, 413);
    error_of(&body);
}

#[test]
fn request_fields_are_checked_and_echoes_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let p = srv.port;
    let bad = |body: Value, param: &str| {
        let (st, v) = post(p, "/v1/chat/completions", body.clone());
        assert_eq!((st, v["error"]["param"].as_str()), (400, Some(param)), "{body} -> {v}");
    };
    let msgs = json!([{"role": "user", "content": "hi"}]);
    bad(json!({"messages": msgs, "frobnicate": 1}), "frobnicate");
    bad(json!({"messages": msgs, "min_p": 0.1}), "min_p");
    bad(
        json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}]}),
        "tools",
    );
    bad(json!({"messages": msgs, "response_format": {"type": "xml"}}), "response_format");
    bad(json!({"messages": msgs, "grammar": "root ::= \"a\""}), "grammar");
    bad(json!({"messages": msgs, "n": 9}), "n");
    bad(json!({"messages": msgs, "stop": ["x".repeat(5000)]}), "stop");
    bad(json!({"messages": msgs, "logit_bias": {"99999999": 5}}), "logit_bias");
    bad(json!({"messages": [{"role": "user", "content": "hi", "weird": 1}]}), "messages[0].weird");
    // What a no-op spells is accepted: nulls, empty tool lists, text format, `user`.
    let ok = json!({"messages": msgs, "max_tokens": 2, "tools": [], "tool_choice": "none",
                    "response_format": {"type": "text"}, "user": "u1", "logprobs": null,
                    "presence_penalty": 0.0, "stream": false});
    assert_eq!(post(p, "/v1/chat/completions", ok).0, 200);
    // A huge model name is not echoed whole.
    let (st, _, body) = request(
        p,
        "POST",
        "/v1/completions",
        &[],
        Some(&json!({"model": "m".repeat(1 << 20), "prompt": "x"}).to_string()),
    );
    assert_eq!(st, 404);
    assert!(body.len() < 1000, "{} bytes", body.len());
}

/// Four stop strings at the cap, each almost matching all along, and a 300-token answer: the
/// scan is linear, so the answer and /health stay quick; longer stop strings are refused.
#[test]
fn long_stop_strings_cost_linear_time() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let stops: Vec<String> = (0..4).map(|i| format!("{}{i}", " ".repeat(4095))).collect();
    let body = json!({"prompt": "Once", "max_tokens": 300, "stop": stops, "temperature": 1});
    let (st, v) = post(srv.port, "/v1/completions", body);
    assert_eq!(st, 200, "{v}");
    let t = Instant::now();
    alive(srv.port);
    assert!(t.elapsed() < Duration::from_secs(2));
    let too_long = json!({"prompt": "Once", "stop": ["x".repeat(480_000)]});
    assert_eq!(post(srv.port, "/v1/completions", too_long).0, 400);
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Eight 1.9 MB prompts at once are refused for their length without each costing the
/// tokenizer's tens of megabytes; a content that spells a special token is text.
#[test]
fn huge_prompts_are_refused_cheaply_and_contents_cannot_forge_turns() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--ctx", "512"]);
    let port = srv.port;
    let before = peak_rss_kb(srv.child.id());
    let huge = json!({"prompt": "word ".repeat(380_000), "max_tokens": 1}).to_string();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let huge = huge.clone();
            std::thread::spawn(move || request(port, "POST", "/v1/completions", &[], Some(&huge)))
        })
        .collect();
    for c in clients {
        let (st, _, body) = c.join().unwrap();
        assert_eq!((st, error_of(&body)["code"].as_str()), (400, Some("context_length_exceeded")));
    }
    let grew_mb = (peak_rss_kb(srv.child.id()) - before) / 1024;
    assert!(grew_mb < 100, "peak memory grew by {grew_mb} MB");
    // `<|endoftext|>` typed in a message is several text tokens, not the one control token.
    let tokens = |content: &str| {
        let (st, v) = post(
            port,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": content}], "max_tokens": 1}),
        );
        assert_eq!(st, 200, "{v}");
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    };
    assert!(tokens("a<|endoftext|>") >= tokens("a") + 3);
}

/// A client that sends its headers or its body a byte now and then is cut off at the deadline;
/// connections beyond the cap are answered 503 while the others are served.
#[test]
fn slow_clients_and_too_many_connections_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = start(&tiny_model(tmp.path()), &["--timeout", "2", "--max-connections", "3"]);
    let port = srv.port;
    let drip = |head_done: bool| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        if head_done {
            write!(
                s,
                "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
            )
            .unwrap();
        }
        let t = Instant::now();
        let mut raw = Vec::new();
        // One byte a second until the server gives up on us.
        for _ in 0..12 {
            if s.write_all(b"x").is_err() {
                break;
            }
            s.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
            let mut buf = [0u8; 4096];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        (t.elapsed(), String::from_utf8_lossy(&raw).to_string())
    };
    let (took, raw) = drip(false);
    assert!(took < Duration::from_secs(6), "slow headers held the connection {took:?}");
    let (took, raw2) = drip(true);
    assert!(took < Duration::from_secs(6), "a slow body held the connection {took:?}");
    assert!(raw2.contains(" 408 "), "{raw2:?} (headers: {raw:?})");
    // Three idle connections fill the cap; the fourth is turned away, then served once they go.
    let idle: Vec<TcpStream> =
        (0..3).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (st, _, body) = request(port, "GET", "/health", &[], None);
    assert_eq!(st, 503);
    error_of(&body);
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    alive(port);
}
