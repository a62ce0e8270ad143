//! Canonical chunks to Anthropic's stream events.
//!
//! Anthropic clients expect `message_start`, then content blocks one after another (each
//! `content_block_start`, deltas, `content_block_stop`), then `message_delta` with the stop
//! reason and usage, then `message_stop`. Canonical chunks interleave text, reasoning and tool
//! call fragments freely, so this encoder opens and closes blocks as the kind of content
//! changes, and numbers tool calls' blocks so argument fragments land in the right one.

use std::collections::HashMap;

use bytes::BytesMut;
use serde_json::{json, Value};

use crate::canonical::{Api, ChatChunk, FinishReason, Usage};
use crate::error::Error;
use crate::sse::write_event;
use crate::surface::events::EventWriter;
use crate::wire::anthropic::{anthropic_id, finish_reason_to_wire, usage_to_wire};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// A tool call, by its canonical call index.
    Tool(u32),
}

#[derive(Default)]
pub struct MessageEvents {
    started: bool,
    open: Option<(Block, u32)>,
    next_index: u32,
    /// Tool call index → block index, for fragments that arrive after their block moved on.
    tool_blocks: HashMap<u32, u32>,
    stop: Option<FinishReason>,
    usage: Option<Usage>,
}

fn emit(out: &mut BytesMut, name: &str, data: &Value) {
    write_event(out, Some(name), data.to_string().as_bytes());
}

impl EventWriter for MessageEvents {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut) -> bool {
        self.on_chunk(&chunk, out);
        true
    }

    fn fail(&mut self, error: &Error, out: &mut BytesMut) {
        MessageEvents::fail(self, error, out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        MessageEvents::finish(self, out);
    }
}

impl MessageEvents {
    pub fn on_chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.start(chunk, out);
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return;
        };
        if let Some(text) = choice.reasoning.as_deref().filter(|t| !t.is_empty()) {
            let index = self.ensure_open(Block::Thinking, out);
            emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": text}}),
            );
        }
        if let Some(signature) = choice
            .reasoning_signature
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            let index = self.ensure_open(Block::Thinking, out);
            emit(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": signature}}),
            );
        }
        for text in [choice.text.as_deref(), choice.refusal.as_deref()]
            .into_iter()
            .flatten()
        {
            if !text.is_empty() {
                let index = self.ensure_open(Block::Text, out);
                emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
                );
            }
        }
        for call in &choice.tool_calls {
            let index = match self.tool_blocks.get(&call.index) {
                Some(&index) => index,
                None => {
                    self.close(out);
                    let index = self.next_index;
                    self.next_index += 1;
                    self.tool_blocks.insert(call.index, index);
                    self.open = Some((Block::Tool(call.index), index));
                    emit(
                        out,
                        "content_block_start",
                        &json!({
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {
                                "type": "tool_use",
                                "id": call.id.clone().unwrap_or_else(|| format!("toolu_{index}")),
                                "name": call.name.clone().unwrap_or_default(),
                                "input": {},
                            },
                        }),
                    );
                    index
                }
            };
            if !call.arguments.is_empty() {
                emit(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
                );
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.stop = Some(reason.clone());
        }
    }

    /// Closes the message after the last chunk.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.start(&ChatChunk::default(), out);
        }
        self.close(out);
        let (stop_reason, stop_sequence) =
            finish_reason_to_wire(self.stop.as_ref().unwrap_or(&FinishReason::Stop));
        let usage = usage_to_wire(&self.usage.unwrap_or_default());
        emit(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage,
            }),
        );
        emit(out, "message_stop", &json!({"type": "message_stop"}));
    }

    /// Ends the stream with an `error` event, as Anthropic does when it fails mid-stream.
    pub fn fail(&mut self, error: &Error, out: &mut BytesMut) {
        emit(out, "error", &error.body(Api::Anthropic));
    }

    fn start(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        self.started = true;
        let input = chunk.usage.map(|u| usage_to_wire(&u)).unwrap_or_default();
        emit(
            out,
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": anthropic_id(&chunk.id),
                    "type": "message",
                    "role": "assistant",
                    "model": chunk.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": input.input_tokens, "output_tokens": 0},
                },
            }),
        );
        emit(out, "ping", &json!({"type": "ping"}));
    }

    /// The index of an open block of `kind`, opening one (and closing another) if needed.
    fn ensure_open(&mut self, kind: Block, out: &mut BytesMut) -> u32 {
        if let Some((open, index)) = self.open {
            if open == kind {
                return index;
            }
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        let block = match kind {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        emit(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        index
    }

    fn close(&mut self, out: &mut BytesMut) {
        if let Some((_, index)) = self.open.take() {
            emit(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::{ChunkChoice, ToolCallDelta};
    use crate::sse::SseDecoder;

    fn chunk(choice: ChunkChoice) -> ChatChunk {
        ChatChunk {
            id: "abc".into(),
            model: "m".into(),
            choices: vec![choice],
            ..ChatChunk::default()
        }
    }

    fn events(out: &BytesMut) -> Vec<(String, Value)> {
        let mut decoder = SseDecoder::default();
        decoder.push(out.clone().freeze());
        let mut events = Vec::new();
        while let Some(e) = decoder.next_event() {
            events.push((
                e.event.unwrap_or_default(),
                serde_json::from_slice(&e.data).unwrap_or_default(),
            ));
        }
        events
    }

    #[test]
    fn text_then_two_tool_calls_make_three_blocks_in_order() {
        let mut encoder = MessageEvents::default();
        let mut out = BytesMut::new();
        encoder.on_chunk(
            &chunk(ChunkChoice {
                text: Some("Hi".into()),
                ..ChunkChoice::default()
            }),
            &mut out,
        );
        for (i, piece) in [(0, "{\"a\":"), (0, "1}"), (1, "{\"b\""), (1, ":2}")] {
            let first = !encoder.tool_blocks.contains_key(&i);
            encoder.on_chunk(
                &chunk(ChunkChoice {
                    tool_calls: vec![ToolCallDelta {
                        index: i,
                        id: first.then(|| format!("call_{i}")),
                        name: first.then(|| "f".to_owned()),
                        arguments: piece.into(),
                    }],
                    ..ChunkChoice::default()
                }),
                &mut out,
            );
        }
        encoder.on_chunk(
            &chunk(ChunkChoice {
                finish_reason: Some(FinishReason::ToolCalls),
                ..ChunkChoice::default()
            }),
            &mut out,
        );
        encoder.finish(&mut out);
        let names: Vec<String> = events(&out).iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let all = events(&out);
        let args: String = all
            .iter()
            .filter(|(_, d)| d["index"] == 2 && d["delta"]["type"] == "input_json_delta")
            .map(|(_, d)| {
                d["delta"]["partial_json"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(args, "{\"b\":2}");
        assert_eq!(all[13].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(all[0].1["message"]["id"], "msg_abc");
    }
}
