//! Canonical embeddings request and response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Passthrough, Usage};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    pub dimensions: Option<u32>,
    /// `float` or `base64`; passed to providers that support it, so no re-encoding is needed.
    pub encoding_format: Option<String>,
    pub user: Option<String>,
    pub passthrough: Passthrough,
}

/// What to embed, in the forms OpenAI accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingsResponse {
    pub model: String,
    pub data: Vec<EmbeddingVector>,
    pub usage: Usage,
    pub extra: Map<String, Value>,
}

/// One embedding, as floats or as base64 of little-endian f32 (OpenAI's compact form).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}
