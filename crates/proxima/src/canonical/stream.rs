//! Canonical streaming chunks: the deltas of one or more choices, and usage at the end.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Api, FinishReason, Role, Usage};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub choices: Vec<ChunkChoice>,
    /// Set on the chunk that reports usage, usually the last.
    pub usage: Option<Usage>,
    /// Unmodelled chunk and choice fields, and the API they came from.
    pub extra: Map<String, Value>,
    pub extra_api: Option<Api>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    /// Set on the first delta of a choice.
    pub role: Option<Role>,
    pub text: Option<String>,
    pub reasoning: Option<String>,
    /// Reasoning signature, sent once the reasoning block is complete (Anthropic).
    pub reasoning_signature: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: Option<FinishReason>,
    pub extra: Map<String, Value>,
}

/// A fragment of a tool call. The first fragment of a call carries its id and name; the
/// arguments arrive as text pieces to be concatenated in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position of the call within the turn; fragments with the same index belong together.
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}
