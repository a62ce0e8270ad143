//! The chat completion response and stream chunk, and their conversion to and from canonical.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::request::{FunctionCallWire, ToolCallWire};
use super::{finish_reason_from_wire, finish_reason_to_wire};
use crate::canonical::{
    Api, ChatChunk, ChatResponse, Choice, ChunkChoice, Message, Part, Role, ToolCallDelta, Usage,
};

#[derive(Debug, Deserialize, Serialize)]
pub struct ChatCompletion {
    #[serde(default)]
    pub id: String,
    #[serde(default = "object_completion")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChoiceWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageWire>,
    /// system_fingerprint, service_tier and whatever a compatible server adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn object_completion() -> String {
    "chat.completion".into()
}

/// What the gateway itself reads of a chat completion it passes on as it came
/// ([`ChatResponse::raw`]): ids, finish reasons and usage. The messages are skipped, not
/// copied out, which is most of the cost of reading an answer.
#[derive(Debug, Deserialize)]
pub struct CompletionOutline {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChoiceOutline>,
    #[serde(default)]
    pub usage: Option<UsageWire>,
}

#[derive(Debug, Deserialize)]
pub struct ChoiceOutline {
    #[serde(default)]
    pub index: u32,
    /// Required, as in a whole read: a body without messages is not a chat completion.
    #[allow(dead_code)]
    message: serde::de::IgnoredAny,
    pub finish_reason: Option<String>,
}

impl CompletionOutline {
    /// The answer whose body is `raw`, with no message content (see [`ChatResponse::raw`]).
    pub fn into_canonical(self, raw: bytes::Bytes) -> ChatResponse {
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            usage: self.usage.as_ref().map(usage_from_wire),
            choices: self
                .choices
                .into_iter()
                .map(|c| Choice {
                    index: c.index,
                    message: Message {
                        role: Role::Assistant,
                        content: Vec::new(),
                        name: None,
                        extra: Map::new(),
                    },
                    finish_reason: c.finish_reason.as_deref().map(finish_reason_from_wire),
                    extra: Map::new(),
                })
                .collect(),
            extra: Map::new(),
            extra_api: Some(Api::OpenAiChat),
            raw: Some(raw),
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ChoiceWire {
    #[serde(default)]
    pub index: u32,
    pub message: ResponseMessageWire,
    pub finish_reason: Option<String>,
    /// logprobs and extensions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ResponseMessageWire {
    #[serde(default = "assistant")]
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallWire>>,
    #[serde(default)]
    pub refusal: Option<String>,
    /// annotations, audio and extensions.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn assistant() -> String {
    "assistant".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UsageWire {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptDetailsWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionDetailsWire>,
}

/// The details the gateway counts; others (audio, predictions) are not kept in canonical usage,
/// so they are skipped rather than collected.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PromptDetailsWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct CompletionDetailsWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// Read without `#[serde(flatten)]`, as are its choices and deltas (see
/// `wire::deserialize_with_extra`): every event of a stream read whole is one.
#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoiceWire>,
    /// OpenAI sends `"usage": null` on every chunk when usage was asked for; we send it only
    /// on the chunk that has it, which every client accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageWire>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for ChatCompletionChunk {
    fn default() -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: String::new(),
            object: "chat.completion.chunk".into(),
            created: 0,
            model: String::new(),
            choices: Vec::new(),
            usage: None,
            extra: Map::new(),
        }
    }
}

deserialize_with_extra!(ChatCompletionChunk, "a chat completion chunk", {
    "id" => id,
    "object" => object,
    "created" => created,
    "model" => model,
    "choices" => choices,
    "usage" => usage,
});

