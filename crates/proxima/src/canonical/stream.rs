//! Canonical streaming chunks: the deltas of one or more choices, and usage at the end.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Api, ChatResponse, Choice, FinishReason, Message, Part, Role, Usage};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub choices: Vec<ChunkChoice>,
    /// Set on the chunk that reports usage, usually the last.
    pub usage: Option<Usage>,
    /// Unmodelled chunk and choice fields, and the API they came from.
    pub extra: Map<String, Value>,
    pub extra_api: Option<Api>,
    /// The upstream's own event data for this chunk, in the API of `extra_api`, when it goes
    /// to a client of that API as it came (as [`super::ChatResponse::raw`]): its choices then
    /// carry finish reasons, and their deltas only when a stage that keeps the answer had the
    /// chunk read whole.
    #[serde(skip)]
    pub raw: Option<bytes::Bytes>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    /// Set on the first delta of a choice.
    pub role: Option<Role>,
    pub text: Option<String>,
    pub reasoning: Option<String>,
    /// Reasoning signature, sent once the reasoning block is complete (Anthropic).
    pub reasoning_signature: Option<String>,
    pub refusal: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
    pub finish_reason: Option<FinishReason>,
    pub extra: Map<String, Value>,
}

/// A fragment of a tool call. The first fragment of a call carries its id and name; the
/// arguments arrive as text pieces to be concatenated in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Position of the call within the turn; fragments with the same index belong together.
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

/// Folds a stream's chunks back into the whole answer, for what keeps answers (a stored
/// conversation turn, a stored response) whether the client streamed or not.
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    model: String,
    created: u64,
    usage: Option<Usage>,
    choices: Vec<CollectedChoice>,
}

#[derive(Debug, Default)]
struct CollectedChoice {
    index: u32,
    text: String,
    reasoning: String,
    reasoning_signature: Option<String>,
    refusal: String,
    /// (id, name, arguments) by the call's index.
    calls: Vec<(u32, String, String, String)>,
    finish_reason: Option<FinishReason>,
}

impl Collector {
    /// Takes in one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        if self.id.is_empty() {
            self.id.clone_from(&chunk.id);
            self.model.clone_from(&chunk.model);
            self.created = chunk.created;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        for delta in &chunk.choices {
            let choice = match self.choices.iter().position(|c| c.index == delta.index) {
                Some(at) => &mut self.choices[at],
                None => {
                    self.choices.push(CollectedChoice {
                        index: delta.index,
                        ..CollectedChoice::default()
                    });
                    let last = self.choices.len() - 1;
                    &mut self.choices[last]
                }
            };
            choice.text.push_str(delta.text.as_deref().unwrap_or(""));
            choice
                .reasoning
                .push_str(delta.reasoning.as_deref().unwrap_or(""));
            if delta.reasoning_signature.is_some() {
                choice
                    .reasoning_signature
                    .clone_from(&delta.reasoning_signature);
            }
            choice
                .refusal
                .push_str(delta.refusal.as_deref().unwrap_or(""));
            for call in &delta.tool_calls {
                let at = match choice.calls.iter().position(|c| c.0 == call.index) {
                    Some(at) => at,
                    None => {
                        choice.calls.push((
                            call.index,
                            String::new(),
                            String::new(),
                            String::new(),
                        ));
                        choice.calls.len() - 1
                    }
                };
                let slot = &mut choice.calls[at];
                if let Some(id) = &call.id {
                    slot.1.clone_from(id);
                }
                if let Some(name) = &call.name {
                    slot.2.clone_from(name);
                }
                slot.3.push_str(&call.arguments);
            }
            if delta.finish_reason.is_some() {
                choice.finish_reason.clone_from(&delta.finish_reason);
            }
        }
    }

    /// The whole answer the chunks made.
    pub fn finish(self) -> ChatResponse {
        let choices = self
            .choices
            .into_iter()
            .map(|c| {
                let mut content = Vec::new();
                if !c.reasoning.is_empty() || c.reasoning_signature.is_some() {
                    content.push(Part::Reasoning {
                        text: c.reasoning,
                        signature: c.reasoning_signature,
                        redacted: None,
                    });
                }
                if !c.text.is_empty() {
                    content.push(Part::text(c.text));
                }
                if !c.refusal.is_empty() {
                    content.push(Part::Refusal { text: c.refusal });
                }
                for (_, id, name, arguments) in c.calls {
                    content.push(Part::ToolCall {
                        id,
                        name,
                        arguments,
                    });
                }
                Choice {
                    index: c.index,
                    message: Message {
                        role: Role::Assistant,
                        content,
                        name: None,
                        extra: Map::new(),
                    },
                    finish_reason: c.finish_reason,
                    extra: Map::new(),
                }
            })
            .collect();
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            choices,
            usage: self.usage,
            extra: Map::new(),
            extra_api: None,
            raw: None,
        }
    }
}

