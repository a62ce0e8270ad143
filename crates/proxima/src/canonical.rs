//! The one request/response/stream model every surface translates into and every provider translates out of.
//!
//! Surfaces (OpenAI chat, Anthropic messages, Responses) and providers never talk to each other
//! directly: each knows only its own wire format and this model. It therefore carries the union of
//! what the APIs can express (system and developer turns anywhere, images, tool calls and results,
//! reasoning, cache hints, usage with cached tokens), plus the fields it does not model, tagged
//! with the API they came from so a provider of the same API can forward them untouched.

mod embeddings;
mod request;
mod response;
mod stream;

pub use embeddings::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse};
pub use request::{
    CacheHint, ChatRequest, HostedTool, ImageSource, Message, Part, Passthrough, Reasoning,
    ResponseFormat, Role, Sampling, Tool, ToolChoice,
};
pub use response::{ChatResponse, Choice, FinishReason, Usage};
pub use stream::{replay, ChatChunk, ChunkChoice, Collector, ToolCallDelta};

/// A rough count of a request's input tokens (about four bytes of text per token), for
/// choosing targets and for providers that cannot count. Cheap enough for every request.
pub fn estimate_input_tokens(req: &ChatRequest) -> u64 {
    input_tokens(req, |text| (text.len() as u64).div_ceil(4))
}

/// A request's input tokens, with `count` giving the tokens of each piece of text (a real
/// tokenizer for limits, an estimate for routing).
pub fn input_tokens(req: &ChatRequest, count: impl Fn(&str) -> u64) -> u64 {
    let mut tokens = req
        .messages
        .iter()
        .map(|message| message_tokens(message, &count))
        .sum();
    for tool in &req.tools {
        tokens += count(&tool.name)
            + tool.description.as_deref().map_or(0, &count)
            + tool
                .parameters
                .as_ref()
                .map_or(0, |p| count(&p.to_string()));
    }
    tokens
}

/// One message's tokens, framing included, with `count` counting text.
pub fn message_tokens(message: &Message, count: impl Fn(&str) -> u64) -> u64 {
    // Providers bill images by size; a mid-sized image is about 1,000 tokens.
    const IMAGE_TOKENS: u64 = 1024;
    // Role and message framing.
    const MESSAGE_TOKENS: u64 = 4;
    let mut tokens = MESSAGE_TOKENS;
    for part in &message.content {
        tokens += match part {
            Part::Text { text, .. } | Part::Refusal { text } => count(text),
            Part::Reasoning { text, .. } => count(text),
            Part::ToolCall {
                name, arguments, ..
            } => count(name) + count(arguments),
            Part::ToolResult { content, .. } => content
                .iter()
                .map(|p| match p {
                    Part::Text { text, .. } => count(text),
                    _ => IMAGE_TOKENS,
                })
                .sum(),
            Part::Image { .. } => IMAGE_TOKENS,
            Part::Opaque { value, .. } => count(&value.to_string()),
        };
    }
    tokens
}

/// The wire APIs Proxima speaks, on either side. Used to decide whether unmodelled fields may be
/// forwarded (only to the API they came from) and in which shape an error is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    OpenAiChat,
    Anthropic,
    Gemini,
    Responses,
}