/// What the gateway itself reads of a stream chunk it passes on as it came
/// ([`ChatChunk::raw`]): ids, finish reasons and usage; the deltas are skipped.
#[derive(Debug, Deserialize)]
pub struct ChunkOutline {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoiceOutline>,
    #[serde(default)]
    pub usage: Option<UsageWire>,
    /// How OpenAI reports a failure after the headers: an event with an error object.
    #[serde(default)]
    pub error: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct ChunkChoiceOutline {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

impl ChunkOutline {
    /// The chunk whose event data is `raw`, with no deltas (see [`ChatChunk::raw`]).
    pub fn into_canonical(self, raw: bytes::Bytes) -> ChatChunk {
        ChatChunk {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self
                .choices
                .into_iter()
                .map(|c| ChunkChoice {
                    index: c.index,
                    finish_reason: c.finish_reason.as_deref().map(finish_reason_from_wire),
                    ..ChunkChoice::default()
                })
                .collect(),
            usage: self.usage.as_ref().map(usage_from_wire),
            extra: Map::new(),
            extra_api: Some(Api::OpenAiChat),
            raw: Some(raw),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ChunkChoiceWire {
    pub index: u32,
    pub delta: DeltaWire,
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(ChunkChoiceWire, "a chunk's choice", {
    "index" => index,
    "delta" => delta,
    "finish_reason" => finish_reason,
});

deserialize_with_extra!(DeltaWire, "a choice's delta", {
    "role" => role,
    "content" => content,
    "reasoning_content" => reasoning_content,
    "refusal" => refusal,
    "tool_calls" => tool_calls,
});

#[derive(Debug, Default, Serialize)]
pub struct DeltaWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDeltaWire>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ToolCallDeltaWire {
    #[serde(default)]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub function: FunctionDeltaWire,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FunctionDeltaWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Always written, even empty: some clients concatenate without checking for presence.
    #[serde(default)]
    pub arguments: String,
}

// ------------------------------------------------------------------ usage

pub fn usage_from_wire(u: &UsageWire) -> Usage {
    Usage {
        input_tokens: u.prompt_tokens,
        output_tokens: u.completion_tokens,
        cached_input_tokens: u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens),
        cache_creation_input_tokens: None,
        reasoning_tokens: u
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens),
    }
}

impl From<&Usage> for UsageWire {
    fn from(u: &Usage) -> UsageWire {
        UsageWire {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total_tokens(),
            prompt_tokens_details: Some(PromptDetailsWire {
                cached_tokens: Some(u.cached_input_tokens.unwrap_or(0)),
            }),
            completion_tokens_details: Some(CompletionDetailsWire {
                reasoning_tokens: Some(u.reasoning_tokens.unwrap_or(0)),
            }),
        }
    }
}

// ------------------------------------------------------------------ completion

impl ChatCompletion {
    pub fn into_canonical(self) -> ChatResponse {
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            usage: self.usage.as_ref().map(usage_from_wire),
            choices: self
                .choices
                .into_iter()
                .map(|c| {
                    let m = c.message;
                    let mut content = Vec::new();
                    if let Some(text) = m.reasoning_content {
                        content.push(Part::Reasoning {
                            text,
                            signature: None,
                            redacted: None,
                        });
                    }
                    if let Some(text) = m.content {
                        content.push(Part::text(text));
                    }
                    if let Some(text) = m.refusal {
                        content.push(Part::Refusal { text });
                    }
                    for call in m.tool_calls.into_iter().flatten() {
                        content.push(Part::ToolCall {
                            id: call.id,
                            name: call.function.name,
                            arguments: call.function.arguments,
                        });
                    }
                    Choice {
                        index: c.index,
                        message: Message {
                            role: Role::Assistant,
                            content,
                            name: None,
                            extra: m.extra,
                        },
                        finish_reason: c.finish_reason.as_deref().map(finish_reason_from_wire),
                        extra: c.extra,
                    }
                })
                .collect(),
            extra: self.extra,
            extra_api: Some(Api::OpenAiChat),
            raw: None,
        }
    }

    pub fn from_canonical(r: &ChatResponse) -> ChatCompletion {
        let same_api = r.extra_api == Some(Api::OpenAiChat);
        ChatCompletion {
            id: r.id.clone(),
            object: object_completion(),
            created: r.created,
            model: r.model.clone(),
            choices: r
                .choices
                .iter()
                .map(|c| {
                    let mut text: Option<String> = None;
                    let mut reasoning: Option<String> = None;
                    let mut refusal = None;
                    let mut calls = Vec::new();
                    for part in &c.message.content {
                        match part {
                            Part::Text { text: t, .. } => {
                                text.get_or_insert_with(String::new).push_str(t)
                            }
                            Part::Reasoning { text: t, .. } => {
                                reasoning.get_or_insert_with(String::new).push_str(t)
                            }
                            Part::Refusal { text } => refusal = Some(text.clone()),
                            Part::ToolCall {
                                id,
                                name,
                                arguments,
                            } => calls.push(ToolCallWire {
                                id: id.clone(),
                                kind: "function".into(),
                                function: FunctionCallWire {
                                    name: name.clone(),
                                    arguments: arguments.clone(),
                                },
                            }),
                            _ => {}
                        }
                    }
                    let mut extra = if same_api {
                        c.extra.clone()
                    } else {
                        Map::new()
                    };
                    extra.entry("logprobs").or_insert(Value::Null);
                    ChoiceWire {
                        index: c.index,
                        message: ResponseMessageWire {
                            role: assistant(),
                            content: text,
                            reasoning_content: reasoning,
                            tool_calls: (!calls.is_empty()).then_some(calls),
                            refusal,
                            extra: if same_api {
                                c.message.extra.clone()
                            } else {
                                Map::new()
                            },
                        },
                        finish_reason: c.finish_reason.as_ref().map(finish_reason_to_wire),
                        extra,
                    }
                })
                .collect(),
            usage: r.usage.as_ref().map(UsageWire::from),
            extra: if same_api {
                r.extra.clone()
            } else {
                Map::new()
            },
        }
    }
}

// ------------------------------------------------------------------ chunk

impl ChatCompletionChunk {
    pub fn into_canonical(self) -> ChatChunk {
        ChatChunk {
            id: self.id,
            model: self.model,
            created: self.created,
            usage: self.usage.as_ref().map(usage_from_wire),
            choices: self
                .choices
                .into_iter()
                .map(|c| {
                    let d = c.delta;
                    ChunkChoice {
                        index: c.index,
                        role: d.role.as_deref().map(|_| Role::Assistant),
                        text: d.content,
                        reasoning: d.reasoning_content,
                        reasoning_signature: None,
                        refusal: d.refusal,
                        tool_calls: d
                            .tool_calls
                            .into_iter()
                            .flatten()
                            .map(|t| ToolCallDelta {
                                index: t.index,
                                id: t.id,
                                name: t.function.name,
                                arguments: t.function.arguments,
                            })
                            .collect(),
                        finish_reason: c.finish_reason.as_deref().map(finish_reason_from_wire),
                        extra: c.extra,
                    }
                })
                .collect(),
            extra: self.extra,
            extra_api: Some(Api::OpenAiChat),
            raw: None,
        }
    }

    /// Unmodelled fields go to the client only when the chunk came from an OpenAI-speaking
    /// provider.
    pub fn from_canonical(chunk: &ChatChunk) -> ChatCompletionChunk {
        let same_api = chunk.extra_api == Some(Api::OpenAiChat);
        ChatCompletionChunk {
            id: chunk.id.clone(),
            object: "chat.completion.chunk".into(),
            created: chunk.created,
            model: chunk.model.clone(),
            choices: chunk
                .choices
                .iter()
                .map(|c| {
                    let mut extra = if same_api {
                        c.extra.clone()
                    } else {
                        Map::new()
                    };
                    extra.entry("logprobs").or_insert(Value::Null);
                    ChunkChoiceWire {
                        index: c.index,
                        delta: DeltaWire {
                            role: c.role.map(|r| r.as_str().to_owned()),
                            content: c.text.clone(),
                            reasoning_content: c.reasoning.clone(),
                            refusal: c.refusal.clone(),
                            tool_calls: (!c.tool_calls.is_empty()).then(|| {
                                c.tool_calls
                                    .iter()
                                    .map(|t| ToolCallDeltaWire {
                                        index: t.index,
                                        id: t.id.clone(),
                                        kind: t.id.as_ref().map(|_| "function".to_owned()),
                                        function: FunctionDeltaWire {
                                            name: t.name.clone(),
                                            arguments: t.arguments.clone(),
                                        },
                                    })
                                    .collect()
                            }),
                            extra: Map::new(),
                        },
                        finish_reason: c.finish_reason.as_ref().map(finish_reason_to_wire),
                        extra,
                    }
                })
                .collect(),
            usage: chunk.usage.as_ref().map(UsageWire::from),
            extra: if same_api {
                chunk.extra.clone()
            } else {
                Map::new()
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_keeps_what_it_does_not_model_at_every_level() {
        let data = r#"{"id":"c1","object":"chat.completion.chunk","created":7,"mod\u0065l":"m",
            "system_fingerprint":"fp","choices":[{"index":1,"delta":{"role":"assistant",
            "content":"hi","x_delta":[1,{"a":null}]},"logprobs":{"content":[]},
            "finish_reason":null}],"usage":null,"x_top":{"nested":true}}"#;
        let chunk: ChatCompletionChunk = serde_json::from_str(data).unwrap();
        assert_eq!((chunk.id.as_str(), chunk.created), ("c1", 7));
        assert_eq!(
            chunk.model, "m",
            "a key written with an escape is the same key"
        );
        assert!(chunk.usage.is_none());
        assert_eq!(chunk.extra["system_fingerprint"], "fp");
        assert_eq!(chunk.extra["x_top"], serde_json::json!({"nested": true}));
        let choice = &chunk.choices[0];
        assert_eq!(choice.index, 1);
        assert_eq!(choice.finish_reason, None);
        assert_eq!(choice.extra["logprobs"], serde_json::json!({"content": []}));
        assert_eq!(choice.delta.content.as_deref(), Some("hi"));
        assert_eq!(
            choice.delta.extra["x_delta"],
            serde_json::json!([1, {"a": null}])
        );

        // Absent fields take their defaults; fields of the wrong type are errors.
        let bare: ChatCompletionChunk = serde_json::from_str("{}").unwrap();
        assert_eq!(bare.object, "chat.completion.chunk");
        assert!(bare.choices.is_empty() && bare.extra.is_empty());
        for bad in [
            r#"{"choices":null}"#,
            r#"{"choices":[{"index":"0"}]}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"["not", "an", "object"]"#,
        ] {
            assert!(
                serde_json::from_str::<ChatCompletionChunk>(bad).is_err(),
                "{bad}"
            );
        }
    }
}
