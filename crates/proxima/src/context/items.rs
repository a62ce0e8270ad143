//! Messages as stored items and back. A conversation is stored one item per thing the
//! Conversations API lists — a message, a function call, a call's output, a reasoning block, a
//! summary — so each has its id and position; a prompt wants them as messages again, with one
//! model turn (its reasoning, text and calls) in one assistant message, as backends require.

use serde_json::Map;

use super::assemble::Item;
use crate::canonical::{self, Message, Part, Role};
use crate::store::{ItemRecord, NewItem};

/// The item kind of a summary of earlier turns.
pub const SUMMARY: &str = "summary";

/// A fresh item id with the API's prefix for its kind.
pub fn item_id(kind: &str) -> String {
    let prefix = match kind {
        "function_call" => "fc",
        "function_call_output" => "fco",
        "reasoning" => "rs",
        SUMMARY => "sum",
        _ => "msg",
    };
    format!("{prefix}_{:032x}", fastrand::u128(..))
}

/// The tokens of one message, as the limits count them.
pub fn tokens(message: &Message) -> u64 {
    canonical::message_tokens(message, crate::tokenizer::count)
}

/// The text recall searches in a message: its words, the calls' names and arguments, and the
/// results' text.
pub fn search_text(message: &Message) -> String {
    let mut text = String::new();
    let mut add = |piece: &str| {
        if !piece.is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(piece);
        }
    };
    for part in &message.content {
        match part {
            Part::Text { text, .. } | Part::Refusal { text } => add(text),
            Part::ToolCall {
                name, arguments, ..
            } => {
                add(name);
                add(arguments);
            }
            Part::ToolResult { content, .. } => {
                for inner in content {
                    if let Part::Text { text, .. } = inner {
                        add(text);
                    }
                }
            }
            Part::Reasoning { .. } | Part::Image { .. } | Part::Opaque { .. } => {}
        }
    }
    text
}

/// Splits messages into the items they are stored as, in order.
pub fn split(messages: &[Message]) -> Vec<NewItem> {
    let mut items = Vec::new();
    for message in messages {
        let mut content: Vec<Part> = Vec::new();
        let flush = |content: &mut Vec<Part>, items: &mut Vec<NewItem>| {
            if !content.is_empty() {
                let role = if message.role == Role::Tool {
                    Role::User
                } else {
                    message.role
                };
                items.push(new_item(
                    "message",
                    with_content(message, role, std::mem::take(content)),
                ));
            }
        };
        for part in &message.content {
            let kind = match part {
                Part::ToolCall { .. } => "function_call",
                Part::ToolResult { .. } => "function_call_output",
                Part::Reasoning { .. } => "reasoning",
                _ => {
                    content.push(part.clone());
                    continue;
                }
            };
            flush(&mut content, &mut items);
            let role = match kind {
                "function_call_output" => Role::Tool,
                _ => Role::Assistant,
            };
            items.push(new_item(
                kind,
                with_content(message, role, vec![part.clone()]),
            ));
        }
        flush(&mut content, &mut items);
    }
    items
}

fn with_content(message: &Message, role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        name: message.name.clone(),
        extra: Map::new(),
    }
}

/// An item to store for `message`.
pub fn new_item(kind: &'static str, message: Message) -> NewItem {
    NewItem {
        id: item_id(kind),
        kind,
        terms: if kind == SUMMARY {
            // A summary is not recalled: it is always in the prompt anyway.
            Vec::new()
        } else {
            crate::words::terms(&search_text(&message), super::recall::MAX_ITEM_TERMS)
        },
        tokens: tokens(&message),
        message,
        covers: None,
    }
}

/// Whether `next` continues the message `last`: consecutive pieces of one model turn form one
/// assistant message, consecutive call outputs one tool message.
fn continues(last: &Message, next: &Message) -> bool {
    last.role == next.role
        && matches!(next.role, Role::Assistant | Role::Tool)
        && last.name == next.name
}

/// Joins messages made of stored items back into whole messages.
pub fn join(messages: Vec<Message>) -> Vec<Message> {
    let mut joined: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages {
        match joined.last_mut() {
            Some(last) if continues(last, &message) => last.content.extend(message.content),
            _ => joined.push(message),
        }
    }
    joined
}

/// Joins stored items into whole messages, each at its first item's position with the
/// tokens of all: the assembler keeps a model turn's calls with their outputs by message.
pub fn join_items(items: Vec<Item>) -> Vec<Item> {
    let mut joined: Vec<Item> = Vec::with_capacity(items.len());
    for item in items {
        match joined.last_mut() {
            Some(last) if continues(&last.message, &item.message) => {
                last.message.content.extend(item.message.content);
                last.tokens += item.tokens;
            }
            _ => joined.push(item),
        }
    }
    joined
}

/// Whether a stored item is part of the history a prompt is made from (summaries are not:
/// the newest one stands in for what it covers).
pub fn is_history(item: &ItemRecord) -> bool {
    item.kind != SUMMARY
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_model_turn_splits_into_items_and_joins_back() {
        let turn = vec![
            Message::text(Role::User, "list the files"),
            Message {
                role: Role::Assistant,
                content: vec![
                    Part::Reasoning {
                        text: "use ls".into(),
                        signature: Some("sig".into()),
                        redacted: None,
                    },
                    Part::text("Let me look."),
                    Part::ToolCall {
                        id: "call_1".into(),
                        name: "shell".into(),
                        arguments: "{\"cmd\":\"ls\"}".into(),
                    },
                    Part::ToolCall {
                        id: "call_2".into(),
                        name: "shell".into(),
                        arguments: "{\"cmd\":\"pwd\"}".into(),
                    },
                ],
                name: None,
                extra: Map::new(),
            },
            Message {
                role: Role::Tool,
                content: vec![
                    Part::ToolResult {
                        call_id: "call_1".into(),
                        content: vec![Part::text("a.txt")],
                        is_error: false,
                        cache: None,
                    },
                    Part::ToolResult {
                        call_id: "call_2".into(),
                        content: vec![Part::text("/home")],
                        is_error: false,
                        cache: None,
                    },
                ],
                name: None,
                extra: Map::new(),
            },
        ];
        let items = split(&turn);
        let kinds: Vec<&str> = items.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                "message",
                "reasoning",
                "message",
                "function_call",
                "function_call",
                "function_call_output",
                "function_call_output"
            ]
        );
        assert!(items[0].id.starts_with("msg_"));
        assert!(items[3].id.starts_with("fc_"));
        assert!(items[3].terms.iter().any(|(t, _)| t == "ls"));
        assert!(items.iter().all(|i| i.tokens > 0));
        let joined = join(items.into_iter().map(|i| i.message).collect());
        assert_eq!(joined.len(), 3);
        assert_eq!(joined[1].content.len(), 4);
        assert_eq!(joined[2].role, Role::Tool);
        assert_eq!(joined[2].content.len(), 2);
    }
}
