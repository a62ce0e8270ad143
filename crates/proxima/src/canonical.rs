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
    CacheHint, ChatRequest, ImageSource, Message, Part, Passthrough, Reasoning, ResponseFormat,
    Role, Sampling, Tool, ToolChoice,
};
pub use response::{ChatResponse, Choice, FinishReason, Usage};
pub use stream::{ChatChunk, ChunkChoice, ChunkStream, ToolCallDelta};

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
