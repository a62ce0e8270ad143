//! `POST /chat/completions`: echo, tool calls and their results, rendered as JSON or as SSE.
//!
//! The reply is decided once into a [`Completion`]; the JSON and streaming renderers only
//! change its framing, so the two can never disagree on content.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use super::{json_answer, to_json};
use crate::echo::{
    char_pieces, count_words, declines_tools, echo_text, fragment_size, requested_call,
    stop_position, text_pieces, to_string, truncation_point,
};
use crate::script::{sse_frame, Answer};

/// Tool-call arguments are streamed in pieces this many characters long, so clients must
/// reassemble them across many chunks as they must with the real API.
const ARGUMENT_PIECE_CHARS: usize = 5;

/// OpenAI's upper bound on `n`; also keeps a hostile request from allocating without limit.
const MAX_CHOICES: u64 = 128;

pub(super) fn complete(request: &Value, model: &str, ids: &AtomicU64) -> Result<Answer, String> {
    let messages = match request.get("messages") {
        Some(Value::Array(messages)) => messages,
        _ => return Err("'messages' is a required property".to_owned()),
    };
    let completion = Completion {
        id: format!("chatcmpl-mock-{}", ids.fetch_add(1, Ordering::Relaxed) + 1),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model,
        choices: request
            .get("n")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, MAX_CHOICES) as usize,
        reply: decide(request, messages),
        fragments: messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .and_then(|m| fragment_size(&user_text(m.get("content")))),
        prompt_tokens: messages
            .iter()
            .map(|m| count_words(&content_text(m.get("content")).0) + 1)
            .sum(),
    };
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        Ok(Answer::events(completion.events(include_usage)))
    } else {
        Ok(json_answer(&completion.wire()))
    }
}

/// Everything the reply says, independent of how it is framed.
struct Completion<'a> {
    id: String,
    created: u64,
    model: &'a str,
    choices: usize,
    reply: Reply,
    prompt_tokens: u64,
    /// Stream text and arguments in pieces of this many characters (`mock-fragments: N`).
    fragments: Option<usize>,
}

enum Reply {
    Text {
        content: String,
        finish_reason: &'static str,
    },
    ToolCalls(Vec<ToolCall>),
}

struct ToolCall {
    id: String,
    name: String,
    arguments: String,
}

/// Picks tool calls, a tool-result acknowledgement or an echo, and applies `stop`/`max_tokens`.
fn decide(request: &Value, messages: &[Value]) -> Reply {
    let last = messages.last();
    let last_is_tool = last.and_then(|m| m.get("role")).and_then(Value::as_str) == Some("tool");
    let text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| user_text(m.get("content")))
        .unwrap_or_default();

    if !last_is_tool {
        if let Some(calls) = tool_calls(request, &text) {
            return Reply::ToolCalls(calls);
        }
    }

    let mut content = if let Some(tool_message) = last.filter(|_| last_is_tool) {
        format!(
            "tool result: {}",
            content_text(tool_message.get("content")).0
        )
    } else if matches!(
        request
            .pointer("/response_format/type")
            .and_then(Value::as_str),
        Some("json_object" | "json_schema")
    ) {
        to_string(&Echo { echo: &text })
    } else {
        echo_text(text, request)
    };

    if let Some(cut) = stop_position(&content, request.get("stop")) {
        content.truncate(cut);
    }
    let max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64);
    let mut finish_reason = "stop";
    if let Some(end) = max_tokens.and_then(|max| truncation_point(&content, max)) {
        content.truncate(end);
        finish_reason = "length";
    }
    Reply::Text {
        content,
        finish_reason,
    }
}

