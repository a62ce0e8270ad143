//! The default behaviour for Google's Gemini API: answers like generativelanguage.googleapis.com
//! would, and refuses what it refuses, in its error shape.
//!
//! Paths are `/v1beta/models/{model}:{method}` (or `/v1/...`): `generateContent`,
//! `streamGenerateContent` (SSE with `?alt=sse`, otherwise one JSON array of the same
//! responses, as the real API does) and `batchEmbedContents`.

mod embeddings;
mod generate;
mod validate;

use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::script::{Answer, JSON};

/// The methods served; on `/v1/` only these mark a path as Gemini's, since OpenAI model ids
/// (`ft:gpt-4o:org:id`) contain colons too.
const METHODS: [&str; 3] = [
    "generateContent",
    "streamGenerateContent",
    "batchEmbedContents",
];

/// Whether a request to `path` is for the Gemini API.
pub(crate) fn handles(path: &str) -> bool {
    path.starts_with("/v1beta/")
        || split_path(path).is_some_and(|(_, method)| METHODS.contains(&method))
}

/// `(model, method)` of `/v1beta/models/{model}:{method}` or `/v1/models/{model}:{method}`.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest.rsplit_once(':')?;
    (!model.is_empty()).then_some((model, method))
}

pub(crate) fn answer(
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
    ids: &AtomicU64,
) -> Answer {
    let (model, operation) = match split_path(path) {
        Some(found) if method == Method::POST && METHODS.contains(&found.1) => found,
        _ => return not_found(method, path),
    };
    let request = match serde_json::from_slice::<Value>(body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "Invalid JSON payload received. Expected a JSON object.",
            )
        }
    };
    let sse = query.is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"));
    let result = match operation {
        "generateContent" => generate::answer(&request, model, generate::Framing::Json, ids),
        "streamGenerateContent" if sse => {
            generate::answer(&request, model, generate::Framing::Sse, ids)
        }
        "streamGenerateContent" => {
            generate::answer(&request, model, generate::Framing::JsonArray, ids)
        }
        _ => embeddings::batch(&request, model),
    };
    result.unwrap_or_else(|message| error(StatusCode::BAD_REQUEST, &message))
}

/// An error in Gemini's shape: `{"error": {"code", "message", "status"}}`, with the gRPC status
/// name Google uses for the HTTP code.
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ if status.is_client_error() => "FAILED_PRECONDITION",
        _ => "INTERNAL",
    };
    let body = json!({"error": {"code": status.as_u16(), "message": message, "status": name}});
    Answer::full(status, JSON, Bytes::from(body.to_string()))
}

fn not_found(method: &Method, path: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "Method {method} {path} is not found for API version v1beta, or is not supported."
        ),
    )
}
