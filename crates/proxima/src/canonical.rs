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
pub use stream::{ChatChunk, ChunkChoice, ChunkStream, ToolCallDelta};

/// A rough count of a request's input tokens (about four bytes of text per token), for
/// providers that cannot count and for limits before the call. Deliberately simple: it is
/// corrected by the real usage after the call.
pub fn estimate_input_tokens(req: &ChatRequest) -> u64 {
    let mut bytes = 0usize;
    for message in &req.messages {
        bytes += 16; // role and framing
        for part in &message.content {
            bytes += match part {
                Part::Text { text, .. } | Part::Refusal { text } => text.len(),
                Part::Reasoning { text, .. } => text.len(),
                Part::ToolCall {
                    name, arguments, ..
                } => name.len() + arguments.len(),
                Part::ToolResult { content, .. } => content
                    .iter()
                    .map(|p| match p {
                        Part::Text { text, .. } => text.len(),
                        _ => 1024,
                    })
                    .sum(),
                // Providers bill images by size; a mid-sized image is about 1,000 tokens.
                Part::Image { .. } => 4096,
                Part::Opaque { value, .. } => value.to_string().len(),
            };
        }
    }
    for tool in &req.tools {
        bytes += tool.name.len()
            + tool.description.as_ref().map_or(0, String::len)
            + tool.parameters.as_ref().map_or(0, |p| p.to_string().len());
    }
    (bytes as u64).div_ceil(4)
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