/// The calls to make, or `None` when the request offers no tools or forbids calling them.
fn tool_calls(request: &Value, text: &str) -> Option<Vec<ToolCall>> {
    let tools: Vec<&str> = request
        .get("tools")
        .and_then(Value::as_array)?
        .iter()
        .filter_map(|tool| {
            tool.pointer("/function/name")
                .or_else(|| tool.get("name"))
                .and_then(Value::as_str)
        })
        .collect();
    let first = *tools.first()?;
    let choice = request.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") || declines_tools(text) {
        return None;
    }
    if let Some((name, input)) = requested_call(text, &tools) {
        return Some(vec![ToolCall {
            id: "call_0".into(),
            name,
            arguments: input.to_string(),
        }]);
    }
    let named = choice
        .and_then(|choice| choice.pointer("/function/name"))
        .and_then(Value::as_str);
    let names = if let Some(name) = named {
        vec![name]
    } else {
        let parallel_allowed =
            request.get("parallel_tool_calls").and_then(Value::as_bool) != Some(false);
        let mentions_parallel = text
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| word.eq_ignore_ascii_case("parallel"));
        if parallel_allowed && mentions_parallel && tools.len() >= 2 {
            tools[..2].to_vec()
        } else {
            vec![first]
        }
    };
    let calls = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| ToolCall {
            id: format!("call_{i}"),
            name: name.to_owned(),
            arguments: to_string(&Arguments { text, tool: name }),
        })
        .collect();
    Some(calls)
}

/// The text of a user message, noting attached images so tests can see they arrived.
fn user_text(content: Option<&Value>) -> String {
    let (text, images) = content_text(content);
    match images {
        0 => text,
        n if text.is_empty() => format!("[{n} image(s)]"),
        n => format!("{text} [{n} image(s)]"),
    }
}

/// A message's text (string content, or text parts joined with a space) and its image count.
fn content_text(content: Option<&Value>) -> (String, usize) {
    match content {
        Some(Value::String(text)) => (text.clone(), 0),
        Some(Value::Array(parts)) => {
            let mut texts = Vec::new();
            let mut images = 0;
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text") => {
                        texts.extend(part.get("text").and_then(Value::as_str));
                    }
                    Some("image_url" | "input_image" | "image") => images += 1,
                    _ => {}
                }
            }
            (texts.join(" "), images)
        }
        _ => (String::new(), 0),
    }
}

