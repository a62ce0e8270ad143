//! `Content` and `Part`: the turns and their pieces, the same in requests and responses.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One turn: `user` or `model` (no role in `systemInstruction`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub parts: Vec<PartWire>,
}

/// A part holds one kind of data (`text`, `inlineData`, `functionCall` ...) plus metadata that
/// may come with any of them (`thought`, `thoughtSignature`). Modelled as a struct of options,
/// since that is what it is on the wire; kinds Proxima does not model stay in `extra`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Marks a thought summary (reasoning) rather than answer text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought: Option<bool>,
    /// Opaque proof of the model's reasoning at this point; must come back unchanged with the
    /// part it arrived on in later turns (Gemini 3 refuses function calls without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<FileData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse>,
    /// executableCode, codeExecutionResult, videoMetadata ...
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl PartWire {
    pub fn text(text: impl Into<String>) -> PartWire {
        PartWire {
            text: Some(text.into()),
            ..PartWire::default()
        }
    }
}

/// Inline bytes, base64-encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob {
    pub mime_type: String,
    pub data: String,
}

/// Data by reference: a Files API URI or a public URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub file_uri: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCall {
    /// Set by some Gemini deployments; when absent the gateway makes one up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    /// The arguments as a JSON object (not a string, unlike OpenAI).
    #[serde(default)]
    pub args: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Gemini matches results to calls by function name.
    pub name: String,
    /// A JSON object; by convention `{"output": ...}` or `{"error": ...}`.
    pub response: Value,
}
