//! Decoding Anthropic's named stream events into canonical chunks.
//!
//! Anthropic streams content blocks by index (`content_block_start`, `_delta`, `_stop`); a
//! canonical chunk streams text, reasoning and tool calls by call index. Tool-use blocks are
//! numbered as calls in the order they start, and their `input_json_delta` pieces become the
//! call's argument fragments, unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use serde_json::Value;

use crate::canonical::{Api, ChatChunk, ChunkChoice, ChunkStream, Role, ToolCallDelta};
use crate::error::{Error, ErrorKind, Result};
use crate::providers::upstream_error;
use crate::sse::{SseError, SseEvent, SseStream};
use crate::wire::anthropic::{finish_reason_from_wire, usage_from_wire, UsageWire};

struct State<S> {
    events: SseStream<S>,
    provider: Arc<str>,
    id: String,
    model: String,
    usage: UsageWire,
    /// Content block index → tool call index.
    tools: HashMap<u64, u32>,
    done: bool,
}

pub fn decode<S>(provider: Arc<str>, bytes: S) -> ChunkStream
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
{
    let state = State {
        events: SseStream::new(bytes),
        provider,
        id: String::new(),
        model: String::new(),
        usage: UsageWire::default(),
        tools: HashMap::new(),
        done: false,
    };
    Box::pin(stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        loop {
            let event = match s.events.next().await {
                Some(Ok(event)) => event,
                Some(Err(SseError::Transport(e))) => {
                    s.done = true;
                    return Some((Err(upstream_error::transport(&s.provider, e)), s));
                }
                Some(Err(SseError::Truncated)) | None => {
                    s.done = true;
                    let error = Error::upstream(format!(
                        "provider `{}` ended the stream before the answer was complete",
                        s.provider
                    ));
                    return Some((Err(error), s));
                }
            };
            match s.step(&event) {
                Ok(Step::Skip) => continue,
                Ok(Step::Chunk(chunk)) => return Some((Ok(chunk), s)),
                Ok(Step::End(chunk)) => {
                    s.done = true;
                    return Some((Ok(chunk), s));
                }
                Err(e) => {
                    s.done = true;
                    return Some((Err(e), s));
                }
            }
        }
    }))
}

enum Step {
    Skip,
    Chunk(ChatChunk),
    /// The last chunk: usage, after `message_stop`.
    End(ChatChunk),
}

impl<S> State<S> {
    fn chunk(&self, choice: Option<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            model: self.model.clone(),
            created: crate::providers::unix_now(),
            choices: choice.into_iter().collect(),
            usage: None,
            extra: Default::default(),
            extra_api: Some(Api::Anthropic),
        }
    }

    fn step(&mut self, event: &SseEvent) -> Result<Step> {
        let data: Value = serde_json::from_str(&event.data).map_err(|e| {
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
                Step::Chunk(self.chunk(choice(&|c| {
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
                        Step::Chunk(self.chunk(choice(&|c| {
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
                            Step::Chunk(self.chunk(choice(&|c| c.text = Some(text.to_owned()))))
                        }
                        None => Step::Skip,
                    },
                    _ => Step::Skip,
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
                        Step::Chunk(self.chunk(choice(&|c| c.text = Some(text("text")))))
                    }
                    Some("thinking_delta") => {
                        Step::Chunk(self.chunk(choice(&|c| c.reasoning = Some(text("thinking")))))
                    }
                    Some("signature_delta") => Step::Chunk(
                        self.chunk(choice(&|c| c.reasoning_signature = Some(text("signature")))),
                    ),
                    Some("input_json_delta") => {
                        let call = self.tools.get(&index).copied().unwrap_or(0);
                        Step::Chunk(self.chunk(choice(&|c| {
                            c.tool_calls.push(ToolCallDelta {
                                index: call,
                                id: None,
                                name: None,
                                arguments: text("partial_json"),
                            });
                        })))
                    }
                    _ => Step::Skip,
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
                        Step::Chunk(self.chunk(choice(&|c| c.finish_reason = Some(finish.clone()))))
                    }
                    None => Step::Skip,
                }
            }
            "message_stop" => {
                let mut chunk = self.chunk(None);
                chunk.usage = Some(usage_from_wire(&self.usage));
                Step::End(chunk)
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
            _ => Step::Skip, // ping, content_block_stop, and event types added later
        })
    }
}
