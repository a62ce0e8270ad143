//! The default behaviour: answers like api.openai.com (and Azure OpenAI deployments) would.

mod chat;
mod embeddings;

use std::sync::atomic::AtomicU64;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::script::{Answer, JSON};

/// Models listed by `GET /v1/models`.
const MODELS: [&str; 3] = ["mock-gpt", "mock-gpt-mini", "mock-embedding"];

/// Routes `/v1/...` and Azure's `/openai/deployments/{deployment}/...` to the endpoints.
pub(crate) fn answer(method: &Method, path: &str, body: &[u8], ids: &AtomicU64) -> Answer {
    let (endpoint, deployment) = if let Some(rest) = path.strip_prefix("/v1/") {
        (rest, None)
    } else if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        match rest.split_once('/') {
            Some((deployment, endpoint)) if !deployment.is_empty() => (endpoint, Some(deployment)),
            _ => return unknown_url(method, path),
        }
    } else {
        return unknown_url(method, path);
    };

    match (method, endpoint, deployment) {
        (&Method::POST, "chat/completions", _) => {
            with_json_body(body, deployment, |request, model| {
                chat::complete(request, model, ids)
            })
        }
        (&Method::POST, "embeddings", _) => with_json_body(body, deployment, embeddings::embed),
        (&Method::GET, "models", None) => json_answer(&ModelList {
            object: "list",
            data: MODELS.iter().map(|id| Model::new(id)).collect(),
        }),
        (&Method::GET, _, None) => match endpoint.strip_prefix("models/") {
            Some(id) if !id.is_empty() => json_answer(&Model::new(id)),
            _ => unknown_url(method, path),
        },
        _ => unknown_url(method, path),
    }
}

/// Parses the body and resolves the model: Azure's deployment name wins over the body's field.
fn with_json_body(
    body: &[u8],
    deployment: Option<&str>,
    endpoint: impl FnOnce(&Value, &str) -> Result<Answer, String>,
) -> Answer {
    let request: Value = match serde_json::from_slice(body) {
        Ok(request @ Value::Object(_)) => request,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload.",
            )
        }
    };
    let model = match deployment.or_else(|| request.get("model").and_then(Value::as_str)) {
        Some(model) => model,
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                "you must provide a model parameter",
            )
        }
    };
    endpoint(&request, model).unwrap_or_else(|message| error(StatusCode::BAD_REQUEST, &message))
}

/// An error in OpenAI's shape, with the type and code OpenAI uses for that status.
pub(crate) fn error(status: StatusCode, message: &str) -> Answer {
    let (kind, code) = match status.as_u16() {
        429 => ("requests", Some("rate_limit_exceeded")),
        401 => ("invalid_request_error", Some("invalid_api_key")),
        500.. => ("server_error", None),
        _ => ("invalid_request_error", None),
    };
    error_with(status, message, kind, code)
}

fn unknown_url(method: &Method, path: &str) -> Answer {
    let message = format!(
        "Unknown request URL: {method} {path}. Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/."
    );
    error_with(
        StatusCode::NOT_FOUND,
        &message,
        "invalid_request_error",
        Some("unknown_url"),
    )
}

fn error_with(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Answer {
    let body = ErrorBody {
        error: ErrorDetail {
            message,
            kind,
            param: (),
            code,
        },
    };
    Answer::full(status, JSON, to_json(&body))
}

fn json_answer(value: &impl Serialize) -> Answer {
    Answer::full(StatusCode::OK, JSON, to_json(value))
}

fn to_json(value: &impl Serialize) -> Bytes {
    // Serialising these plain structs cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: (),
    code: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
}

impl<'a> Model<'a> {
    fn new(id: &'a str) -> Model<'a> {
        Model {
            id,
            object: "model",
            created: 0,
            owned_by: "mock",
        }
    }
}
