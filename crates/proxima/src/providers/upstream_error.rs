//! Upstream failures of any HTTP provider, classified for retries and for the client.
//!
//! Providers agree on status semantics (429 rate limit, 401/403 credentials, other 4xx a bad
//! request, 5xx and 529 overload) and on a JSON body with a message; what differs is only where
//! the message sits, which [`error_message`] looks for.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
use crate::http_client::{source_chain, HttpError};

/// How much of an unparseable error body is quoted back.
const QUOTE_LIMIT: usize = 300;

/// An error from a non-success upstream status, whichever provider sent it.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    status_error(
        provider,
        status,
        &error_message(body),
        retry_after(headers, body),
    )
}

/// The error for a non-success status: `detail` is the upstream's own message, `retry_after`
/// what it asked for on 429.
pub fn status_error(
    provider: &str,
    status: StatusCode,
    detail: &str,
    retry_after: Option<Duration>,
) -> Error {
    let code = status.as_u16();
    match code {
        // Worth retrying elsewhere or later; the router honours `retry_after`.
        429 => Error::new(
            ErrorKind::UpstreamRateLimited,
            format!("provider `{provider}` is rate limiting (429): {detail}"),
        )
        .with_retry_after(retry_after),
        // The gateway's credentials, not the client's: an upstream failure, not a 401 to pass on.
        401 | 403 => Error::upstream(format!(
            "provider `{provider}` refused the gateway's credentials ({code}): {detail}"
        )),
        408 => Error::new(
            ErrorKind::UpstreamTimeout,
            format!("provider `{provider}` timed out (408): {detail}"),
        ),
        400 | 413 | 422 if is_context_length(detail) => Error::new(
            ErrorKind::ContextTooLong,
            format!("provider `{provider}` says the prompt is too long for the model ({code}): {detail}"),
        ),
        // The request itself is wrong: another target would refuse it too.
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

/// An error from the connection itself. The URL is left out: it is the operator's business
/// (and none of these errors carries it).
pub fn transport(provider: &str, e: HttpError) -> Error {
    let kind = if timed_out(&e) {
        ErrorKind::UpstreamTimeout
    } else {
        ErrorKind::Upstream
    };
    let what = match &e {
        e if e.is_connect() => "cannot connect to",
        HttpError::Body(_) => "broke off the answer from",
        HttpError::Request(_) | HttpError::Connect(_) | HttpError::Exchange(_) => {
            "request failed to"
        }
    };
    Error::new(
        kind,
        format!("{what} provider `{provider}`: {}", source_chain(&e)),
    )
}

/// Whether a timeout caused the failure (the connect timeout, or the OS giving up on a
/// silent peer).
fn timed_out(e: &HttpError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.inner());
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if inner
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
        {
            return true;
        }
        source = inner.source();
    }
    false
}

/// The message of an error body — OpenAI, Anthropic and Gemini all nest it at
/// `error.message`; Gemini adds a status name (`RESOURCE_EXHAUSTED` ...) that says more than the
/// HTTP code, and wraps errors in an array outside SSE — or the start of whatever the body is.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        let error = json.get("error").or_else(|| json.pointer("/0/error"));
        let message = error
            .and_then(|e| e.get("message"))
            .or_else(|| json.get("message"))
            .or(error)
            .and_then(Value::as_str);
        if let Some(message) = message {
            return match error.and_then(|e| e.get("status")).and_then(Value::as_str) {
                Some(status) => format!("{message} [{status}]"),
                None => message.to_owned(),
            };
        }
    }
    quote_body(body)
}

/// The start of a body that is not a recognisable error, for the message.
pub fn quote_body(body: &[u8]) -> String {
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

/// How long the upstream asked to wait: `retry-after-ms` (OpenAI), `retry-after` in seconds,
/// or the `RetryInfo` detail Google puts in 429 bodies (`"retryDelay": "37s"`).
fn retry_after(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    let seconds = |text: &str| {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
    };
    let header = |name: &str| headers.get(name)?.to_str().ok();
    if let Some(ms) = header("retry-after-ms").and_then(seconds) {
        return Some(ms / 1000);
    }
    if let Some(after) = header("retry-after").and_then(seconds) {
        return Some(after);
    }
    let json = serde_json::from_slice::<Value>(body).ok()?;
    json.pointer("/error/details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with("RetryInfo"))
        })
        .find_map(|d| {
            d.get("retryDelay")?
                .as_str()?
                .strip_suffix('s')
                .and_then(seconds)
        })
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

#[cfg(test)]
mod gemini_tests {
    use super::*;

    #[test]
    fn classifies_gemini_errors() {
        let body = br#"{"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure"},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]}}"#;
        let e = from_status("g", StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), body);
        assert_eq!(e.kind, ErrorKind::UpstreamRateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(37)));
        assert!(
            e.message
                .contains("Resource has been exhausted [RESOURCE_EXHAUSTED]"),
            "{}",
            e.message
        );

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", http::HeaderValue::from_static("2"));
        let e = from_status("g", StatusCode::TOO_MANY_REQUESTS, &headers, body);
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));

        let body = br#"{"error": {"code": 400, "message": "Invalid JSON payload received.", "status": "INVALID_ARGUMENT"}}"#;
        let e = from_status("g", StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert_eq!(e.kind, ErrorKind::UpstreamRejected(400));
        assert!(e
            .message
            .contains("Invalid JSON payload received. [INVALID_ARGUMENT]"));

        let body = br#"[{"error": {"code": 403, "message": "API key not valid.", "status": "PERMISSION_DENIED"}}]"#;
        let e = from_status("g", StatusCode::FORBIDDEN, &HeaderMap::new(), body);
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert!(e.message.contains("API key not valid."));

        let e = from_status(
            "g",
            StatusCode::SERVICE_UNAVAILABLE,
            &HeaderMap::new(),
            b"<html>down</html>",
        );
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert!(e.message.contains("<html>down</html>"));
    }
}
