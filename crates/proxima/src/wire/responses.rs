//! OpenAI's Responses API format (`POST /v1/responses`): the request and its conversion to the
//! canonical model, and the `response` object and its output items built from canonical answers.
//!
//! Only the surface side exists: no provider speaks this API yet. What the request carries that
//! the canonical model cannot express is either kept for the answer (echoed fields, how tool
//! names map back) in a [`ResponseContext`], or kept as passthrough for a future provider of the
//! same API — never sent to another API.

mod file_search;
mod request;
mod response;
mod tools;

pub use file_search::{FileSearchCall, FileSearchResult, FileSearchTool};
pub use request::{items_to_messages, Converted, ResponsesRequest};
pub use response::{
    custom_input, function_call_item, item_id, message_item, reasoning_item, response_id,
    status_for, ContentPart, IncompleteDetails, OutputItem, ResponseErrorWire, ResponseObject,
    Status, SummaryText, UsageWire,
};
pub use tools::{ToolKind, ToolNames, ToolOrigin};

use serde::Serialize;
use serde_json::Value;

/// What the answer needs from the request: the fields the API echoes back, how canonical tool
/// names map back to the client's tools, and which optional output the client asked for.
#[derive(Debug, Clone)]
pub struct ResponseContext {
    /// The response's id, made before the call: the stream, the complete object and the stored
    /// response all carry this one.
    pub id: String,
    pub echo: Echo,
    pub tools: ToolNames,
    /// `include: ["reasoning.encrypted_content"]`: reasoning items carry `encrypted_content`.
    pub encrypted_reasoning: bool,
    /// The public model asked for, shown until the upstream names the model that answered.
    pub model: String,
    /// `include: ["file_search_call.results"]`: a `file_search_call` item shows its results.
    pub file_search_results: bool,
    /// The search made for the `file_search` tool, once it is made: its item leads the output
    /// and its passages are what the answer's citations point to.
    pub file_search: Option<FileSearchCall>,
}

/// Request fields the `response` object repeats, as the API fills them in when absent.
#[derive(Debug, Clone, Serialize)]
pub struct Echo {
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub parallel_tool_calls: bool,
    /// The stored response this one continues.
    pub previous_response_id: Option<String>,
    /// The conversation this response belongs to, as `{"id": ...}`; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationRef>,
    pub reasoning: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    pub store: bool,
    /// Null unless the client set it: the upstream's default is not ours to claim.
    pub temperature: Option<f64>,
    pub text: Value,
    pub tool_choice: Value,
    /// The tools offered to the model, as the client declared them (hosted tools dropped).
    pub tools: Vec<Value>,
    pub top_p: Option<f64>,
    pub truncation: String,
    pub user: Option<String>,
    pub metadata: Value,
}

/// A conversation named by a request, as the `response` object shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationRef {
    pub id: String,
}
