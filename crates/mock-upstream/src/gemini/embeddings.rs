//! `batchEmbedContents`: deterministic unit vectors, the same ones the OpenAI endpoint gives
//! for the same text and size.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;

use crate::echo::{fnv1a, to_string, unit_vector};
use crate::script::{Answer, JSON};

const DEFAULT_DIMENSIONS: u64 = 8;
/// Gemini's largest output dimensionality; also keeps a request from asking for gigabytes.
const MAX_DIMENSIONS: u64 = 3072;

const REQUEST_FIELDS: [&str; 5] = [
    "model",
    "content",
    "outputDimensionality",
    "taskType",
    "title",
];

pub(super) fn batch(request: &Value, model: &str) -> Result<Answer, String> {
    if let Some(key) = request
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .find(|k| *k != "requests")
    {
        return Err(format!(
            "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
        ));
    }
    let requests = match request.get("requests").and_then(Value::as_array) {
        Some(requests) if !requests.is_empty() => requests,
        _ => {
            return Err("* BatchEmbedContentsRequest.requests: requests is not specified\n".into())
        }
    };
    let expected = format!("models/{model}");
    let mut embeddings = Vec::with_capacity(requests.len());
    for (i, item) in requests.iter().enumerate() {
        if let Some(key) = item
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .find(|k| !REQUEST_FIELDS.contains(&k.as_str()))
        {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{key}\" at 'requests[{i}]': Cannot find field."
            ));
        }
        if item.get("model").and_then(Value::as_str) != Some(expected.as_str()) {
            return Err(format!(
                "* BatchEmbedContentsRequest.requests[{i}].model: the model must be `{expected}`, as in the URL\n"
            ));
        }
        let text: Vec<&str> = item
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text")?.as_str())
            .collect();
        if text.is_empty() {
            return Err(format!(
                "* BatchEmbedContentsRequest.requests[{i}].content.parts: contents.parts must not be empty.\n"
            ));
        }
        let dimensions = match item.get("outputDimensionality") {
            None => DEFAULT_DIMENSIONS,
            Some(value) => value
                .as_u64()
                .filter(|d| (1..=MAX_DIMENSIONS).contains(d))
                .ok_or_else(|| {
                    format!("* BatchEmbedContentsRequest.requests[{i}].output_dimensionality: must be between 1 and {MAX_DIMENSIONS}\n")
                })?,
        };
        let values = unit_vector(fnv1a(text.join(" ").as_bytes()), dimensions as usize);
        embeddings.push(Embedding { values });
    }
    let body = to_string(&Batch { embeddings });
    Ok(Answer::full(StatusCode::OK, JSON, Bytes::from(body)))
}

// Typed rather than `json!`: f32 values then print in their shortest form, as OpenAI's do,
// instead of widened to f64 digits.
#[derive(Serialize)]
struct Batch {
    embeddings: Vec<Embedding>,
}

#[derive(Serialize)]
struct Embedding {
    values: Vec<f32>,
}
