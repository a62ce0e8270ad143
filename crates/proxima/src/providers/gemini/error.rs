//! Upstream failures of the Gemini API, classified for retries and for the client.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::{Error, ErrorKind};
pub use crate::providers::http::transport_error as transport;
use crate::providers::http::{quote_body, status_error};

/// An error from a non-success upstream status.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    status_error(
        provider,
        status,
        &error_message(body),
        retry_after(headers, body),
    )
}

/// The message of Gemini's `{"error": {"code", "message", "status"}}`, with the status name
/// (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED` ...) since it says more than the HTTP code; or the
/// start of whatever the body is.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        // Without `alt=sse` errors come wrapped in an array, like the responses would.
        let error = json
            .get("error")
            .or_else(|| json.pointer("/0/error"))
            .unwrap_or(&Value::Null);
        if let Some(message) = error.get("message").and_then(Value::as_str) {
            return match error.get("status").and_then(Value::as_str) {
                Some(status) => format!("{message} [{status}]"),
                None => message.to_owned(),
            };
        }
    }
    quote_body(body)
}

/// The prompt itself was refused by Gemini's safety filters: the client's content, so 400.
pub fn prompt_blocked(provider: &str, reason: &str) -> Error {
    Error::new(
        ErrorKind::UpstreamRejected(400),
        format!("provider `{provider}` blocked the prompt ({reason}); change the prompt or the safety settings"),
    )
}

/// `retry-after` in seconds, else the `RetryInfo` detail Google puts in 429 bodies
/// (`{"@type": ".../google.rpc.RetryInfo", "retryDelay": "37s"}`).
fn retry_after(headers: &HeaderMap, body: &[u8]) -> Option<Duration> {
    let seconds = |text: &str| {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite())
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
    };
    if let Some(after) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(seconds)
    {
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
