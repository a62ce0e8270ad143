//! The default behaviour for Anthropic's Messages API: answers like api.anthropic.com would,
//! and refuses what it refuses (unknown fields, missing `max_tokens`, bad turns).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::{json, Map, Value};

use crate::echo::{
    char_pieces, count_words, declines_tools, echo_text, fragment_size, requested_call,
    text_pieces, word_pieces,
};
use crate::script::{Answer, JSON};

/// Tool input JSON is streamed in pieces this long, as the real API splits it.
const INPUT_PIECE_CHARS: usize = 5;

/// Top-level request fields the API accepts; anything else is refused.
const KNOWN_FIELDS: [&str; 19] = [
    "model",
    "messages",
    "max_tokens",
    "system",
    "tools",
    "tool_choice",
    "stop_sequences",
    "temperature",
    "top_p",
    "top_k",
    "stream",
    "metadata",
    "thinking",
    "output_config",
    "service_tier",
    "container",
    "inference_geo",
    "cache_control",
    "context_management",
];

/// Answers `/v1/messages` and `/v1/messages/count_tokens`.
pub(crate) fn answer(
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    ids: &AtomicU64,
) -> Answer {
    if headers.get("x-api-key").is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "x-api-key header is required",
        );
    }
    if headers.get("anthropic-version").is_none() {
        return invalid("anthropic-version: header is required");
    }
    if method != Method::POST {
        return error(StatusCode::NOT_FOUND, "not_found_error", "Not found");
    }
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(request)) => request,
        _ => return invalid("The request body is not valid JSON."),
    };
    let counting = path == "/v1/messages/count_tokens";
    for key in request.keys() {
        let allowed = KNOWN_FIELDS.contains(&key.as_str())
            && !(counting && ["max_tokens", "stream", "stop_sequences"].contains(&key.as_str()));
        if !allowed {
            return invalid(&format!("{key}: Extra inputs are not permitted"));
        }
    }
    let messages = match check_messages(&request) {
        Ok(messages) => messages,
        Err(message) => return invalid(&message),
    };
    let input_tokens: u64 = messages
        .iter()
        .map(|m| count_words(&text_of(m.get("content"))) + 1)
        .sum::<u64>()
        + request
            .get("system")
            .map_or(0, |s| count_words(&text_of(Some(s))));
    if counting {
        return json_answer(&json!({ "input_tokens": input_tokens }));
    }
    let Some(max_tokens) = request.get("max_tokens").and_then(Value::as_u64) else {
        return invalid("max_tokens: Field required");
    };
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (blocks, stop_reason, stop_sequence) = decide(&request, messages, max_tokens);
    let output_tokens = blocks.iter().map(block_words).sum::<u64>().max(1);
    let id = format!("msg_mock_{}", ids.fetch_add(1, Ordering::Relaxed) + 1);
    let usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let fragments = messages
            .last()
            .and_then(|m| fragment_size(&text_of(m.get("content"))));
        return Answer::events(stream_events(
            fragments,
            &id,
            model,
            &blocks,
            &stop_reason,
            &stop_sequence,
            input_tokens,
            output_tokens,
        ));
    }
    json_answer(&json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }))
}

/// The checks the real API makes on turns: roles, non-empty text, tool results that answer
/// an earlier call.
fn check_messages(request: &Map<String, Value>) -> Result<&Vec<Value>, String> {
    let Some(Value::Array(messages)) = request.get("messages") else {
        return Err("messages: Field required".into());
    };
    if messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    let mut calls: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Current models take system turns mid-conversation (Claude Code sends them).
        if !["user", "assistant", "system"].contains(&role) {
            return Err(format!(
                "messages.{i}.role: Input should be 'user', 'assistant' or 'system'"
            ));
        }
        let blocks = match message.get("content") {
            Some(Value::String(text))
                if text.is_empty() && !(role == "assistant" && i + 1 == messages.len()) =>
            {
                return Err(format!(
                    "messages.{i}: text content blocks must be non-empty"
                ))
            }
            Some(Value::String(_)) => continue,
            Some(Value::Array(blocks)) => blocks,
            _ => return Err(format!("messages.{i}.content: Field required")),
        };
        for (j, block) in blocks.iter().enumerate() {
            match block.get("type").and_then(Value::as_str) {
                Some("text")
                    if block
                        .get("text")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty) =>
                {
                    return Err(format!(
                        "messages.{i}.content.{j}.text: text content blocks must be non-empty"
                    ))
                }
                Some(kind) if role == "system" && kind != "text" => {
                    return Err(format!(
                        "messages.{i}.content.{j}: system turns take only text blocks"
                    ))
                }
                Some("tool_use") => {
                    if role != "assistant" {
                        return Err(format!("messages.{i}.content.{j}: tool_use blocks are only allowed in assistant turns"));
                    }
                    if !block.get("input").is_some_and(Value::is_object) {
                        return Err(format!(
                            "messages.{i}.content.{j}.input: Input should be an object"
                        ));
                    }
                    calls.push(
                        block
                            .get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                Some("tool_result") => {
                    let id = block
                        .get("tool_use_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if role != "user" || !calls.iter().any(|c| c == id) {
                        return Err(format!("messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: {id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message."));
                    }
                }
                Some(_) => {}
                None => return Err(format!("messages.{i}.content.{j}.type: Field required")),
            }
        }
    }
    Ok(messages)
}

