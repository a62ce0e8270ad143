//! Google's Gemini API (`generativelanguage.googleapis.com`): `generateContent`, its SSE
//! stream, and `batchEmbedContents`, with the conversion from the canonical request and back to
//! the canonical response.
//!
//! Only the provider side exists so far (canonical → request, response → canonical); a Gemini
//! surface would add the reverse directions here.

mod content;
mod embeddings;
mod request;
mod response;
mod schema;

pub use content::{Blob, Content, FileData, FunctionCall, FunctionResponse, PartWire};
pub use embeddings::{
    BatchEmbedContentsRequest, BatchEmbedContentsResponse, ContentEmbedding, EmbedContentRequest,
};
pub use request::{
    FunctionCallingConfig, FunctionDeclaration, GenerateContentRequest, GenerationConfig,
    ThinkingConfig, ToolConfig, ToolWire,
};
pub use response::{
    finish_reason_from_wire, part_to_canonical, CallIds, Candidate, GenerateContentResponse,
    PromptFeedback, UsageMetadata,
};
pub use schema::{clean_parameters, clean_schema};

/// The resource name of a model: `gemini-2.5-flash` → `models/gemini-2.5-flash`. Names that
/// already have a collection (`models/...`, `tunedModels/...`) are kept.
pub fn model_resource(model: &str) -> String {
    if model.contains('/') {
        model.to_owned()
    } else {
        format!("models/{model}")
    }
}

#[cfg(test)]
mod tests;
