//! OpenAI's chat completions and embeddings formats.

mod embeddings;
mod forward;
mod request;
mod response;

pub use embeddings::{EmbeddingsRequestWire, EmbeddingsResponseWire};
pub use forward::body_for_model;
pub use request::ChatCompletionRequest;
pub use response::{
    usage_from_wire, ChatCompletion, ChatCompletionChunk, ChunkOutline, CompletionOutline,
    UsageWire,
};

use crate::canonical::FinishReason;

fn finish_reason_from_wire(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

fn finish_reason_to_wire(reason: &FinishReason) -> String {
    match reason {
        FinishReason::Stop | FinishReason::StopSequence(_) => "stop".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ToolCalls => "tool_calls".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(other) => other.clone(),
    }
}
