//! Canonical non-streaming chat response and token usage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Api, Message};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    /// The upstream model that answered.
    pub model: String,
    /// Unix seconds.
    pub created: u64,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
    /// Unmodelled top-level fields of the upstream answer and the API they came from.
    pub extra: Map<String, Value>,
    pub extra_api: Option<Api>,
    /// The upstream's own body, in the API of `extra_api`, when the answer goes to a client of
    /// that API as it came: only a call that asked for it (nothing on its way out changes the
    /// messages) gets one. Its choices then carry finish reasons, and their message content
    /// only when a stage that keeps the answer (the cache fill, a stored turn) had it read
    /// whole.
    #[serde(skip)]
    pub raw: Option<bytes::Bytes>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    /// Always role assistant: text, tool calls, reasoning and refusal parts.
    pub message: Message,
    pub finish_reason: Option<FinishReason>,
    /// Unmodelled choice fields (e.g. `logprobs`), in the API of `ChatResponse::extra_api`.
    pub extra: Map<String, Value>,
}

/// Why generation stopped, in one vocabulary for all APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// Natural end of the turn.
    Stop,
    /// A stop sequence matched (Anthropic reports which one).
    StopSequence(Option<String>),
    Length,
    ToolCalls,
    ContentFilter,
    /// Anything else, as the upstream named it.
    Other(String),
}

/// Tokens used by one call. `input_tokens` includes cached ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the provider's prompt cache.
    pub cache_creation_input_tokens: Option<u64>,
    /// Output tokens spent on reasoning (included in `output_tokens`).
    pub reasoning_tokens: Option<u64>,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}
