//! Who may talk to the server: the `Host` check against DNS rebinding, the `Origin` check
//! against cross-site requests from web pages, the API key, and OpenAI error bodies on every
//! rejection (axum's own included).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::openai::ApiError;
use super::Shared;

/// Which `Host` names are served.
#[derive(Debug, Clone)]
pub enum Hosts {
    Any,
    /// Lower-case names (no port).
    Only(Vec<String>),
}

/// The access rules of a server.
#[derive(Debug, Clone)]
pub struct Access {
    pub api_key: Option<String>,
    pub hosts: Hosts,
    /// Origins (`scheme://host[:port]`) whose pages may call the API; `*` is any.
    pub cors_origins: Vec<String>,
}

/// Names a loopback server answers to by default.
pub const LOOPBACK_NAMES: &[&str] = &["localhost", "127.0.0.1", "[::1]", "::1"];

/// The host name of a `Host` header value or an origin's authority, lower-cased, port removed.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(end) = a.strip_prefix('[').and_then(|r| r.find(']')) {
        return a[..end + 2].to_string();
    }
    match a.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
        _ => a,
    }
}

impl Access {
    fn host_allowed(&self, host: &str) -> bool {
        match &self.hosts {
            Hosts::Any => true,
            Hosts::Only(names) => {
                let h = host_name(host);
                names.contains(&h)
                    || h.ends_with(".localhost") && names.iter().any(|n| n == "localhost")
            }
        }
    }

    /// A request's `Origin` is allowed if it is this server's own (the chat page) or listed.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        if self.cors_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        !authority.is_empty() && authority.eq_ignore_ascii_case(host.trim())
    }

    /// `Authorization: Bearer KEY` (the scheme in any case) or `x-api-key: KEY`, compared in
    /// constant time.
    pub fn authorise(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else { return Ok(()) };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, k)| k.trim().as_bytes())
            // Anthropic's clients send the key as `x-api-key`.
            .or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()));
        let same = given.is_some_and(|g| {
            g.len() == key.len()
                && g.iter().zip(key.as_bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
        });
        if same {
            Ok(())
        } else {
            let mut e = ApiError::status(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "missing or wrong API key (Authorization: Bearer ...)",
            );
            e.code = Some("invalid_api_key");
            Err(e)
        }
    }
}

fn forbidden(message: String, code: &'static str) -> Response {
    let mut e = ApiError::status(StatusCode::FORBIDDEN, "invalid_request_error", message);
    e.code = Some(code);
    e.into_response()
}

/// Checks `Host`, `Origin` and (except for `/` and `/health`) the key, then answers; an error
/// response without a JSON body gets one.
pub async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if !s.access.host_allowed(host) {
        return forbidden(
            format!(
                "host {:?} is not served (floe serve --allowed-hosts adds names)",
                super::openai::shown(host)
            ),
            "host_not_allowed",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !s.access.origin_allowed(origin, host) {
            return forbidden(
                format!(
                    "requests from pages of {:?} are not allowed (floe serve --cors-origin allows an origin)",
                    super::openai::shown(origin)
                ),
                "origin_not_allowed",
            );
        }
    }
    let path = req.uri().path();
    if path != "/" && path != "/health" {
        if let Err(e) = s.access.authorise(headers) {
            return e.into_response();
        }
    }
    as_json_error(next.run(req).await).await
}

/// An error response whose body is not JSON (axum's 404, 405, 413 and extractor rejections)
/// rewritten as an OpenAI error body with the same status.
async fn as_json_error(r: Response) -> Response {
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return r;
    }
    let allow = r.headers().get(header::ALLOW).cloned();
    let body = axum::body::to_bytes(r.into_body(), 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.trim().is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {}", text.trim())
    };
    let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
    let mut out = ApiError::status(status, kind, message).into_response();
    // Keep `Allow` on a 405.
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}

/// Answers any path no route serves.
pub async fn not_found(req: Request<Body>) -> Response {
    ApiError::status(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("no such endpoint: {}", super::openai::shown(req.uri().path())),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_origins() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        let a = Access {
            api_key: Some("k".into()),
            hosts: Hosts::Only(LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect()),
            cors_origins: vec!["https://app.example".into()],
        };
        assert!(a.host_allowed("localhost:8080") && a.host_allowed("127.0.0.1:1"));
        assert!(!a.host_allowed("evil.example:8080") && !a.host_allowed(""));
        assert!(a.origin_allowed("http://localhost:8080", "localhost:8080"));
        assert!(a.origin_allowed("https://app.example", "localhost:8080"));
        assert!(!a.origin_allowed("https://evil.example", "localhost:8080"));
        assert!(!a.origin_allowed("null", "localhost:8080"));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer k".parse().unwrap());
        assert!(a.authorise(&h).is_ok());
        h.insert(header::AUTHORIZATION, "Bearer kk".parse().unwrap());
        assert!(a.authorise(&h).is_err());
    }
}
