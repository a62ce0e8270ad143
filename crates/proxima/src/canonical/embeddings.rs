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

impl EmbeddingsRequest {
    /// Whether the client asked for vectors as base64 rather than float arrays.
    pub fn wants_base64(&self) -> bool {
        self.encoding_format.as_deref() == Some("base64")
    }
}

impl EmbeddingVector {
    /// The vector in the form the client asked for; used by providers whose upstream only
    /// returns floats, so every provider honours `encoding_format` the same way.
    pub fn encode(vector: Vec<f32>, base64: bool) -> EmbeddingVector {
        if base64 {
            EmbeddingVector::Base64(base64_f32(&vector))
        } else {
            EmbeddingVector::Float(vector)
        }
    }
}

/// Little-endian f32 bytes in standard base64, as OpenAI's `encoding_format: "base64"`.
fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference() {
        // 1.0f32 = 00 00 80 3f -> "AACAPw=="
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 1.0]), "AACAPwAAgD8=");
        assert!(matches!(
            EmbeddingVector::encode(vec![1.0], false),
            EmbeddingVector::Float(v) if v == [1.0]
        ));
    }
}
