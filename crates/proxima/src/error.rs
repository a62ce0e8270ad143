//! The crate's one error type, and its mapping to HTTP statuses and API error bodies.
//!
//! Every failure is an [`Error`] with an [`ErrorKind`] that says who failed and whether another
//! attempt may help; [`Error::into_response`] is the only place that turns one into HTTP.

use std::fmt;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderName, HeaderValue, StatusCode};
use serde_json::json;

use crate::canonical::Api;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    /// Tells the user what went wrong and what to fix. Never contains a secret.
    pub message: String,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// Sent as `retry-after` on 429 and 503.
    pub retry_after: Option<Duration>,
    /// More response headers, e.g. the `x-ratelimit-*` state on a refused request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    // The client's fault.
    InvalidRequest,
    InvalidApiKey,
    ModelNotAllowed,
    ModelNotFound,
    NotFound,
    RequestTooLarge,
    RateLimited,
    BudgetExceeded,
    PiiBlocked,
    GuardrailBlocked,
    /// The upstream refused the request as invalid (a 4xx other than auth or rate limits):
    /// retrying elsewhere will not help, and the client should see the upstream's status.
    UpstreamRejected(u16),
    /// The prompt is longer than the target's context window: the router moves it to a target
    /// with a larger window when there is one.
    ContextTooLong,
    // The upstream's fault; another attempt may succeed.
    UpstreamRateLimited,
    Upstream,
    UpstreamTimeout,
    NoHealthyUpstream,
    // Ours.
    Unavailable,
    Internal,
}

/// Who caused a failure: decides retries, logging level and breaker accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Gateway,
}

impl ErrorKind {
    pub fn origin(self) -> Origin {
        use ErrorKind::*;
        match self {
            InvalidRequest | InvalidApiKey | ModelNotAllowed | ModelNotFound | NotFound
            | RequestTooLarge | RateLimited | BudgetExceeded | PiiBlocked | GuardrailBlocked
            | UpstreamRejected(_) | ContextTooLong => Origin::Client,
            UpstreamRateLimited | Upstream | UpstreamTimeout | NoHealthyUpstream => {
                Origin::Upstream
            }
            Unavailable | Internal => Origin::Gateway,
        }
    }

    /// Whether the same request may succeed on another attempt or another target.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::UpstreamRateLimited | ErrorKind::Upstream | ErrorKind::UpstreamTimeout
        )
    }

    /// Status, SPEC error code, OpenAI error `type`, Anthropic error `type`.
    fn http(self) -> (StatusCode, &'static str, &'static str, &'static str) {
        use ErrorKind::*;
        const BAD: &str = "invalid_request_error";
        match self {
            // Malformed JSON, wrong field types, anything the client must fix.
            InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request", BAD, BAD),
            // Missing, unknown, revoked or expired key.
            InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_api_key",
                BAD,
                "authentication_error",
            ),
            // The key may not use this model.
            ModelNotAllowed => (
                StatusCode::FORBIDDEN,
                "model_not_allowed",
                BAD,
                "permission_error",
            ),
            ModelNotFound => (
                StatusCode::NOT_FOUND,
                "model_not_found",
                BAD,
                "not_found_error",
            ),
            NotFound => (StatusCode::NOT_FOUND, "not_found", BAD, "not_found_error"),
            RequestTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                BAD,
                "request_too_large",
            ),
            // Our own limits, and an upstream's once every attempt was rate limited.
            RateLimited | UpstreamRateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "rate_limit_error",
                "rate_limit_error",
            ),
            BudgetExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "budget_exceeded",
                "insufficient_quota",
                "rate_limit_error",
            ),
            PiiBlocked => (StatusCode::BAD_REQUEST, "pii_blocked", BAD, BAD),
            GuardrailBlocked => (StatusCode::BAD_REQUEST, "guardrail_blocked", BAD, BAD),
            // Keep the upstream's status so the client sees the same class of error it would directly.
            UpstreamRejected(status) => (
                StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                match status {
                    404 => "not_found",
                    413 => "request_too_large",
                    _ => "invalid_request",
                },
                BAD,
                BAD,
            ),
            ContextTooLong => (StatusCode::BAD_REQUEST, "context_length_exceeded", BAD, BAD),
            // Every attempt failed; the message carries the last upstream error.
            Upstream => (
                StatusCode::BAD_GATEWAY,
                "upstream_error",
                "server_error",
                "api_error",
            ),
            NoHealthyUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_healthy_upstream",
                "server_error",
                "overloaded_error",
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "timeout",
                "timeout_error",
            ),
            // Draining for shutdown.
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "server_error",
                "overloaded_error",
            ),
            Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "server_error",
                "api_error",
            ),
        }
    }

    pub fn status(self) -> StatusCode {
        self.http().0
    }

    /// The SPEC error code: also a low-cardinality label for logs and metrics.
    pub fn code(self) -> &'static str {
        self.http().1
    }
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    pub fn invalid_request(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidRequest, message)
    }

    pub fn upstream(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Upstream, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Error {
        self.param = Some(param.into());
        self
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Error {
        self.retry_after = after;
        self
    }

    pub fn with_headers(mut self, headers: Vec<(HeaderName, HeaderValue)>) -> Error {
        self.headers = headers;
        self
    }

    /// The error body in the shape of `api`, as JSON.
    pub fn body(&self, api: Api) -> serde_json::Value {
        let (_, code, openai_type, anthropic_type) = self.kind.http();
        match api {
            Api::Anthropic => json!({
                "type": "error",
                "error": { "type": anthropic_type, "message": self.message },
            }),
            Api::OpenAiChat | Api::Responses | Api::Gemini => json!({
                "error": {
                    "message": self.message,
                    "type": openai_type,
                    "code": code,
                    "param": self.param,
                }
            }),
        }
    }

    /// The HTTP response for this error on a surface speaking `api`.
    pub fn into_response(self, api: Api) -> Response {
        let status = self.kind.status();
        let body = self.body(api).to_string();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up: a client retrying early would just be refused again.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
            .extensions_mut()
            .insert(ErrorCode(self.kind.code()));
        response
    }
}

/// The SPEC error code of an error response, as a response extension: what the ledger records
/// for a request refused before it reached the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)
    }
}

impl std::error::Error for Error {}

/// An error together with the API whose shape it must be rendered in; what handlers return.
pub struct ApiError(pub Error, pub Api);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_response(self.1)
    }
}
