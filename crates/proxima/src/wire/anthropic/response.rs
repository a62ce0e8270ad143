//! The Messages response and usage, and their conversion to and from canonical.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::canonical::{Api, ChatResponse, Choice, FinishReason, Message, Part, Role, Usage};

#[derive(Debug, Deserialize, Serialize)]
pub struct MessagesResponse {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "message")]
    pub kind: String,
    #[serde(default = "assistant")]
    pub role: String,
    #[serde(default)]
    pub model: String,
    pub content: Vec<Value>,
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: UsageWire,
    /// container, service tier and whatever comes next.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn message() -> String {
    "message".into()
}

fn assistant() -> String {
    "assistant".into()
}

/// Anthropic counts `input_tokens` without the cached ones; canonical usage includes them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct UsageWire {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub fn usage_from_wire(u: &UsageWire) -> Usage {
    let read = u.cache_read_input_tokens.unwrap_or(0);
    let created = u.cache_creation_input_tokens.unwrap_or(0);
    Usage {
        input_tokens: u.input_tokens + read + created,
        output_tokens: u.output_tokens,
        cached_input_tokens: u.cache_read_input_tokens,
        cache_creation_input_tokens: u.cache_creation_input_tokens,
        reasoning_tokens: None,
    }
}

pub fn usage_to_wire(u: &Usage) -> UsageWire {
    let read = u.cached_input_tokens.unwrap_or(0);
    let created = u.cache_creation_input_tokens.unwrap_or(0);
    UsageWire {
        input_tokens: u.input_tokens.saturating_sub(read + created),
        output_tokens: u.output_tokens,
        cache_creation_input_tokens: Some(created),
        cache_read_input_tokens: Some(read),
        extra: Map::new(),
    }
}

pub fn finish_reason_from_wire(reason: &str, sequence: Option<String>) -> FinishReason {
    match reason {
        "end_turn" => FinishReason::Stop,
        "stop_sequence" => FinishReason::StopSequence(sequence),
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// `stop_reason` and `stop_sequence`.
pub fn finish_reason_to_wire(reason: &FinishReason) -> (String, Option<String>) {
    match reason {
        FinishReason::Stop => ("end_turn".into(), None),
        FinishReason::StopSequence(sequence) => ("stop_sequence".into(), sequence.clone()),
        FinishReason::Length => ("max_tokens".into(), None),
        FinishReason::ToolCalls => ("tool_use".into(), None),
        FinishReason::ContentFilter => ("refusal".into(), None),
        FinishReason::Other(other) if other == "pause_turn" => (other.clone(), None),
        FinishReason::Other(_) => ("end_turn".into(), None),
    }
}

impl MessagesResponse {
    pub fn into_canonical(self) -> ChatResponse {
        let content = self
            .content
            .into_iter()
            .map(|block| match block.get("type").and_then(Value::as_str) {
                Some("text") => Part::text(
                    block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                ),
                Some("tool_use") => Part::ToolCall {
                    id: str_field(&block, "id"),
                    name: str_field(&block, "name"),
                    arguments: block
                        .get("input")
                        .map(Value::to_string)
                        .unwrap_or_else(|| "{}".into()),
                },
                Some("thinking") => Part::Reasoning {
                    text: str_field(&block, "thinking"),
                    signature: block
                        .get("signature")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    redacted: None,
                },
                Some("redacted_thinking") => Part::Reasoning {
                    text: String::new(),
                    signature: None,
                    redacted: Some(str_field(&block, "data")),
                },
                _ => Part::Opaque {
                    api: Api::Anthropic,
                    value: block,
                },
            })
            .collect();
        ChatResponse {
            id: self.id,
            model: self.model,
            created: crate::clock::unix_now(),
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: Role::Assistant,
                    content,
                    name: None,
                    extra: Map::new(),
                },
                finish_reason: self
                    .stop_reason
                    .as_deref()
                    .map(|r| finish_reason_from_wire(r, self.stop_sequence.clone())),
                extra: Map::new(),
            }],
            usage: Some(usage_from_wire(&self.usage)),
            extra: self.extra,
            extra_api: Some(Api::Anthropic),
            raw: None,
        }
    }

    /// The first choice as an Anthropic message (the API has only one).
    pub fn from_canonical(r: &ChatResponse) -> MessagesResponse {
        let choice = r.choices.first();
        let content = choice
            .map(|c| c.message.content.iter().filter_map(output_block).collect())
            .unwrap_or_default();
        let (stop_reason, stop_sequence) = match choice.and_then(|c| c.finish_reason.as_ref()) {
            Some(reason) => {
                let (r, s) = finish_reason_to_wire(reason);
                (Some(r), s)
            }
            None => (Some("end_turn".into()), None),
        };
        MessagesResponse {
            id: anthropic_id(&r.id),
            kind: message(),
            role: assistant(),
            model: r.model.clone(),
            content,
            stop_reason,
            stop_sequence,
            usage: r.usage.as_ref().map(usage_to_wire).unwrap_or_default(),
            extra: if r.extra_api == Some(Api::Anthropic) {
                r.extra.clone()
            } else {
                Map::new()
            },
        }
    }
}

/// Message ids start with `msg_` on this API; other providers' ids are prefixed to match.
pub fn anthropic_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

fn str_field(block: &Value, name: &str) -> String {
    block
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// An answer part as an output block: tool arguments become an `input` object.
fn output_block(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text { text, .. } => json!({"type": "text", "text": text}),
        Part::Refusal { text } => json!({"type": "text", "text": text}),
        Part::ToolCall {
            id,
            name,
            arguments,
        } => json!({
            "type": "tool_use",
            "id": id,
            "name": name,
            "input": tool_input(arguments),
        }),
        Part::Reasoning {
            redacted: Some(data),
            ..
        } => json!({"type": "redacted_thinking", "data": data}),
        Part::Reasoning {
            text, signature, ..
        } => json!({
            "type": "thinking",
            "thinking": text,
            "signature": signature.clone().unwrap_or_default(),
        }),
        Part::Opaque {
            api: Api::Anthropic,
            value,
        } => value.clone(),
        _ => return None,
    })
}

/// Tool arguments as the object Anthropic clients expect; text that is not a JSON object is
/// wrapped rather than lost.
pub fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "arguments": arguments }),
    }
}
