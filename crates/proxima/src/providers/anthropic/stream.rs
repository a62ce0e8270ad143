//! Decoding Anthropic's named stream events into canonical chunks.
//!
//! Anthropic streams content blocks by index (`content_block_start`, `_delta`, `_stop`); a
//! canonical chunk streams text, reasoning and tool calls by call index. Tool-use blocks are
//! numbered as calls in the order they start, and their `input_json_delta` pieces become the
//! call's argument fragments, unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use crate::canonical::{Api, ChatChunk, ChunkChoice, Role, ToolCallDelta};
use crate::error::{Error, ErrorKind, Result};
use crate::http_client::HttpError;
use crate::providers::events::{self, Decoded, EventDecoder};
use crate::providers::ChunkStream;
use crate::sse::{self, SseEvent};
use crate::wire::anthropic::{finish_reason_from_wire, usage_from_wire, UsageWire};

struct AnthropicEvents {
    provider: Arc<str>,
    id: String,
    model: String,
    usage: UsageWire,
    /// Content block index → tool call index.
    tools: HashMap<u64, u32>,
}

/// Chunks until `message_stop`; see [`events::decode`] for how streams end.
pub fn decode<S>(provider: Arc<str>, bytes: S) -> ChunkStream
where
    S: Stream<Item = std::result::Result<Bytes, HttpError>> + Send + Unpin + 'static,
{
    let decoder = AnthropicEvents {
        provider: provider.clone(),
        id: String::new(),
        model: String::new(),
        usage: UsageWire::default(),
        tools: HashMap::new(),
    };
    events::decode(provider, bytes, decoder)
}

impl EventDecoder for AnthropicEvents {
    fn on_event(&mut self, event: &SseEvent) -> Result<Decoded> {
        self.step(event)
    }

    /// Anthropic always ends with `message_stop`: a stream closed before it is incomplete.
    fn on_close(&mut self) -> Result<Option<ChatChunk>> {
        Err(events::incomplete(&self.provider))
    }
}

impl AnthropicEvents {
    fn chunk(&self, choice: Option<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            model: self.model.clone(),
            created: crate::clock::unix_now(),
            choices: choice.into_iter().collect(),
            usage: None,
            extra: Default::default(),
            extra_api: Some(Api::Anthropic),
            raw: None,
        }
    }

    fn step(&mut self, event: &SseEvent) -> Result<Decoded> {
        let data: Value = serde_json::from_str(&sse::text(&event.data)).map_err(|e| {
            Error::upstream(format!(
                "provider `{}` sent a stream event that is not JSON: {e}",
                self.provider
            ))
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or_default();
        let choice = |f: &dyn Fn(&mut ChunkChoice)| {
            let mut c = ChunkChoice::default();
            f(&mut c);
            Some(c)
        };
        Ok(match kind {
            "message_start" => {
                let message = data.get("message").cloned().unwrap_or_default();
                self.id = message
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                self.model = message
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if let Some(usage) = message.get("usage") {
                    self.usage = serde_json::from_value(usage.clone()).unwrap_or_default();
                }
                Decoded::Chunk(self.chunk(choice(&|c| {
                    c.role = Some(Role::Assistant);
                    c.text = Some(String::new());
                })))
            }
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let block = data.get("content_block").cloned().unwrap_or_default();
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let call = self.tools.len() as u32;
                        self.tools.insert(index, call);
                        let id = block.get("id").and_then(Value::as_str).map(str::to_owned);
                        let name = block.get("name").and_then(Value::as_str).map(str::to_owned);
                        Decoded::Chunk(self.chunk(choice(&|c| {
                            c.tool_calls.push(ToolCallDelta {
                                index: call,
                                id: id.clone(),
                                name: name.clone(),
                                arguments: String::new(),
                            });
                        })))
                    }
                    Some("text") => match block
                        .get("text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        Some(text) => {
                            Decoded::Chunk(self.chunk(choice(&|c| c.text = Some(text.to_owned()))))
                        }
                        None => Decoded::Skip,
                    },
                    _ => Decoded::Skip,
                }
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0);
                let delta = data.get("delta").cloned().unwrap_or_default();
                let text = |name: &str| {
                    delta
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        Decoded::Chunk(self.chunk(choice(&|c| c.text = Some(text("text")))))
                    }
                    Some("thinking_delta") => Decoded::Chunk(
                        self.chunk(choice(&|c| c.reasoning = Some(text("thinking")))),
                    ),
                    Some("signature_delta") => Decoded::Chunk(
                        self.chunk(choice(&|c| c.reasoning_signature = Some(text("signature")))),
                    ),
                    Some("input_json_delta") => {
                        let call = self.tools.get(&index).copied().unwrap_or(0);
                        Decoded::Chunk(self.chunk(choice(&|c| {
                            c.tool_calls.push(ToolCallDelta {
                                index: call,
                                id: None,
                                name: None,
                                arguments: text("partial_json"),
                            });
                        })))
                    }
                    _ => Decoded::Skip,
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage").and_then(Value::as_object) {
                    // Later counts replace earlier ones field by field.
                    let update: UsageWire =
                        serde_json::from_value(Value::Object(usage.clone())).unwrap_or_default();
                    if usage.contains_key("input_tokens") {
                        self.usage.input_tokens = update.input_tokens;
                    }
                    self.usage.output_tokens = update.output_tokens;
                    if update.cache_read_input_tokens.is_some() {
                        self.usage.cache_read_input_tokens = update.cache_read_input_tokens;
                    }
                    if update.cache_creation_input_tokens.is_some() {
                        self.usage.cache_creation_input_tokens = update.cache_creation_input_tokens;
                    }
                }
                let delta = data.get("delta").cloned().unwrap_or_default();
                match delta.get("stop_reason").and_then(Value::as_str) {
                    Some(reason) => {
                        let sequence = delta
                            .get("stop_sequence")
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        let finish = finish_reason_from_wire(reason, sequence);
                        Decoded::Chunk(
                            self.chunk(choice(&|c| c.finish_reason = Some(finish.clone()))),
                        )
                    }
                    None => Decoded::Skip,
                }
            }
            "message_stop" => {
                let mut chunk = self.chunk(None);
                chunk.usage = Some(usage_from_wire(&self.usage));
                Decoded::End(Some(chunk))
            }
            "error" => {
                let error_type = data
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                let kind = match error_type {
                    "rate_limit_error" => ErrorKind::UpstreamRateLimited,
                    "invalid_request_error" => ErrorKind::UpstreamRejected(400),
                    _ => ErrorKind::Upstream,
                };
                return Err(Error::new(
                    kind,
                    format!(
                        "provider `{}` failed mid-stream ({error_type}): {message}",
                        self.provider
                    ),
                ));
            }
            _ => Decoded::Skip, // ping, content_block_stop, and event types added later
        })
    }
}