impl Completion<'_> {
    fn finish_reason(&self) -> &'static str {
        match &self.reply {
            Reply::Text { finish_reason, .. } => finish_reason,
            Reply::ToolCalls(_) => "tool_calls",
        }
    }

    fn usage(&self) -> Usage {
        let per_choice = match &self.reply {
            Reply::Text { content, .. } => count_words(content),
            Reply::ToolCalls(calls) => calls
                .iter()
                .map(|call| count_words(&call.arguments))
                .sum::<u64>()
                .max(1),
        };
        let completion_tokens = per_choice * self.choices as u64;
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens,
            total_tokens: self.prompt_tokens + completion_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: 0 },
            completion_tokens_details: CompletionTokensDetails {
                reasoning_tokens: 0,
            },
        }
    }

    /// The non-streaming `chat.completion` object.
    fn wire(&self) -> WireCompletion<'_> {
        let (content, tool_calls) = match &self.reply {
            Reply::Text { content, .. } => (Some(content.as_str()), None),
            Reply::ToolCalls(calls) => {
                let calls = calls
                    .iter()
                    .map(|call| WireToolCall {
                        id: &call.id,
                        kind: "function",
                        function: WireFunction {
                            name: &call.name,
                            arguments: &call.arguments,
                        },
                    })
                    .collect();
                (None, Some(calls))
            }
        };
        let message = WireMessage {
            role: "assistant",
            content,
            refusal: (),
            tool_calls,
        };
        WireCompletion {
            id: &self.id,
            object: "chat.completion",
            created: self.created,
            model: self.model,
            system_fingerprint: "fp_mock",
            choices: (0..self.choices)
                .map(|index| WireChoice {
                    index,
                    message: message.clone(),
                    logprobs: (),
                    finish_reason: self.finish_reason(),
                })
                .collect(),
            usage: self.usage(),
            service_tier: "default",
        }
    }

    /// The `chat.completion.chunk` events, framed, ending with `[DONE]`.
    fn events(&self, include_usage: bool) -> Vec<Bytes> {
        // With include_usage OpenAI puts `"usage": null` on every chunk but the last.
        let no_usage = include_usage.then_some(None);
        let chunk = |choices: Vec<ChunkChoice<'_>>, usage: Option<Option<Usage>>| {
            let chunk = WireChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model,
                system_fingerprint: "fp_mock",
                service_tier: "default",
                choices,
                usage,
            };
            sse_frame(&to_json(&chunk))
        };
        let delta = |index: usize, delta: Delta<'_>| {
            let choice = ChunkChoice {
                index,
                delta,
                logprobs: (),
                finish_reason: None,
            };
            chunk(vec![choice], no_usage)
        };

        let mut events = Vec::new();
        for index in 0..self.choices {
            match &self.reply {
                Reply::Text { content, .. } => {
                    events.push(delta(
                        index,
                        Delta::Role {
                            role: "assistant",
                            content: Some(""),
                            refusal: (),
                        },
                    ));
                    for piece in text_pieces(content, self.fragments) {
                        events.push(delta(index, Delta::Content { content: piece }));
                    }
                }
                Reply::ToolCalls(calls) => {
                    // Real tool-call streams open with a null content rather than "".
                    events.push(delta(
                        index,
                        Delta::Role {
                            role: "assistant",
                            content: None,
                            refusal: (),
                        },
                    ));
                    for (call_index, call) in calls.iter().enumerate() {
                        let opening = ToolCallDelta {
                            index: call_index,
                            id: Some(&call.id),
                            kind: Some("function"),
                            function: FunctionDelta {
                                name: Some(&call.name),
                                arguments: "",
                            },
                        };
                        events.push(delta(
                            index,
                            Delta::ToolCalls {
                                tool_calls: [opening],
                            },
                        ));
                        for piece in char_pieces(
                            &call.arguments,
                            self.fragments.unwrap_or(ARGUMENT_PIECE_CHARS),
                        ) {
                            let more = ToolCallDelta {
                                index: call_index,
                                id: None,
                                kind: None,
                                function: FunctionDelta {
                                    name: None,
                                    arguments: piece,
                                },
                            };
                            events.push(delta(index, Delta::ToolCalls { tool_calls: [more] }));
                        }
                    }
                }
            }
            let finish = ChunkChoice {
                index,
                delta: Delta::Empty {},
                logprobs: (),
                finish_reason: Some(self.finish_reason()),
            };
            events.push(chunk(vec![finish], no_usage));
        }
        if include_usage {
            events.push(chunk(Vec::new(), Some(Some(self.usage()))));
        }
        events.push(sse_frame(b"[DONE]"));
        events
    }
}

#[derive(Serialize)]
struct Echo<'a> {
    echo: &'a str,
}

#[derive(Serialize)]
struct Arguments<'a> {
    text: &'a str,
    tool: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptTokensDetails,
    completion_tokens_details: CompletionTokensDetails,
}

#[derive(Serialize, Clone, Copy)]
struct PromptTokensDetails {
    cached_tokens: u64,
}

#[derive(Serialize, Clone, Copy)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
}

#[derive(Serialize)]
struct WireCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: Vec<WireChoice<'a>>,
    usage: Usage,
    service_tier: &'static str,
}

#[derive(Serialize)]
struct WireChoice<'a> {
    index: usize,
    message: WireMessage<'a>,
    logprobs: (),
    finish_reason: &'static str,
}

#[derive(Serialize, Clone)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: (),
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Serialize, Clone)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize, Clone)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct WireChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    service_tier: &'static str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent without include_usage; `null` on ordinary chunks with it; set on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: usize,
    delta: Delta<'a>,
    logprobs: (),
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Delta<'a> {
    Role {
        role: &'static str,
        content: Option<&'a str>,
        refusal: (),
    },
    Content {
        content: &'a str,
    },
    ToolCalls {
        tool_calls: [ToolCallDelta<'a>; 1],
    },
    Empty {},
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_pieces_respect_utf8() {
        assert_eq!(char_pieces("abcdefg", 5), ["abcde", "fg"]);
        assert_eq!(char_pieces("ééééééé", 5), ["ééééé", "éé"]);
        assert!(char_pieces("", 5).is_empty());
    }
}
