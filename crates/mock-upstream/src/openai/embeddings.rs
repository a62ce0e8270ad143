//! `POST /embeddings`: deterministic unit vectors derived from a hash of each input.

use serde::Serialize;
use serde_json::Value;

use super::json_answer;
use crate::echo::{count_words, fnv1a, unit_vector};
use crate::script::Answer;

const DEFAULT_DIMENSIONS: u64 = 8;
/// Generous, yet stops a request from asking for gigabytes of floats.
const MAX_DIMENSIONS: u64 = 16_384;

pub(super) fn embed(request: &Value, model: &str) -> Result<Answer, String> {
    let inputs = inputs(request.get("input"))?;
    let dimensions = match request.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(value) => value
            .as_u64()
            .filter(|d| (1..=MAX_DIMENSIONS).contains(d))
            .ok_or_else(|| {
                format!("'dimensions' must be an integer between 1 and {MAX_DIMENSIONS}")
            })?,
    } as usize;
    let base64 = match request.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(format!(
                "'{other}' is not one of ['float', 'base64'] - 'encoding_format'"
            ))
        }
    };

    let tokens: u64 = inputs.iter().map(Input::tokens).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = unit_vector(input.hash(), dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64_encode(&bytes))
            } else {
                Embedding::Float(vector)
            };
            Item {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    Ok(json_answer(&List {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    }))
}

enum Input<'a> {
    Text(&'a str),
    Tokens(&'a [Value]),
}

impl Input<'_> {
    fn tokens(&self) -> u64 {
        match self {
            Input::Text(text) => count_words(text),
            Input::Tokens(tokens) => tokens.len() as u64,
        }
    }

    fn hash(&self) -> u64 {
        match self {
            Input::Text(text) => fnv1a(text.as_bytes()),
            Input::Tokens(tokens) => {
                let bytes: Vec<u8> = tokens
                    .iter()
                    .flat_map(|t| t.as_u64().unwrap_or(0).to_le_bytes())
                    .collect();
                fnv1a(&bytes)
            }
        }
    }
}

/// Accepts every shape OpenAI does: a string, strings, one token array, or token arrays.
fn inputs(input: Option<&Value>) -> Result<Vec<Input<'_>>, String> {
    let invalid =
        || "'input' must be a string, an array of strings, or an array of token arrays".to_owned();
    match input {
        None => Err("'input' is a required property".to_owned()),
        Some(Value::String(text)) => Ok(vec![Input::Text(text)]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err("'input' must not be empty".to_owned())
        }
        Some(Value::Array(items)) if items.iter().all(Value::is_u64) => {
            Ok(vec![Input::Tokens(items)])
        }
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(Input::Text(text)),
                Value::Array(tokens) if tokens.iter().all(Value::is_u64) => {
                    Ok(Input::Tokens(tokens))
                }
                _ => Err(invalid()),
            })
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// Standard base64 with padding, as OpenAI returns for `encoding_format: "base64"`.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[derive(Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Embedding,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }
}
