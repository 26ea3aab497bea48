//! What the serve tests share: a tiny model, a server on a free port, raw HTTP/1.1 requests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tiny_model(dir: &std::path::Path) -> std::path::PathBuf {
    let out = dir.join("tiny");
    let shape = floe::formats::synth::SynthShape::preset("tiny").unwrap();
    floe::formats::synth::synth(&shape, &out, floe::kernels::DType::Q8_0, 3, &mut |_, _| {})
        .unwrap();
    out
}

pub fn start(model: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["serve", "--port", "0", "--threads", "1", "--model-name", "tiny", "--model"])
        .arg(model)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            break rest.split(' ').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, port }
}

/// One HTTP/1.1 request; the status and the body (chunked bodies are de-chunked).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> (u16, String) {
    let auth = auth.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> =
        auth.as_deref().map(|a| vec![("Authorization", a)]).unwrap_or_default();
    let (status, _, body) = request(port, method, path, &headers, body);
    (status, body)
}

/// One HTTP/1.1 request with extra headers (a `Host` among them replaces `localhost`); the
/// status, the head (lower-cased) and the de-chunked body.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.unwrap_or("");
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    // A server that answers before reading the request (a 503 over the connection cap) may
    // close the connection while this writes, then reset it after its answer: keep what
    // arrived either way.
    let _ = write!(
        s,
        "{head}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    parse_response(&String::from_utf8_lossy(&raw))
}

/// Status, head (lower-cased) and de-chunked body of a whole HTTP/1.1 response.
pub fn parse_response(raw: &str) -> (u16, String, String) {
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n + 2 {
                break;
            }
            out.push_str(&tail[..n]);
            r = &tail[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    (status, head, body)
}

pub fn post(port: u16, path: &str, body: Value) -> (u16, Value) {
    let (st, b) = http(port, "POST", path, Some(&body.to_string()), None);
    (st, serde_json::from_str(&b).unwrap_or(Value::Null))
}

/// The `data:` payloads of an event stream.
pub fn events(body: &str) -> Vec<String> {
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(str::to_string).collect()
}

pub fn floe_run_text(model: &std::path::Path, prompt: &str, n: usize, chat: bool) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe"));
    cmd.args([
        "run",
        "--threads",
        "1",
        "--temperature",
        "0",
        "--json",
        "-n",
        &n.to_string(),
        "-p",
        prompt,
        "--model",
    ])
    .arg(model);
    if chat {
        cmd.arg("--chat");
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["text"].as_str().unwrap().to_string()
}
