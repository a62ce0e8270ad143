//! The `generateContent` response (also each event of a stream), turned into canonical form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::content::{Content, PartWire};
use crate::canonical::{
    Api, ChatResponse, Choice, FinishReason, ImageSource, Message, Part, Role, Usage,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_metadata: Option<UsageMetadata>,
    /// The model that actually answered, e.g. `gemini-2.5-flash-preview-05-20`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Absent when the candidate was blocked before producing anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// safetyRatings, citationMetadata, groundingMetadata, avgLogprobs ...
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// Set when the prompt itself was refused: then there are no candidates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_reason_message: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// Includes `cachedContentTokenCount`.
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_content_token_count: Option<u64>,
    /// Answer tokens, without thoughts.
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thoughts_token_count: Option<u64>,
    /// Tokens of built-in tool results (search, code execution) fed back to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_use_prompt_token_count: Option<u64>,
    #[serde(default)]
    pub total_token_count: u64,
}

impl UsageMetadata {
    /// Canonical usage: thoughts are output (billed as such) and reported as reasoning too;
    /// built-in tool results are input the model read.
    pub fn to_canonical(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_token_count + self.tool_use_prompt_token_count.unwrap_or(0),
            output_tokens: self.candidates_token_count + self.thoughts_token_count.unwrap_or(0),
            cached_input_tokens: self.cached_content_token_count,
            cache_creation_input_tokens: None,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

impl GenerateContentResponse {
    /// Why the prompt was refused, when it was: no candidates and a block reason.
    pub fn prompt_blocked(&self) -> Option<String> {
        let feedback = self.prompt_feedback.as_ref()?;
        let reason = feedback.block_reason.as_deref()?;
        if !self.candidates.is_empty() {
            return None;
        }
        Some(match &feedback.block_reason_message {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_owned(),
        })
    }

    /// The canonical response. `id` and `model` are used when Gemini sends no `responseId` or
    /// `modelVersion`. Function calls Gemini sent without an id (usual) get one from
    /// [`CallIds`], in order across the response.
    pub fn into_canonical(self, id: String, model: &str, created: u64) -> ChatResponse {
        let mut calls = CallIds::default();
        let choices = self
            .candidates
            .into_iter()
            .enumerate()
            .map(|(position, candidate)| {
                let content: Vec<Part> = candidate
                    .content
                    .into_iter()
                    .flat_map(|c| c.parts)
                    .flat_map(|p| part_to_canonical(p, &mut calls))
                    .collect();
                let has_calls = content.iter().any(|p| matches!(p, Part::ToolCall { .. }));
                Choice {
                    index: candidate.index.unwrap_or(position as u32),
                    message: Message {
                        role: Role::Assistant,
                        content,
                        name: None,
                        extra: Map::new(),
                    },
                    finish_reason: candidate
                        .finish_reason
                        .as_deref()
                        .map(|r| finish_reason_from_wire(r, has_calls)),
                    extra: candidate.extra,
                }
            })
            .collect();
        let mut extra = self.extra;
        if let Some(feedback) = self.prompt_feedback {
            if let Ok(value) = serde_json::to_value(feedback) {
                extra.insert("promptFeedback".into(), value);
            }
        }
        ChatResponse {
            id: self.response_id.unwrap_or(id),
            model: self.model_version.unwrap_or_else(|| model.to_owned()),
            created,
            choices,
            usage: self
                .usage_metadata
                .as_ref()
                .map(UsageMetadata::to_canonical),
            extra,
            extra_api: Some(Api::Gemini),
            raw: None,
        }
    }
}

/// Ids for function calls that came without one, numbered in order of arrival after a stem
/// drawn for each answer. They must be unique in the conversation, not only in the answer:
/// clients send every earlier call back, and Anthropic refuses a conversation whose `tool_use`
/// ids repeat.
#[derive(Debug)]
pub struct CallIds {
    stem: u64,
    next: u32,
}

impl Default for CallIds {
    fn default() -> CallIds {
        CallIds {
            stem: fastrand::u64(..),
            next: 0,
        }
    }
}

impl CallIds {
    fn id_for(&mut self, given: Option<String>) -> String {
        given.unwrap_or_else(|| {
            let id = format!("call_{:016x}_{}", self.stem, self.next);
            self.next += 1;
            id
        })
    }
}

/// One Gemini part as canonical parts. A thought becomes reasoning; a signature on any other
/// part becomes an empty reasoning part just before it, which is where
/// [`GenerateContentRequest::from_canonical`](super::GenerateContentRequest::from_canonical)
/// puts it back.
pub fn part_to_canonical(mut part: PartWire, calls: &mut CallIds) -> Vec<Part> {
    if part.thought == Some(true) {
        return vec![Part::Reasoning {
            text: part.text.unwrap_or_default(),
            signature: part.thought_signature,
            redacted: None,
        }];
    }
    let mut out = Vec::with_capacity(2);
    if let Some(signature) = part.thought_signature.take() {
        out.push(Part::Reasoning {
            text: String::new(),
            signature: Some(signature),
            redacted: None,
        });
    }
    if let Some(call) = part.function_call.take() {
        out.push(Part::ToolCall {
            id: calls.id_for(call.id),
            arguments: match call.args {
                Value::Null => "{}".to_owned(),
                args => args.to_string(),
            },
            name: call.name,
        });
    } else if let Some(text) = part.text.take() {
        if !text.is_empty() {
            out.push(Part::text(text));
        }
    } else if let Some(blob) = part
        .inline_data
        .take_if(|blob| blob.mime_type.starts_with("image/"))
    {
        out.push(Part::Image {
            source: ImageSource::Base64 {
                media_type: blob.mime_type,
                data: blob.data,
            },
            detail: None,
            cache: None,
        });
    } else if part != PartWire::default() {
        // Code execution, audio and the like: kept whole for a Gemini-speaking client.
        if let Ok(value) = serde_json::to_value(&part) {
            out.push(Part::Opaque {
                api: Api::Gemini,
                value,
            });
        }
    }
    out
}

/// Gemini's finish reasons in canonical form. Gemini says STOP after function calls too, so
/// whether the candidate called any decides between `Stop` and `ToolCalls`.
pub fn finish_reason_from_wire(reason: &str, has_tool_calls: bool) -> FinishReason {
    match reason {
        "STOP" if has_tool_calls => FinishReason::ToolCalls,
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        other => FinishReason::Other(other.to_owned()),
    }
}
