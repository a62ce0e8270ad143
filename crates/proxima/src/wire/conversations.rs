//! The Conversations API's objects: a conversation and its items, in OpenAI's shape. Items
//! are read with the Responses API's input parser (they share the shape) and written here.

use serde_json::{json, Value};

use crate::canonical::{Part, Role};
use crate::store::{ConversationRecord, ItemRecord};

/// A conversation object.
pub fn conversation(record: &ConversationRecord) -> Value {
    json!({
        "id": record.id,
        "object": "conversation",
        "created_at": record.created_at / 1000,
        "metadata": if record.metadata.is_object() { record.metadata.clone() } else { json!({}) },
    })
}

/// What `DELETE /v1/conversations/{id}` answers.
pub fn deleted(id: &str) -> Value {
    json!({"id": id, "object": "conversation.deleted", "deleted": true})
}

/// A page of a list, as every OpenAI list is answered: the ids of its first and last entry
/// let the SDK ask for the next page.
pub fn list(data: Vec<Value>, has_more: bool) -> Value {
    let first_id = data.first().map(|item| item["id"].clone());
    let last_id = data.last().map(|item| item["id"].clone());
    json!({
        "object": "list",
        "data": data,
        "first_id": first_id,
        "last_id": last_id,
        "has_more": has_more,
    })
}

/// A page of items.
pub fn item_list(items: &[ItemRecord], has_more: bool) -> Value {
    list(items.iter().map(item).collect(), has_more)
}

/// One item as the API shows it. A summary the gateway wrote shows as a system message.
pub fn item(record: &ItemRecord) -> Value {
    let message = &record.message;
    let first = message.content.first();
    match (record.kind.as_str(), first) {
        (
            "function_call",
            Some(Part::ToolCall {
                id,
                name,
                arguments,
            }),
        ) => json!({
            "type": "function_call",
            "id": record.id,
            "call_id": id,
            "name": name,
            "arguments": arguments,
            "status": "completed",
        }),
        (
            "function_call_output",
            Some(Part::ToolResult {
                call_id, content, ..
            }),
        ) => json!({
            "type": "function_call_output",
            "id": record.id,
            "call_id": call_id,
            "output": content.iter().filter_map(|p| match p {
                Part::Text { text, .. } => Some(text.as_str()),
                _ => None,
            }).collect::<Vec<_>>().join("\n"),
            "status": "completed",
        }),
        ("reasoning", Some(Part::Reasoning { text, .. })) => json!({
            "type": "reasoning",
            "id": record.id,
            "summary": [{"type": "summary_text", "text": text}],
        }),
        _ => {
            let assistant = message.role == Role::Assistant;
            let role = match message.role {
                Role::Tool => "user",
                role => role.as_str(),
            };
            let content: Vec<Value> = message
                .content
                .iter()
                .filter_map(|part| match part {
                    Part::Text { text, .. } if assistant => {
                        Some(json!({"type": "output_text", "text": text, "annotations": []}))
                    }
                    Part::Text { text, .. } => Some(json!({"type": "input_text", "text": text})),
                    Part::Refusal { text } => Some(json!({"type": "refusal", "refusal": text})),
                    Part::Image { source, detail, .. } => Some(json!({
                        "type": "input_image",
                        "image_url": source.to_url(),
                        "detail": detail.as_deref().unwrap_or("auto"),
                    })),
                    _ => None,
                })
                .collect();
            let mut value = json!({
                "type": "message",
                "id": record.id,
                "status": "completed",
                "role": role,
                "content": content,
            });
            if let (Some(covers), Some(object)) = (record.covers, value.as_object_mut()) {
                object.insert(
                    "proxima_summary_of".into(),
                    json!({"through_position": covers}),
                );
            }
            value
        }
    }
}
