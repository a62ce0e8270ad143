//! Upstream failures of OpenAI-speaking providers, classified for retries and for the client.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use serde_json::Value;

use crate::error::Error;
pub use crate::providers::http::transport_error as transport;
use crate::providers::http::{quote_body, status_error};

/// An error from a non-success upstream status.
pub fn from_status(provider: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    status_error(provider, status, &error_message(body), retry_after(headers))
}

/// The message of an OpenAI-shaped error body, or the start of whatever the body is.
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
    quote_body(body)
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
        .or_else(|| number("retry-after").map(|s| Duration::from_secs_f64(s.max(0.0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
        let e = from_status("p", StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), b"");
        assert_eq!(e.kind, ErrorKind::Upstream);
        assert!(e.kind.is_retryable());
    }
}
