//! `batchEmbedContents`: one embedding request per input text, answered with float vectors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::content::{Content, PartWire};
use super::model_resource;
use crate::canonical::{
    Api, EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, Usage,
};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEmbedContentsRequest {
    pub requests: Vec<EmbedContentRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedContentRequest {
    /// `models/{model}`: every item names the model again, and must name the one in the URL.
    pub model: String,
    pub content: Content,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dimensionality: Option<u32>,
    /// taskType, title.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BatchEmbedContentsResponse {
    #[serde(default)]
    pub embeddings: Vec<ContentEmbedding>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContentEmbedding {
    #[serde(default)]
    pub values: Vec<f32>,
}

impl BatchEmbedContentsRequest {
    /// One request per text. Gemini embeds text only, so token-id input is refused (400).
    pub fn from_canonical(
        req: &EmbeddingsRequest,
        model: &str,
    ) -> Result<BatchEmbedContentsRequest> {
        let texts: Vec<&str> = match &req.input {
            EmbeddingInput::Text(text) => vec![text],
            EmbeddingInput::Texts(texts) => texts.iter().map(String::as_str).collect(),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
                return Err(Error::invalid_request(
                    "this model's provider (Gemini) embeds text only: send `input` as a string or an array of strings, not token ids",
                )
                .with_param("input"))
            }
        };
        if texts.is_empty() {
            return Err(Error::invalid_request("`input` must not be empty").with_param("input"));
        }
        let extra = req
            .passthrough
            .for_api(Api::Gemini)
            .cloned()
            .unwrap_or_default();
        let model = model_resource(model);
        Ok(BatchEmbedContentsRequest {
            requests: texts
                .into_iter()
                .map(|text| EmbedContentRequest {
                    model: model.clone(),
                    content: Content {
                        role: None,
                        parts: vec![PartWire::text(text)],
                    },
                    output_dimensionality: req.dimensions,
                    extra: extra.clone(),
                })
                .collect(),
        })
    }
}

impl BatchEmbedContentsResponse {
    /// Gemini returns floats only; base64 is produced here when the client asked for it. The
    /// API reports no token counts for embeddings, so usage is zero.
    pub fn into_canonical(self, model: &str, base64: bool) -> EmbeddingsResponse {
        EmbeddingsResponse {
            model: model.to_owned(),
            data: self
                .embeddings
                .into_iter()
                .map(|e| EmbeddingVector::encode(e.values, base64))
                .collect(),
            usage: Usage::default(),
            extra: self.extra,
        }
    }
}