/// A whole answer as the chunks of a stream that [`Collector`] folds back into it: for each
/// choice its role, reasoning, text, refusal, each tool call whole, and its finish reason; then
/// the usage. How a stored answer is streamed again, in every surface's event format.
pub fn replay(answer: &ChatResponse) -> Vec<ChatChunk> {
    let base = ChatChunk {
        id: answer.id.clone(),
        model: answer.model.clone(),
        created: answer.created,
        ..ChatChunk::default()
    };
    let chunk = |delta: ChunkChoice| ChatChunk {
        choices: vec![delta],
        ..base.clone()
    };
    let mut chunks = Vec::new();
    for choice in &answer.choices {
        let delta = || ChunkChoice {
            index: choice.index,
            ..ChunkChoice::default()
        };
        chunks.push(chunk(ChunkChoice {
            role: Some(Role::Assistant),
            ..delta()
        }));
        let mut calls = 0;
        for part in &choice.message.content {
            match part {
                Part::Reasoning {
                    text, signature, ..
                } => chunks.push(chunk(ChunkChoice {
                    reasoning: Some(text.clone()),
                    reasoning_signature: signature.clone(),
                    ..delta()
                })),
                Part::Text { text, .. } => chunks.push(chunk(ChunkChoice {
                    text: Some(text.clone()),
                    ..delta()
                })),
                Part::Refusal { text } => chunks.push(chunk(ChunkChoice {
                    refusal: Some(text.clone()),
                    ..delta()
                })),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    chunks.push(chunk(ChunkChoice {
                        tool_calls: vec![ToolCallDelta {
                            index: calls,
                            id: Some(id.clone()),
                            name: Some(name.clone()),
                            arguments: arguments.clone(),
                        }],
                        ..delta()
                    }));
                    calls += 1;
                }
                // An answer holds no images, results or opaque parts.
                Part::Image { .. } | Part::ToolResult { .. } | Part::Opaque { .. } => {}
            }
        }
        chunks.push(chunk(ChunkChoice {
            finish_reason: choice.finish_reason.clone(),
            ..delta()
        }));
    }
    if answer.usage.is_some() {
        chunks.push(ChatChunk {
            usage: answer.usage,
            ..base
        });
    }
    chunks
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_answer_folds_back_into_itself() {
        let answer = ChatResponse {
            id: "c9".into(),
            model: "m".into(),
            created: 11,
            choices: (0..2)
                .map(|index| Choice {
                    index,
                    message: Message {
                        role: Role::Assistant,
                        content: vec![
                            Part::Reasoning {
                                text: "think".into(),
                                signature: Some("sig".into()),
                                redacted: None,
                            },
                            Part::text(format!("answer {index}")),
                            Part::ToolCall {
                                id: "call_a".into(),
                                name: "f".into(),
                                arguments: "{\"x\":1}".into(),
                            },
                            Part::ToolCall {
                                id: "call_b".into(),
                                name: "g".into(),
                                arguments: "{}".into(),
                            },
                        ],
                        name: None,
                        extra: Map::new(),
                    },
                    finish_reason: Some(FinishReason::ToolCalls),
                    extra: Map::new(),
                })
                .collect(),
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 6,
                ..Usage::default()
            }),
            extra: Map::new(),
            extra_api: None,
            raw: None,
        };
        let chunks = replay(&answer);
        assert_eq!(chunks[0].choices[0].role, Some(Role::Assistant));
        let mut collector = Collector::default();
        chunks.iter().for_each(|c| collector.push(c));
        let again = collector.finish();
        assert_eq!(
            serde_json::to_value(&again).unwrap(),
            serde_json::to_value(&answer).unwrap()
        );
    }

    #[test]
    fn chunks_fold_into_the_whole_answer() {
        let mut collector = Collector::default();
        let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
            id: "c1".into(),
            model: "m".into(),
            created: 7,
            choices,
            usage,
            ..ChatChunk::default()
        };
        collector.push(&chunk(
            vec![ChunkChoice {
                role: Some(Role::Assistant),
                text: Some("Hel".into()),
                ..ChunkChoice::default()
            }],
            None,
        ));
        collector.push(&chunk(
            vec![ChunkChoice {
                text: Some("lo".into()),
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    id: Some("call_1".into()),
                    name: Some("f".into()),
                    arguments: "{\"a\":".into(),
                }],
                ..ChunkChoice::default()
            }],
            None,
        ));
        collector.push(&chunk(
            vec![ChunkChoice {
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    arguments: "1}".into(),
                    ..ToolCallDelta::default()
                }],
                finish_reason: Some(FinishReason::ToolCalls),
                ..ChunkChoice::default()
            }],
            Some(Usage {
                input_tokens: 3,
                output_tokens: 4,
                ..Usage::default()
            }),
        ));
        let answer = collector.finish();
        assert_eq!(answer.id, "c1");
        assert_eq!(answer.usage.unwrap().output_tokens, 4);
        let choice = &answer.choices[0];
        assert_eq!(choice.finish_reason, Some(FinishReason::ToolCalls));
        assert_eq!(choice.message.joined_text(), "Hello");
        match &choice.message.content[1] {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => assert_eq!(
                (&id[..], &name[..], &arguments[..]),
                ("call_1", "f", "{\"a\":1}")
            ),
            other => panic!("not a call: {other:?}"),
        }
    }
}
