//! Upstream failures of any HTTP provider, classified for retries and for the client.
//!
//! Providers agree on status semantics (429 rate limit, 401/403 credentials, other 4xx a bad
//! request, 5xx and 529 overload) and on a JSON body with a message; what differs is only where
//! the message sits, which [`error_message`] looks for.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::{Error, ErrorKind};

/// How much of an unparseable error body is quoted back.
const QUOTE_LIMIT: usize = 300;

/// An error from a non-success upstream status.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let detail = error_message(body);
    let code = status.as_u16();
    match code {
        429 => Error::new(
            ErrorKind::UpstreamRateLimited,
            format!("provider `{provider}` is rate limiting (429): {detail}"),
        )
        .with_retry_after(retry_after(headers)),
        401 | 403 => Error::upstream(format!(
            "provider `{provider}` refused the gateway's credentials ({code}): {detail}"
        )),
        408 => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("provider `{provider}` timed out (408): {detail}"),
        ),
        400 | 413 | 422 if is_context_length(&detail) => Error::new(
            ErrorKind::ContextTooLong,
            format!("provider `{provider}` says the prompt is too long for the model ({code}): {detail}"),
        ),
        400..=499 => Error::new(
            ErrorKind::UpstreamRejected(code),
            format!("provider `{provider}` rejected the request ({code}): {detail}"),
        ),
        _ => Error::upstream(format!("provider `{provider}` failed ({code}): {detail}")),
    }
}

/// Whether an upstream's refusal says the prompt exceeds the context window. Providers word it
/// differently; these are the phrasings of OpenAI, Anthropic, Gemini and vLLM.
fn is_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "prompt is too long",
        "exceeds the maximum number of tokens",
        "input is too long",
        "too many tokens",
    ]
    .iter()
    .any(|phrase| message.contains(phrase))
}

/// An error from the connection itself. The URL is left out: it is the operator's business.
pub fn transport(provider: &str, e: reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::UpstreamTimeout
    } else {
        ErrorKind::Upstream
    };
    let what = if e.is_connect() {
        "cannot connect to"
    } else if e.is_body() || e.is_decode() {
        "broke off the answer from"
    } else {
        "request failed to"
    };
    Error::new(
        kind,
        format!(
            "{what} provider `{provider}`: {}",
            source_chain(&e.without_url())
        ),
    )
}

/// The message of an error body (OpenAI, Anthropic and Gemini all nest it at `error.message`),
/// or the start of whatever the body is.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let message = json
            .pointer("/error/message")
            .or_else(|| json.get("message"))
            .or_else(|| json.get("error"))
            .and_then(Value::as_str);
        if let Some(message) = message {
            return message.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no error message".into();
    }
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .or_else(|| number("retry-after").map(|s| Duration::from_secs_f64(s.max(0.0))))
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_statuses() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", http::HeaderValue::from_static("7"));
        let body = br#"{"error":{"message":"slow down","type":"requests"}}"#;
        let e = from_status("p", StatusCode::TOO_MANY_REQUESTS, &headers, body);
        assert_eq!(e.kind, ErrorKind::UpstreamRateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(e.message.contains("slow down"));
        let e = from_status(
            "p",
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            b"<html>bad</html>",
        );
        assert_eq!(e.kind, ErrorKind::UpstreamRejected(400));
        assert!(e.message.contains("<html>bad</html>"));
        let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens","code":"context_length_exceeded"}}"#;
        let e = from_status("p", StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert_eq!(e.kind, ErrorKind::ContextTooLong);
        let e = from_status("p", StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert!(e.kind.is_retryable());
    }
}
