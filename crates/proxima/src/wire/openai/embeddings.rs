//! The embeddings request and response, and their conversion to and from canonical.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{
    Api, EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse, Passthrough, Usage,
};

#[derive(Debug, Deserialize, Serialize)]
pub struct EmbeddingsRequestWire {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EmbeddingsResponseWire {
    #[serde(default = "list")]
    pub object: String,
    pub data: Vec<EmbeddingWire>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: EmbeddingsUsageWire,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn list() -> String {
    "list".into()
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EmbeddingWire {
    #[serde(default = "embedding")]
    pub object: String,
    #[serde(default)]
    pub index: u32,
    pub embedding: EmbeddingVector,
}

fn embedding() -> String {
    "embedding".into()
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct EmbeddingsUsageWire {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
}

impl EmbeddingsRequestWire {
    pub fn into_canonical(self) -> EmbeddingsRequest {
        EmbeddingsRequest {
            model: self.model,
            input: self.input,
            dimensions: self.dimensions,
            encoding_format: self.encoding_format,
            user: self.user,
            passthrough: Passthrough {
                api: Some(Api::OpenAiChat),
                fields: self.extra,
                headers: Vec::new(),
            },
        }
    }

    pub fn from_canonical(req: &EmbeddingsRequest, model: &str) -> EmbeddingsRequestWire {
        EmbeddingsRequestWire {
            model: model.to_owned(),
            input: req.input.clone(),
            dimensions: req.dimensions,
            encoding_format: req.encoding_format.clone(),
            user: req.user.clone(),
            extra: req
                .passthrough
                .for_api(Api::OpenAiChat)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

impl EmbeddingsResponseWire {
    pub fn into_canonical(mut self) -> EmbeddingsResponse {
        self.data.sort_by_key(|d| d.index);
        EmbeddingsResponse {
            model: self.model,
            data: self.data.into_iter().map(|d| d.embedding).collect(),
            usage: Usage {
                input_tokens: self.usage.prompt_tokens,
                ..Usage::default()
            },
            extra: self.extra,
        }
    }

    pub fn from_canonical(r: &EmbeddingsResponse) -> EmbeddingsResponseWire {
        EmbeddingsResponseWire {
            object: list(),
            data: r
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| EmbeddingWire {
                    object: embedding(),
                    index: i as u32,
                    embedding: v.clone(),
                })
                .collect(),
            model: r.model.clone(),
            usage: EmbeddingsUsageWire {
                prompt_tokens: r.usage.input_tokens,
                total_tokens: r.usage.input_tokens,
            },
            extra: r.extra.clone(),
        }
    }
}