/// The answer's blocks, stop reason and stop sequence.
fn decide(
    request: &Map<String, Value>,
    messages: &[Value],
    max_tokens: u64,
) -> (Vec<Value>, String, Option<String>) {
    // The turn to answer: system turns may follow it.
    let last = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) != Some("system"))
        .cloned()
        .unwrap_or_default();
    let text = user_text(last.get("content"));
    let mut blocks = Vec::new();
    if request
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
        == Some("enabled")
    {
        blocks.push(json!({"type": "thinking", "thinking": format!("thinking about: {text}"), "signature": "sig-mock"}));
    }
    let tool_result = match last.get("content") {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .cloned(),
        _ => None,
    };
    if let Some(result) = tool_result {
        blocks.push(json!({"type": "text", "text": format!("tool result: {}", text_of(result.get("content")))}));
        return (blocks, "end_turn".into(), None);
    }
    let tools: Vec<&Value> = request
        .get("tools")
        .and_then(Value::as_array)
        .map(|t| t.iter().collect())
        .unwrap_or_default();
    let choice = request.get("tool_choice");
    let choice_type = choice
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("auto");
    let tool_names: Vec<&str> = tools
        .iter()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    if let Some((name, input)) =
        requested_call(&text, &tool_names).filter(|_| choice_type != "none")
    {
        blocks
            .push(json!({"type": "tool_use", "id": "toolu_mock_0", "name": name, "input": input}));
        return (blocks, "tool_use".into(), None);
    }
    if !tools.is_empty() && choice_type != "none" && !declines_tools(&text) {
        let named = choice
            .filter(|_| choice_type == "tool")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str);
        let parallel_off = choice
            .and_then(|c| c.get("disable_parallel_tool_use"))
            .and_then(Value::as_bool)
            == Some(true);
        let names: Vec<&str> = match named {
            Some(name) => vec![name],
            None => {
                let count = if text.contains("parallel") && tools.len() >= 2 && !parallel_off {
                    2
                } else {
                    1
                };
                tools
                    .iter()
                    .take(count)
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .collect()
            }
        };
        for (i, name) in names.iter().enumerate() {
            blocks.push(json!({"type": "tool_use", "id": format!("toolu_mock_{i}"), "name": name, "input": {"text": text, "tool": name}}));
        }
        return (blocks, "tool_use".into(), None);
    }
    let mut content = echo_text(text.clone(), request);
    let json_out = request
        .get("output_config")
        .and_then(|c| c.get("format"))
        .is_some();
    if json_out {
        content = json!({ "echo": text }).to_string();
    }
    let mut stop_reason = "end_turn".to_owned();
    let mut stop_sequence = None;
    for stop in request
        .get("stop_sequences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Some(at) = content.find(stop) {
            content.truncate(at);
            stop_reason = "stop_sequence".into();
            stop_sequence = Some(stop.to_owned());
        }
    }
    let words: Vec<&str> = content.split_whitespace().collect();
    if words.len() as u64 > max_tokens {
        content = words[..max_tokens as usize].join(" ");
        stop_reason = "max_tokens".into();
    }
    blocks.push(json!({"type": "text", "text": content}));
    (blocks, stop_reason, stop_sequence)
}

/// Events exactly as the API sends them: message_start, ping, each block (start, deltas,
/// stop), message_delta with the stop reason and output tokens, message_stop.
/// Text and tool input go out in pieces of `fragments` characters when the prompt asked.
#[allow(clippy::too_many_arguments)]
fn stream_events(
    fragments: Option<usize>,
    id: &str,
    model: &str,
    blocks: &[Value],
    stop_reason: &str,
    stop_sequence: &Option<String>,
    input_tokens: u64,
    output_tokens: u64,
) -> Vec<Bytes> {
    let mut events = vec![
        event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
            }}),
        ),
        event("ping", &json!({"type": "ping"})),
    ];
    for (index, block) in blocks.iter().enumerate() {
        let delta = |delta: Value| {
            event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            )
        };
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                events.push(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
                for piece in word_pieces(block["thinking"].as_str().unwrap_or_default()) {
                    events.push(delta(json!({"type": "thinking_delta", "thinking": piece})));
                }
                events.push(delta(
                    json!({"type": "signature_delta", "signature": block["signature"]}),
                ));
            }
            Some("tool_use") => {
                events.push(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})));
                let input = block["input"].to_string();
                for piece in char_pieces(&input, fragments.unwrap_or(INPUT_PIECE_CHARS)) {
                    events.push(delta(
                        json!({"type": "input_json_delta", "partial_json": piece}),
                    ));
                }
            }
            _ => {
                events.push(event("content_block_start", &json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                for piece in text_pieces(block["text"].as_str().unwrap_or_default(), fragments) {
                    events.push(delta(json!({"type": "text_delta", "text": piece})));
                }
            }
        }
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(event("message_delta", &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": {"output_tokens": output_tokens}})));
    events.push(event("message_stop", &json!({"type": "message_stop"})));
    events
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The text of the last user turn, with a note of its images.
fn user_text(content: Option<&Value>) -> String {
    let mut text = text_of(content);
    let images = match content {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("image"))
            .count(),
        _ => 0,
    };
    if images > 0 {
        text.push_str(&format!(" [{images} image(s)]"));
    }
    text
}

/// Text of a string or of the text blocks in an array, joined with spaces.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn block_words(block: &Value) -> u64 {
    match block.get("type").and_then(Value::as_str) {
        Some("tool_use") => count_words(&block["input"].to_string()),
        Some("thinking") => count_words(block["thinking"].as_str().unwrap_or_default()),
        _ => count_words(block["text"].as_str().unwrap_or_default()),
    }
}

fn json_answer(value: &Value) -> Answer {
    Answer::full(StatusCode::OK, JSON, Bytes::from(value.to_string()))
}

fn invalid(message: &str) -> Answer {
    error(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// Anthropic's error shape.
fn error(status: StatusCode, kind: &str, message: &str) -> Answer {
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    Answer::full(status, JSON, Bytes::from(body.to_string()))
}
