//! The translation matrix (issue 3): one suite of cases stamped by [`matrix!`] onto every pair of
//! client surface (OpenAI chat, Anthropic messages, Responses) and provider kind (`openai`,
//! `anthropic`, `gemini` against the in-repo mock upstream, and the built-in `mock`).
//!
//! Each surface has a small client adapter ([`Surface`]) that writes requests the way that API's
//! SDK would and reads answers and streams back the way the SDK reassembles them, into one
//! normalised [`Turn`]. The cases then say the same thing for every pair: the echo comes back,
//! a stream says what the whole answer says, tools are called with the right arguments, and so
//! on. Tests are named `matrix::<surface>::<case>::<provider>`.
//!
//! Cases a pair cannot serve by design assert the clear error instead (stop sequences on the
//! Responses API, which has none; `n > 1` to Anthropic). The built-in `mock` provider only
//! echoes text, so the cases that need an upstream API are not stamped for it (see the
//! invocation of [`matrix!`] at the end).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use mock_upstream::{MockUpstream, Reply};
use serde_json::{json, Value};

use crate::harness::*;

// ------------------------------------------------------------------ fixtures

/// The public model every pair serves.
const MODEL: &str = "matrix";

/// A 1×1 PNG.
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

fn png_url() -> String {
    format!("data:image/png;base64,{PNG_BASE64}")
}

fn weather_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"]
    })
}

fn time_schema() -> Value {
    json!({"type": "object", "properties": {"zone": {"type": "string"}}})
}

/// The schema asked for in JSON mode where the surface needs one.
fn echo_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"echo": {"type": "string"}},
        "required": ["echo"],
        "additionalProperties": false
    })
}

/// The client surfaces: the APIs clients call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `POST /v1/chat/completions`
    Chat,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/responses`
    Responses,
}

/// The provider kinds behind the public model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
    Gemini,
    /// The built-in `mock` kind: no network, echoes the last user text.
    Mock,
}

impl Provider {
    fn named(name: &str) -> Provider {
        match name {
            "openai" => Provider::OpenAi,
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            "mock" => Provider::Mock,
            other => panic!("no provider kind {other}"),
        }
    }

    fn upstream_model(self) -> &'static str {
        match self {
            Provider::OpenAi => "gpt-4o-mini",
            Provider::Anthropic => "claude-sonnet-4-5",
            Provider::Gemini => "gemini-2.5-flash",
            Provider::Mock => "mock-1",
        }
    }

    /// Provider `up` of this kind (pointing at `mock` where it has an upstream) and public
    /// model [`MODEL`] served by it, without retries.
    fn conf(self, mock: &MockUpstream) -> Conf {
        let url = mock.url();
        let provider = match self {
            Provider::OpenAi => format!(
                "[providers.up]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\napi_key = \"{PROVIDER_KEY}\"\n"
            ),
            Provider::Anthropic => format!(
                "[providers.up]\nkind = \"anthropic\"\nbase_url = \"{url}/v1\"\napi_key = \"{PROVIDER_KEY}\"\n"
            ),
            Provider::Gemini => format!(
                "[providers.up]\nkind = \"gemini\"\nbase_url = \"{url}/v1beta\"\napi_key = \"{PROVIDER_KEY}\"\n"
            ),
            Provider::Mock => "[providers.up]\nkind = \"mock\"\n".to_owned(),
        };
        Conf::new()
            .section(&provider)
            .model_with(MODEL, "up", self.upstream_model(), "retries = 0")
    }

    /// Whether the upstream streams tool-call arguments in pieces. Gemini sends each call
    /// whole in one response, so the gateway has nothing to split.
    fn splits_tool_arguments(self) -> bool {
        matches!(self, Provider::OpenAi | Provider::Anthropic)
    }

    /// The path (and query) a chat request reaches the upstream on.
    fn upstream_path(self, stream: bool) -> (String, Option<&'static str>) {
        match self {
            Provider::OpenAi => ("/v1/chat/completions".into(), None),
            Provider::Anthropic => ("/v1/messages".into(), None),
            Provider::Gemini if stream => (
                format!(
                    "/v1beta/models/{}:streamGenerateContent",
                    self.upstream_model()
                ),
                Some("alt=sse"),
            ),
            Provider::Gemini => (
                format!("/v1beta/models/{}:generateContent", self.upstream_model()),
                None,
            ),
            Provider::Mock => unreachable!("the built-in mock has no upstream"),
        }
    }

    /// A 400 from the upstream in its own error shape, carrying `message`.
    fn bad_request(self, message: &str) -> Reply {
        match self {
            Provider::OpenAi => Reply::error(400, message),
            Provider::Anthropic => Reply::json(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}}),
            ),
            Provider::Gemini => Reply::gemini_error(400, message),
            Provider::Mock => unreachable!("the built-in mock has no upstream"),
        }
    }
}

/// What a test asks, independent of the surface it is asked on.
#[derive(Debug, Clone, Default)]
pub struct Req {
    pub model: String,
    pub text: String,
    pub stream: bool,
    /// Offer `get_weather` and `get_time`.
    pub tools: bool,
    /// Attach a PNG (as a data: URL, or base64 where the surface has no URLs for it).
    pub image: bool,
    /// Ask for a JSON answer.
    pub json: bool,
    pub stop: Option<String>,
    pub max_tokens: Option<u32>,
    /// A call the assistant made after the user's text, and the result sent back for it.
    pub follow_up: Option<(Call, String)>,
}

impl Req {
    pub fn new(text: &str) -> Req {
        Req {
            model: MODEL.into(),
            text: text.into(),
            ..Req::default()
        }
    }

    fn streaming(mut self) -> Req {
        self.stream = true;
        self
    }

    fn with_tools(mut self) -> Req {
        self.tools = true;
        self
    }
}

/// One tool call, arguments parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// Why the answer ended, in one vocabulary for all surfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    StopSequence,
    Other(String),
}

/// An answer as a client's SDK would hand it over, whichever surface it came from.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    pub text: String,
    pub calls: Vec<Call>,
    pub finish: Option<Finish>,
    /// The stop sequence that matched, where the surface reports it.
    pub stop_sequence: Option<String>,
    /// `(input, output)` tokens.
    pub usage: Option<(u64, u64)>,
    /// Streams only: the event that ended the stream.
    pub end: Option<String>,
    /// Streams only: how many non-empty argument pieces each call arrived in.
    pub argument_pieces: Vec<usize>,
}

impl Turn {
    /// Calls without their ids, which differ between requests for some upstreams.
    fn calls_by_name(&self) -> Vec<(String, Value)> {
        self.calls
            .iter()
            .map(|c| (c.name.clone(), c.arguments.clone()))
            .collect()
    }
}

fn parse_arguments(text: &str) -> Value {
    if text.is_empty() {
        return json!({});
    }
    serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("tool arguments are not JSON ({e}): {text:?}"))
}

// ------------------------------------------------------------------ surfaces: requests

impl Surface {
    fn named(name: &str) -> Surface {
        match name {
            "chat" => Surface::Chat,
            "messages" => Surface::Messages,
            "responses" => Surface::Responses,
            other => panic!("no surface {other}"),
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Surface::Chat => "/v1/chat/completions",
            Surface::Messages => "/v1/messages",
            Surface::Responses => "/v1/responses",
        }
    }

    /// The request with the headers this API's SDK sends.
    fn request(
        self,
        client: &reqwest::Client,
        base: &str,
        body: &Value,
    ) -> reqwest::RequestBuilder {
        let request = client
            .post(format!("{base}{}", self.path()))
            .header("content-type", "application/json")
            .body(body.to_string());
        match self {
            Surface::Chat | Surface::Responses => {
                request.header("authorization", "Bearer sk-matrix-client")
            }
            Surface::Messages => request
                .header("x-api-key", "sk-matrix-client")
                .header("anthropic-version", "2023-06-01"),
        }
    }

    /// The body for `req` in this API.
    pub fn body(self, req: &Req) -> Value {
        match self {
            Surface::Chat => chat_body(req),
            Surface::Messages => messages_body(req),
            Surface::Responses => responses_body(req),
        }
    }
}

fn chat_body(req: &Req) -> Value {
    let content = if req.image {
        json!([
            {"type": "text", "text": req.text},
            {"type": "image_url", "image_url": {"url": png_url()}}
        ])
    } else {
        json!(req.text)
    };
    let mut messages = vec![json!({"role": "user", "content": content})];
    if let Some((call, result)) = &req.follow_up {
        messages.push(
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": call.arguments.to_string()}
            }]}),
        );
        messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": result}));
    }
    let mut body = json!({"model": req.model, "messages": messages});
    if req.tools {
        body["tools"] = json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()}},
            {"type": "function", "function": {"name": "get_time", "description": "Current time in a zone", "parameters": time_schema()}}
        ]);
    }
    if req.json {
        body["response_format"] = json!({"type": "json_object"});
    }
    if let Some(stop) = &req.stop {
        body["stop"] = json!([stop]);
    }
    if let Some(max) = req.max_tokens {
        body["max_tokens"] = json!(max);
    }
    if req.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn messages_body(req: &Req) -> Value {
    let content = if req.image {
        json!([
            {"type": "text", "text": req.text},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
        ])
    } else {
        json!(req.text)
    };
    let mut messages = vec![json!({"role": "user", "content": content})];
    if let Some((call, result)) = &req.follow_up {
        messages.push(json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        ]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": call.id, "content": result}
        ]}));
    }
    let mut body = json!({
        "model": req.model,
        "max_tokens": req.max_tokens.unwrap_or(1024),
        "messages": messages,
    });
    if req.tools {
        body["tools"] = json!([
            {"name": "get_weather", "description": "Current weather in a city", "input_schema": weather_schema()},
            {"name": "get_time", "description": "Current time in a zone", "input_schema": time_schema()}
        ]);
    }
    if req.json {
        body["output_config"] = json!({"format": {"type": "json_schema", "schema": echo_schema()}});
    }
    if let Some(stop) = &req.stop {
        body["stop_sequences"] = json!([stop]);
    }
    if req.stream {
        body["stream"] = json!(true);
    }
    body
}

fn responses_body(req: &Req) -> Value {
    let content = if req.image {
        json!([
            {"type": "input_text", "text": req.text},
            {"type": "input_image", "image_url": png_url()}
        ])
    } else {
        json!(req.text)
    };
    let mut input = vec![json!({"role": "user", "content": content})];
    if let Some((call, result)) = &req.follow_up {
        input.push(json!({"type": "function_call", "call_id": call.id, "name": call.name, "arguments": call.arguments.to_string()}));
        input.push(json!({"type": "function_call_output", "call_id": call.id, "output": result}));
    }
    let mut body = json!({"model": req.model, "input": input});
    if req.tools {
        body["tools"] = json!([
            {"type": "function", "name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()},
            {"type": "function", "name": "get_time", "description": "Current time in a zone", "parameters": time_schema()}
        ]);
    }
    if req.json {
        body["text"] = json!({"format": {"type": "json_schema", "name": "echo", "schema": echo_schema(), "strict": true}});
    }
    if let Some(stop) = &req.stop {
        // The Responses API has no stop sequences; sent anyway to see it refused.
        body["stop"] = json!([stop]);
    }
    if let Some(max) = req.max_tokens {
        body["max_output_tokens"] = json!(max);
    }
    if req.stream {
        body["stream"] = json!(true);
    }
    body
}

// ------------------------------------------------------------------ surfaces: answers

impl Surface {
    /// A complete (non-streaming) answer.
    pub fn read(self, body: &Value) -> Turn {
        match self {
            Surface::Chat => read_chat(body),
            Surface::Messages => read_messages(body),
            Surface::Responses => read_responses(body),
        }
    }

    /// A whole SSE body, reassembled as this API's SDK does.
    pub fn read_stream(self, body: &[u8]) -> Turn {
        let events = sse_events(body);
        assert!(!events.is_empty(), "empty stream");
        match self {
            Surface::Chat => read_chat_stream(&events),
            Surface::Messages => read_messages_stream(&events),
            Surface::Responses => read_responses_stream(&events),
        }
    }

    /// Asserts `answer` is an error of `status` in this API's shape; returns its message.
    pub fn assert_error(self, answer: &Answer, status: u16) -> String {
        assert_eq!(answer.status, status, "status; body: {}", answer.text());
        let content_type = answer.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "content-type {content_type:?}; body: {}",
            answer.text()
        );
        let body = answer.json();
        let error = &body["error"];
        match self {
            Surface::Messages => {
                assert_eq!(body["type"], "error", "{body}");
                let kind = error["type"].as_str().unwrap_or_default();
                let expected = match status {
                    400 => "invalid_request_error",
                    404 => "not_found_error",
                    _ => kind,
                };
                assert_eq!(kind, expected, "{body}");
                assert!(
                    error.get("code").is_none(),
                    "not in Anthropic's shape: {body}"
                );
            }
            Surface::Chat | Surface::Responses => {
                assert!(error["type"].is_string(), "no type: {body}");
                assert!(error.get("code").is_some(), "no code: {body}");
                assert!(error.get("param").is_some(), "no param: {body}");
                assert!(body.get("type").is_none(), "not in OpenAI's shape: {body}");
            }
        }
        let message = error["message"].as_str().unwrap_or_default().to_owned();
        assert!(!message.is_empty(), "empty message: {body}");
        message
    }

    /// The OpenAI-shape error `code` (`None` on the Anthropic surface, which has none).
    fn error_code(self, answer: &Answer) -> Option<String> {
        match self {
            Surface::Messages => None,
            _ => answer.json()["error"]["code"].as_str().map(str::to_owned),
        }
    }
}

fn read_chat(body: &Value) -> Turn {
    assert_eq!(body["object"], "chat.completion", "{body}");
    let choice = &body["choices"][0];
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant", "{body}");
    let calls = message["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            assert_eq!(c["type"], "function", "{c}");
            Call {
                id: c["id"].as_str().expect("call id").to_owned(),
                name: c["function"]["name"].as_str().expect("name").to_owned(),
                arguments: parse_arguments(c["function"]["arguments"].as_str().expect("args")),
            }
        })
        .collect();
    Turn {
        text: message["content"].as_str().unwrap_or_default().to_owned(),
        calls,
        finish: choice["finish_reason"].as_str().map(chat_finish),
        usage: usage_of(&body["usage"], "prompt_tokens", "completion_tokens"),
        ..Turn::default()
    }
}

fn chat_finish(reason: &str) -> Finish {
    match reason {
        "stop" => Finish::Stop,
        "length" => Finish::Length,
        "tool_calls" => Finish::ToolCalls,
        other => Finish::Other(other.into()),
    }
}

fn messages_finish(reason: &str) -> Finish {
    match reason {
        "end_turn" => Finish::Stop,
        "max_tokens" => Finish::Length,
        "tool_use" => Finish::ToolCalls,
        "stop_sequence" => Finish::StopSequence,
        other => Finish::Other(other.into()),
    }
}

fn usage_of(usage: &Value, input: &str, output: &str) -> Option<(u64, u64)> {
    Some((usage.get(input)?.as_u64()?, usage.get(output)?.as_u64()?))
}

fn read_messages(body: &Value) -> Turn {
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["role"], "assistant", "{body}");
    let mut turn = Turn::default();
    for block in body["content"].as_array().expect("content blocks") {
        match block["type"].as_str() {
            Some("text") => turn.text.push_str(block["text"].as_str().expect("text")),
            Some("tool_use") => {
                assert!(block["input"].is_object(), "{block}");
                turn.calls.push(Call {
                    id: block["id"].as_str().expect("id").to_owned(),
                    name: block["name"].as_str().expect("name").to_owned(),
                    arguments: block["input"].clone(),
                });
            }
            _ => {}
        }
    }
    turn.finish = body["stop_reason"].as_str().map(messages_finish);
    turn.stop_sequence = body["stop_sequence"].as_str().map(str::to_owned);
    turn.usage = usage_of(&body["usage"], "input_tokens", "output_tokens");
    turn
}

fn read_responses(body: &Value) -> Turn {
    assert_eq!(body["object"], "response", "{body}");
    let mut turn = Turn::default();
    for item in body["output"].as_array().expect("output") {
        match item["type"].as_str() {
            Some("message") => {
                for part in item["content"].as_array().into_iter().flatten() {
                    if part["type"] == "output_text" {
                        turn.text.push_str(part["text"].as_str().expect("text"));
                    }
                }
            }
            Some("function_call") => turn.calls.push(Call {
                id: item["call_id"].as_str().expect("call_id").to_owned(),
                name: item["name"].as_str().expect("name").to_owned(),
                arguments: parse_arguments(item["arguments"].as_str().expect("arguments")),
            }),
            _ => {}
        }
    }
    turn.finish = Some(
        match (body["status"].as_str(), &body["incomplete_details"]) {
            (Some("completed"), _) if !turn.calls.is_empty() => Finish::ToolCalls,
            (Some("completed"), _) => Finish::Stop,
            (Some("incomplete"), details) if details["reason"] == "max_output_tokens" => {
                Finish::Length
            }
            (status, details) => Finish::Other(format!("{status:?} {details}")),
        },
    );
    turn.usage = usage_of(&body["usage"], "input_tokens", "output_tokens");
    turn
}

/// `(event name, data)` of each event of an SSE body. Comments are skipped; fields other than
/// `event` and `data` (and `id`, `retry`) are refused.
fn sse_events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = std::str::from_utf8(body)
        .expect("SSE is UTF-8")
        .replace("\r\n", "\n");
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let mut name = None;
        let mut data: Vec<&str> = Vec::new();
        for line in block.lines() {
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => name = Some(value.to_owned()),
                "data" => data.push(value),
                "id" | "retry" => {}
                other => panic!("unexpected SSE field {other:?} in {block:?}"),
            }
        }
        if !data.is_empty() {
            events.push((name, data.join("\n")));
        }
    }
    events
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"))
}

/// Chat chunks as the OpenAI SDKs accumulate them: content concatenated, tool-call fragments
/// merged by `index` (every string field concatenated, ids and names too, as the Python SDK
/// does; a call must have said its `type`, or the Node SDK refuses it), usage from the chunk
/// that has it, and `[DONE]` exactly once, at the end.
fn read_chat_stream(events: &[(Option<String>, String)]) -> Turn {
    let data: Vec<&str> = events
        .iter()
        .map(|(name, data)| {
            assert!(name.is_none(), "chat streams name no events: {name:?}");
            data.as_str()
        })
        .collect();
    assert_eq!(
        data.last(),
        Some(&"[DONE]"),
        "must end with [DONE]: {data:?}"
    );
    assert_eq!(data.iter().filter(|d| **d == "[DONE]").count(), 1);
    let mut turn = Turn {
        end: Some("[DONE]".into()),
        ..Turn::default()
    };
    let mut calls: BTreeMap<u64, (String, String, String, usize)> = BTreeMap::new();
    let mut typed: BTreeMap<u64, String> = BTreeMap::new();
    for chunk in data[..data.len() - 1].iter().map(|d| json_of(d)) {
        assert!(chunk.get("error").is_none(), "error in the stream: {chunk}");
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            if choice["index"] != 0 {
                continue;
            }
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str() {
                turn.text.push_str(text);
            }
            for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
                let index = fragment["index"].as_u64().expect("tool call index");
                let call = calls.entry(index).or_default();
                if let Some(kind) = fragment["type"].as_str() {
                    typed.insert(index, kind.to_owned());
                }
                if let Some(id) = fragment["id"].as_str() {
                    call.0.push_str(id);
                }
                if let Some(name) = fragment["function"]["name"].as_str() {
                    call.1.push_str(name);
                }
                if let Some(arguments) = fragment["function"]["arguments"].as_str() {
                    call.2.push_str(arguments);
                    call.3 += usize::from(!arguments.is_empty());
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                turn.finish = Some(chat_finish(reason));
            }
        }
        if let Some(usage) = usage_of(&chunk["usage"], "prompt_tokens", "completion_tokens") {
            turn.usage = Some(usage);
        }
    }
    for (index, (id, name, arguments, pieces)) in calls {
        assert_eq!(
            typed.get(&index).map(String::as_str),
            Some("function"),
            "streamed call {index} never said its type"
        );
        turn.calls.push(Call {
            id,
            name,
            arguments: parse_arguments(&arguments),
        });
        turn.argument_pieces.push(pieces);
    }
    turn
}

/// Anthropic events as the SDK's message stream accumulates them: blocks by index, text deltas
/// and `input_json_delta` pieces appended to their block, stop reason and usage from
/// `message_delta` (input tokens from `message_start` unless `message_delta` updates them), and
/// `message_stop` last.
fn read_messages_stream(events: &[(Option<String>, String)]) -> Turn {
    #[derive(Default)]
    struct Block {
        kind: String,
        text: String,
        id: String,
        name: String,
        json: String,
        pieces: usize,
        open: bool,
    }
    let mut blocks: BTreeMap<u64, Block> = BTreeMap::new();
    let mut turn = Turn::default();
    let (mut input, mut output) = (None, None);
    for (n, (name, data)) in events.iter().enumerate() {
        let event = json_of(data);
        let name = name.as_deref().expect("every Anthropic event is named");
        assert_eq!(Some(name), event["type"].as_str(), "event name and type");
        assert!(turn.end.is_none(), "{name} after message_stop");
        match name {
            "message_start" => {
                assert_eq!(n, 0, "message_start comes first");
                assert_eq!(event["message"]["role"], "assistant");
                input = event["message"]["usage"]["input_tokens"].as_u64();
            }
            "ping" => {}
            "content_block_start" => {
                let index = event["index"].as_u64().expect("index");
                let block = &event["content_block"];
                let kind = block["type"].as_str().expect("block type").to_owned();
                let fresh = Block {
                    text: block["text"].as_str().unwrap_or_default().to_owned(),
                    id: block["id"].as_str().unwrap_or_default().to_owned(),
                    name: block["name"].as_str().unwrap_or_default().to_owned(),
                    kind,
                    open: true,
                    ..Block::default()
                };
                assert!(
                    blocks.insert(index, fresh).is_none(),
                    "block {index} started twice"
                );
            }
            "content_block_delta" => {
                let index = event["index"].as_u64().expect("index");
                let block = blocks.get_mut(&index).expect("delta of a started block");
                assert!(block.open, "delta after content_block_stop");
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        assert_eq!(block.kind, "text");
                        block.text.push_str(delta["text"].as_str().expect("text"));
                    }
                    Some("input_json_delta") => {
                        assert_eq!(block.kind, "tool_use");
                        let piece = delta["partial_json"].as_str().expect("partial_json");
                        block.json.push_str(piece);
                        block.pieces += usize::from(!piece.is_empty());
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = event["index"].as_u64().expect("index");
                let block = blocks.get_mut(&index).expect("stop of a started block");
                assert!(block.open, "block {index} stopped twice");
                block.open = false;
            }
            "message_delta" => {
                turn.finish = event["delta"]["stop_reason"].as_str().map(messages_finish);
                turn.stop_sequence = event["delta"]["stop_sequence"].as_str().map(str::to_owned);
                output = event["usage"]["output_tokens"].as_u64();
                if let Some(tokens) = event["usage"]["input_tokens"].as_u64() {
                    input = Some(tokens);
                }
            }
            "message_stop" => turn.end = Some(name.into()),
            "error" => panic!("error event: {event}"),
            other => panic!("unknown event {other}: {event}"),
        }
    }
    for block in blocks.values() {
        assert!(!block.open, "block never stopped");
        match block.kind.as_str() {
            "text" => turn.text.push_str(&block.text),
            "tool_use" => {
                turn.calls.push(Call {
                    id: block.id.clone(),
                    name: block.name.clone(),
                    arguments: parse_arguments(&block.json),
                });
                turn.argument_pieces.push(block.pieces);
            }
            _ => {}
        }
    }
    turn.usage = input.zip(output);
    turn
}

/// Responses events as the SDK's response stream accumulates them: items opened by
/// `output_item.added`, text and argument deltas appended to their item, the stream ended by
/// `response.completed` (or `.incomplete` / `.failed`), whose response must say what the deltas
/// said. Every event's name is its `type`, and sequence numbers count up from 0.
fn read_responses_stream(events: &[(Option<String>, String)]) -> Turn {
    let mut items: Vec<Value> = Vec::new();
    let mut pieces: BTreeMap<usize, usize> = BTreeMap::new();
    let mut last: Option<(String, Value)> = None;
    for (n, (name, data)) in events.iter().enumerate() {
        let event = json_of(data);
        let kind = event["type"].as_str().expect("type").to_owned();
        assert_eq!(name.as_deref(), Some(kind.as_str()), "event name and type");
        assert_eq!(event["sequence_number"], n as u64, "sequence of {event}");
        assert!(last.is_none(), "{kind} after the end of the response");
        if n == 0 {
            assert_eq!(kind, "response.created");
        }
        let index = event["output_index"].as_u64().map(|i| i as usize);
        match kind.as_str() {
            "response.output_item.added" => {
                assert_eq!(index, Some(items.len()), "items are added in order");
                items.push(event["item"].clone());
            }
            "response.content_part.added" => {
                let item = &mut items[index.expect("output_index")];
                let content = item["content"].as_array_mut().expect("message content");
                assert_eq!(event["content_index"], content.len() as u64);
                content.push(event["part"].clone());
            }
            "response.output_text.delta" => {
                let item = &mut items[index.expect("output_index")];
                assert_eq!(event["item_id"], item["id"]);
                let part = event["content_index"].as_u64().expect("content_index") as usize;
                let text = &mut item["content"][part]["text"];
                let joined = format!(
                    "{}{}",
                    text.as_str().unwrap_or_default(),
                    event["delta"].as_str().expect("delta")
                );
                *text = joined.into();
            }
            "response.function_call_arguments.delta" => {
                let at = index.expect("output_index");
                let item = &mut items[at];
                assert_eq!(event["item_id"], item["id"]);
                let piece = event["delta"].as_str().expect("delta");
                let joined = format!("{}{piece}", item["arguments"].as_str().unwrap_or_default());
                item["arguments"] = joined.into();
                *pieces.entry(at).or_default() += usize::from(!piece.is_empty());
            }
            "response.function_call_arguments.done" => {
                let item = &items[index.expect("output_index")];
                assert_eq!(event["arguments"], item["arguments"], "{event}");
            }
            "response.output_text.done" => {
                let item = &items[index.expect("output_index")];
                let part = event["content_index"].as_u64().expect("content_index") as usize;
                assert_eq!(event["text"], item["content"][part]["text"], "{event}");
            }
            "response.output_item.done" => {
                let at = index.expect("output_index");
                let done = &event["item"];
                match done["type"].as_str() {
                    Some("message") => assert_eq!(
                        done["content"], items[at]["content"],
                        "the finished message says what its deltas said"
                    ),
                    Some("function_call") => assert_eq!(
                        done["arguments"], items[at]["arguments"],
                        "the finished call has the arguments its deltas had"
                    ),
                    _ => {}
                }
                items[at] = done.clone();
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                last = Some((kind.clone(), event["response"].clone()));
            }
            "error" => panic!("error event: {event}"),
            _ => {}
        }
    }
    let (end, response) = last.expect("the stream ends with response.completed/incomplete/failed");
    let accumulated = read_responses(&json!({
        "object": "response",
        "status": response["status"],
        "incomplete_details": response["incomplete_details"],
        "output": items,
        "usage": response["usage"],
    }));
    let mut turn = read_responses(&response);
    assert_eq!(
        turn.text, accumulated.text,
        "the final response says what the deltas said"
    );
    assert_eq!(turn.calls, accumulated.calls, "the final response's calls");
    turn.end = Some(end);
    turn.argument_pieces = items
        .iter()
        .enumerate()
        .filter(|(_, item)| item["type"] == "function_call")
        .map(|(i, _)| pieces.get(&i).copied().unwrap_or(0))
        .collect();
    turn
}

// ------------------------------------------------------------------ a pair

/// A mock upstream and a gateway serving [`MODEL`] from it, for one pair. Started once per
/// pair on first use and kept for the whole run, on a runtime of its own (each test has its own
/// runtime, which ends with the test): building a gateway costs far more than any case, as its
/// HTTP clients load the system's trust store. The tests of one pair take turns on it.
struct Running {
    mock: MockUpstream,
    base: String,
    turn: tokio::sync::Mutex<()>,
}

impl Running {
    fn start(provider: Provider) -> Running {
        let (started, ready) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("matrix-{provider:?}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let mock = MockUpstream::start().await.expect("mock starts");
                    let gw = Gateway::start(provider.conf(&mock)).await;
                    let _ = started.send((mock.clone(), gw.base.clone()));
                    // Serve until the test process exits.
                    let _keep = (mock, gw);
                    std::future::pending::<()>().await;
                });
            })
            .expect("spawn the pair's thread");
        let (mock, base) = ready.recv().expect("the pair started");
        Running {
            mock,
            base,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn get(surface: Surface, provider: Provider) -> &'static Running {
        const PAIRS: usize = 12;
        static RUNNING: [OnceLock<Running>; PAIRS] = [const { OnceLock::new() }; PAIRS];
        let index = surface as usize * 4 + provider as usize;
        RUNNING[index].get_or_init(|| Running::start(provider))
    }
}

/// One surface in front of one provider, for one test: the pair's mock upstream (cleared) and
/// gateway, held until the test ends.
pub struct Pair {
    pub surface: Surface,
    pub provider: Provider,
    pub mock: MockUpstream,
    base: String,
    client: reqwest::Client,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Pair {
    pub async fn start(surface: Surface, provider: Provider) -> Pair {
        let running = Running::get(surface, provider);
        let turn = running.turn.lock().await;
        running.mock.clear();
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Plain HTTP only: no trust store to load.
        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([])
            .build()
            .expect("client");
        Pair {
            surface,
            provider,
            mock: running.mock.clone(),
            base: running.base.clone(),
            client,
            _turn: turn,
        }
    }

    /// POSTs `body` to the surface, as its SDK would.
    pub async fn post(&self, body: &Value) -> Answer {
        Answer::read(self.surface.request(&self.client, &self.base, body)).await
    }

    pub async fn send(&self, req: &Req) -> Answer {
        self.post(&self.surface.body(req)).await
    }

    /// Asks and reads the answer (streamed or not), which must be a 200.
    pub async fn ask(&self, req: &Req) -> Turn {
        let answer = self.send(req).await;
        assert_eq!(
            answer.status,
            200,
            "{:?} × {:?}: {}",
            self.surface,
            self.provider,
            answer.text()
        );
        assert_eq!(answer.header("x-proxima-provider"), Some("up"));
        let content_type = answer.header("content-type").unwrap_or_default();
        if req.stream {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{content_type}"
            );
            self.surface.read_stream(&answer.body)
        } else {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}"
            );
            self.surface.read(&answer.json())
        }
    }

    /// The body of the last request the upstream received, checking where it went.
    fn upstream_request(&self, stream: bool) -> Value {
        let received = self.mock.received();
        let last = received.last().expect("the upstream was called");
        let (path, query) = self.provider.upstream_path(stream);
        assert_eq!(last.path, path);
        assert_eq!(last.query.as_deref(), query);
        last.json()
    }

    fn has_upstream(&self) -> bool {
        self.provider != Provider::Mock
    }
}

// ------------------------------------------------------------------ the cases

/// The cases, each run for one pair.
mod cases {
    use super::*;

    const ECHO: &str = "hello from the matrix";
    const RESULT: &str = "sunny, 21C";

    /// The last user text comes back, ending naturally.
    pub async fn text(p: &Pair) {
        let turn = p.ask(&Req::new(ECHO)).await;
        assert_eq!(turn.text, ECHO);
        assert!(turn.calls.is_empty(), "{turn:?}");
        assert_eq!(turn.finish, Some(Finish::Stop));
        assert_eq!(turn.stop_sequence, None);
        if p.has_upstream() {
            let sent = p.upstream_request(false);
            match p.provider {
                Provider::Gemini => assert!(sent.get("model").is_none(), "{sent}"),
                _ => assert_eq!(sent["model"], p.provider.upstream_model()),
            }
        }
    }

    /// A stream says what the whole answer says, and ends with the surface's end marker.
    pub async fn stream(p: &Pair) {
        let whole = p.ask(&Req::new(ECHO)).await;
        let streamed = p.ask(&Req::new(ECHO).streaming()).await;
        assert_eq!(streamed.text, ECHO);
        assert_eq!(streamed.text, whole.text);
        assert!(streamed.calls.is_empty(), "{streamed:?}");
        assert_eq!(streamed.finish, Some(Finish::Stop));
        let end = match p.surface {
            Surface::Chat => "[DONE]",
            Surface::Messages => "message_stop",
            Surface::Responses => "response.completed",
        };
        assert_eq!(streamed.end.as_deref(), Some(end));
        if p.has_upstream() {
            p.upstream_request(true);
        }
    }

    fn arguments(text: &str, tool: &str) -> Value {
        json!({"text": text, "tool": tool})
    }

    /// One call of the first tool, with the arguments the upstream produced.
    pub async fn tools(p: &Pair) {
        let text = "what is the weather in Paris?";
        let turn = p.ask(&Req::new(text).with_tools()).await;
        assert_eq!(turn.calls.len(), 1, "{turn:?}");
        let call = &turn.calls[0];
        assert!(!call.id.is_empty(), "a call has an id");
        assert_eq!(call.name, "get_weather");
        assert_eq!(call.arguments, arguments(text, "get_weather"));
        assert_eq!(turn.finish, Some(Finish::ToolCalls));
        assert_eq!(turn.text, "");
        // The upstream was offered both tools in its own shape.
        let sent = p.upstream_request(false);
        let names: Vec<&str> = match p.provider {
            Provider::OpenAi => sent["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["function"]["name"].as_str().expect("name"))
                .collect(),
            Provider::Anthropic => sent["tools"]
                .as_array()
                .expect("tools")
                .iter()
                .map(|t| t["name"].as_str().expect("name"))
                .collect(),
            Provider::Gemini => sent["tools"][0]["functionDeclarations"]
                .as_array()
                .expect("functionDeclarations")
                .iter()
                .map(|t| t["name"].as_str().expect("name"))
                .collect(),
            Provider::Mock => unreachable!(),
        };
        assert_eq!(names, ["get_weather", "get_time"]);
    }

    /// The same call streamed: the arguments arrive in pieces and reassemble to the same call.
    pub async fn streamed_tools(p: &Pair) {
        let text = "what is the weather in Paris?";
        let whole = p.ask(&Req::new(text).with_tools()).await;
        let streamed = p.ask(&Req::new(text).with_tools().streaming()).await;
        assert_eq!(streamed.calls_by_name(), whole.calls_by_name());
        assert_eq!(streamed.calls.len(), 1, "{streamed:?}");
        assert!(!streamed.calls[0].id.is_empty());
        assert_eq!(streamed.finish, Some(Finish::ToolCalls));
        let minimum = if p.provider.splits_tool_arguments() {
            2
        } else {
            1
        };
        assert!(
            streamed.argument_pieces[0] >= minimum,
            "arguments in {} pieces",
            streamed.argument_pieces[0]
        );
        assert_eq!(streamed.text, "");
    }

    /// Two calls in one turn, each reassembled on its own, streamed or not.
    pub async fn parallel_tools(p: &Pair) {
        let text = "weather and time, in parallel";
        let expected = vec![
            ("get_weather".to_owned(), arguments(text, "get_weather")),
            ("get_time".to_owned(), arguments(text, "get_time")),
        ];
        let whole = p.ask(&Req::new(text).with_tools()).await;
        assert_eq!(whole.calls_by_name(), expected);
        let streamed = p.ask(&Req::new(text).with_tools().streaming()).await;
        assert_eq!(streamed.calls_by_name(), expected);
        for turn in [&whole, &streamed] {
            assert_eq!(turn.finish, Some(Finish::ToolCalls));
            assert!(turn.calls.iter().all(|c| !c.id.is_empty()));
            assert_ne!(turn.calls[0].id, turn.calls[1].id, "ids are distinct");
        }
    }

    /// Calls that come without an id (Gemini's) get one from the gateway, and it must be unique
    /// in the conversation, not only in its answer: clients send every earlier call back, and
    /// Anthropic refuses a conversation whose `tool_use` ids repeat. Each answer here stands
    /// for a later turn of the same conversation.
    pub async fn minted_call_ids(p: &Pair) {
        let text = "weather and time, in parallel";
        let mut ids = Vec::new();
        for stream in [false, false, true, true] {
            let mut req = Req::new(text).with_tools();
            req.stream = stream;
            let turn = p.ask(&req).await;
            assert_eq!(turn.calls.len(), 2, "{turn:?}");
            ids.extend(turn.calls.into_iter().map(|c| c.id));
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ids.len(),
            "call ids repeat across turns: {ids:?}"
        );
    }

    /// The call's result goes back upstream in its own shape and the model answers it.
    pub async fn tool_result(p: &Pair) {
        let text = "what is the weather in Paris?";
        let first = p.ask(&Req::new(text).with_tools()).await;
        let call = first.calls.first().cloned().expect("a call");
        let mut follow_up = Req::new(text).with_tools();
        follow_up.follow_up = Some((call.clone(), RESULT.into()));
        let turn = p.ask(&follow_up).await;
        assert!(
            turn.text.starts_with("tool result: ") && turn.text.contains(RESULT),
            "{turn:?}"
        );
        assert!(turn.calls.is_empty(), "{turn:?}");
        assert_eq!(turn.finish, Some(Finish::Stop));
        let sent = p.upstream_request(false);
        match p.provider {
            Provider::OpenAi => {
                let messages = sent["messages"].as_array().expect("messages");
                let last = messages.last().expect("a message");
                assert_eq!(last["role"], "tool");
                assert_eq!(last["tool_call_id"], call.id.as_str());
                assert_eq!(last["content"], RESULT);
                let asked = &messages[messages.len() - 2]["tool_calls"][0];
                assert_eq!(asked["id"], call.id.as_str());
                assert_eq!(asked["function"]["name"], "get_weather");
            }
            Provider::Anthropic => {
                let messages = sent["messages"].as_array().expect("messages");
                let result = &messages.last().expect("a message")["content"][0];
                assert_eq!(result["type"], "tool_result");
                assert_eq!(result["tool_use_id"], call.id.as_str());
                let asked = &messages[messages.len() - 2]["content"][0];
                assert_eq!(asked["type"], "tool_use");
                assert_eq!(asked["id"], call.id.as_str());
            }
            Provider::Gemini => {
                let contents = sent["contents"].as_array().expect("contents");
                let last = contents.last().expect("a turn");
                assert_eq!(last["role"], "user");
                let response = &last["parts"][0]["functionResponse"];
                assert_eq!(response["name"], "get_weather", "{sent}");
                assert!(response["response"].to_string().contains(RESULT), "{sent}");
            }
            Provider::Mock => unreachable!(),
        }
        let streamed = p.ask(&follow_up.clone().streaming()).await;
        assert_eq!(streamed.text, turn.text);
        assert_eq!(streamed.finish, Some(Finish::Stop));
    }

    /// An image reaches the upstream in its own format.
    pub async fn image(p: &Pair) {
        let text = "what is in this picture?";
        let mut req = Req::new(text);
        req.image = true;
        let turn = p.ask(&req).await;
        assert_eq!(turn.text, format!("{text} [1 image(s)]"));
        let sent = p.upstream_request(false);
        let expected = match p.provider {
            Provider::OpenAi => json!({
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": png_url()}}
                ]
            }),
            Provider::Anthropic => json!({
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
                ]
            }),
            Provider::Gemini => json!({
                "role": "user",
                "parts": [
                    {"text": text},
                    {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}
                ]
            }),
            Provider::Mock => unreachable!(),
        };
        let turns = match p.provider {
            Provider::Gemini => &sent["contents"],
            _ => &sent["messages"],
        };
        assert_eq!(turns, &json!([expected]));
    }

    /// JSON mode: the answer is JSON.
    pub async fn json_mode(p: &Pair) {
        let text = "answer in JSON";
        let mut req = Req::new(text);
        req.json = true;
        for stream in [false, true] {
            req.stream = stream;
            let turn = p.ask(&req).await;
            let answer: Value = serde_json::from_str(&turn.text)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", turn.text));
            assert_eq!(answer, json!({"echo": text}));
            assert_eq!(turn.finish, Some(Finish::Stop));
        }
    }

    /// A stop sequence cuts the answer. The Responses API has no stop sequences: the request
    /// is refused, saying so, rather than answered uncut.
    pub async fn stop_sequences(p: &Pair) {
        let mut req = Req::new("alpha beta STOP gamma delta");
        req.stop = Some("STOP".into());
        if p.surface == Surface::Responses {
            let answer = p.send(&req).await;
            let message = p.surface.assert_error(&answer, 400);
            assert!(message.contains("stop"), "{message}");
            assert_eq!(answer.json()["error"]["param"], "stop");
            assert_eq!(
                p.mock.request_count(),
                0,
                "refused before any upstream call"
            );
            return;
        }
        for stream in [false, true] {
            req.stream = stream;
            let turn = p.ask(&req).await;
            assert_eq!(turn.text, "alpha beta ");
            match (p.surface, p.provider) {
                (Surface::Chat, _) => assert_eq!(turn.finish, Some(Finish::Stop)),
                // Only Anthropic says a stop sequence matched, and which.
                (Surface::Messages, Provider::Anthropic) => {
                    assert_eq!(turn.finish, Some(Finish::StopSequence));
                    assert_eq!(turn.stop_sequence.as_deref(), Some("STOP"));
                }
                _ => assert!(
                    matches!(turn.finish, Some(Finish::Stop | Finish::StopSequence)),
                    "{turn:?}"
                ),
            }
        }
    }

    /// A token limit cuts the answer, and the surface says so.
    pub async fn max_tokens(p: &Pair) {
        let words: Vec<String> = (1..=20).map(|i| format!("w{i}")).collect();
        let mut req = Req::new(&words.join(" "));
        req.max_tokens = Some(16);
        for stream in [false, true] {
            req.stream = stream;
            let turn = p.ask(&req).await;
            assert_eq!(turn.text, words[..16].join(" "));
            assert_eq!(turn.finish, Some(Finish::Length));
            if stream && p.surface == Surface::Responses {
                assert_eq!(turn.end.as_deref(), Some("response.incomplete"));
            }
        }
    }

    /// Usage is reported, streamed or not, and counts something.
    pub async fn usage(p: &Pair) {
        for stream in [false, true] {
            let mut req = Req::new(ECHO);
            req.stream = stream;
            let turn = p.ask(&req).await;
            let (input, output) = turn
                .usage
                .unwrap_or_else(|| panic!("no usage (stream: {stream}): {turn:?}"));
            assert!(input > 0, "input tokens (stream: {stream})");
            assert!(output > 0, "output tokens (stream: {stream})");
        }
    }

    /// Text ends with stop, calls with tool_calls, streamed or not.
    pub async fn finish_reasons(p: &Pair) {
        for stream in [false, true] {
            let mut text = Req::new(ECHO);
            text.stream = stream;
            assert_eq!(p.ask(&text).await.finish, Some(Finish::Stop));
            let mut tools = Req::new("weather?").with_tools();
            tools.stream = stream;
            assert_eq!(p.ask(&tools).await.finish, Some(Finish::ToolCalls));
        }
    }

    /// An upstream 400 comes back as a 400 in the surface's error shape, with the upstream's
    /// message, streamed or not.
    pub async fn upstream_error(p: &Pair) {
        let upstream_message = "temperature: must be at most 2 (matrix)";
        for stream in [false, true] {
            p.mock.enqueue(p.provider.bad_request(upstream_message));
            let mut req = Req::new(ECHO);
            req.stream = stream;
            let answer = p.send(&req).await;
            let message = p.surface.assert_error(&answer, 400);
            assert!(
                message.contains(upstream_message),
                "the upstream's message is passed on: {message}"
            );
            if let Some(code) = p.surface.error_code(&answer) {
                assert_eq!(code, "invalid_request");
            }
        }
        assert_eq!(p.mock.request_count(), 2, "a 400 is not retried");
    }

    /// An unknown model is a 404 in the surface's shape.
    pub async fn model_not_found(p: &Pair) {
        for stream in [false, true] {
            let mut req = Req::new(ECHO);
            req.model = "no-such-model".into();
            req.stream = stream;
            let answer = p.send(&req).await;
            let message = p.surface.assert_error(&answer, 404);
            assert!(message.contains("no-such-model"), "{message}");
            if let Some(code) = p.surface.error_code(&answer) {
                assert_eq!(code, "model_not_found");
            }
        }
        assert_eq!(p.mock.request_count(), 0);
    }

    /// The exact body a rich request becomes upstream (see [`super::wire`]).
    pub async fn wire_body(p: &Pair) {
        super::wire::check(p).await;
    }
}

// ------------------------------------------------------------------ wire snapshots

/// One rich request per surface (system prompt, several turns, tools, an assistant tool call
/// and its result, an image, stop sequences, temperature, a token limit), and the exact body
/// each provider receives for it. Nothing of another API may leak into a body.
mod wire {
    use super::*;

    const SYSTEM: &str = "You are a terse assistant.";
    const QUESTION: &str = "What is the weather in Paris? Here is the sky.";

    fn tools_openai() -> Value {
        json!([
            {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()}},
            {"type": "function", "function": {"name": "get_time", "description": "Current time in a zone", "parameters": time_schema()}}
        ])
    }

    /// The rich request, streamed, as each surface's client writes it.
    fn request(surface: Surface) -> Value {
        match surface {
            Surface::Chat => json!({
                "model": MODEL,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello. What do you need?"},
                    {"role": "user", "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image_url", "image_url": {"url": png_url()}}
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21C"}
                ],
                "tools": tools_openai(),
                "stop": ["END"],
                "temperature": 0.2,
                "max_completion_tokens": 200,
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
            Surface::Messages => json!({
                "model": MODEL,
                "max_tokens": 200,
                "system": [{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}],
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello. What do you need?"},
                    {"role": "user", "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_w1", "content": "sunny, 21C"}
                    ]}
                ],
                "tools": [
                    {"name": "get_weather", "description": "Current weather in a city", "input_schema": weather_schema()},
                    {"name": "get_time", "description": "Current time in a zone", "input_schema": time_schema()}
                ],
                "stop_sequences": ["END"],
                "temperature": 0.2,
                "stream": true
            }),
            // No stop sequences: the Responses API has none.
            Surface::Responses => json!({
                "model": MODEL,
                "instructions": SYSTEM,
                "input": [
                    {"role": "user", "content": "Hi"},
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello. What do you need?"}]},
                    {"role": "user", "content": [
                        {"type": "input_text", "text": QUESTION},
                        {"type": "input_image", "image_url": png_url()}
                    ]},
                    {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                    {"type": "function_call_output", "call_id": "call_w1", "output": "sunny, 21C"}
                ],
                "tools": [
                    {"type": "function", "name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()},
                    {"type": "function", "name": "get_time", "description": "Current time in a zone", "parameters": time_schema()}
                ],
                "temperature": 0.2,
                "max_output_tokens": 200,
                "store": false,
                "stream": true
            }),
        }
    }

    /// What `provider` must receive for the rich request of `surface`, streamed. The three
    /// surfaces say the same thing, so each provider gets the same body from all of them, but
    /// for what a surface cannot say or says its own way (noted where it differs).
    fn expected(surface: Surface, provider: Provider) -> Value {
        let mut body = match provider {
            Provider::OpenAi => json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello. What do you need?"},
                    {"role": "user", "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image_url", "image_url": {"url": png_url()}}
                    ]},
                    {"role": "assistant", "tool_calls": [
                        {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_w1", "content": "sunny, 21C"}
                ],
                "tools": tools_openai(),
                "stop": "END",
                "temperature": 0.2,
                "max_tokens": 200,
                "stream": true,
                "stream_options": {"include_usage": true}
            }),
            Provider::Anthropic => json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 200,
                "system": [{"type": "text", "text": SYSTEM}],
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello. What do you need?"}]},
                    {"role": "user", "content": [
                        {"type": "text", "text": QUESTION},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_BASE64}}
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {"city": "Paris"}}
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_w1", "content": [{"type": "text", "text": "sunny, 21C"}]}
                    ]}
                ],
                "tools": [
                    {"name": "get_weather", "description": "Current weather in a city", "input_schema": weather_schema()},
                    {"name": "get_time", "description": "Current time in a zone", "input_schema": time_schema()}
                ],
                "stop_sequences": ["END"],
                "temperature": 0.2,
                "stream": true
            }),
            Provider::Gemini => json!({
                "systemInstruction": {"parts": [{"text": SYSTEM}]},
                "contents": [
                    {"role": "user", "parts": [{"text": "Hi"}]},
                    {"role": "model", "parts": [{"text": "Hello. What do you need?"}]},
                    {"role": "user", "parts": [
                        {"text": QUESTION},
                        {"inlineData": {"mimeType": "image/png", "data": PNG_BASE64}}
                    ]},
                    {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"output": "sunny, 21C"}}}
                    ]}
                ],
                "tools": [{"functionDeclarations": [
                    {"name": "get_weather", "description": "Current weather in a city", "parameters": weather_schema()},
                    {"name": "get_time", "description": "Current time in a zone", "parameters": time_schema()}
                ]}],
                "generationConfig": {"stopSequences": ["END"], "maxOutputTokens": 200, "temperature": 0.2}
            }),
            Provider::Mock => unreachable!("the built-in mock has no upstream"),
        };
        let object = body.as_object_mut().expect("an object");
        match (surface, provider) {
            // A chat client's request goes to a chat upstream as the client wrote it, but for
            // the model: its name for the limit, its list of one stop sequence, its null content.
            (Surface::Chat, Provider::OpenAi) => {
                object.remove("max_tokens");
                object.insert("max_completion_tokens".into(), json!(200));
                object.insert("stop".into(), json!(["END"]));
                object["messages"][4]["content"] = Value::Null;
            }
            // An Anthropic client's cache hint goes to Anthropic only.
            (Surface::Messages, Provider::Anthropic) => {
                object["system"][0]["cache_control"] = json!({"type": "ephemeral"});
            }
            // The Responses API has no stop sequences.
            (Surface::Responses, Provider::OpenAi) => {
                object.remove("stop");
            }
            (Surface::Responses, Provider::Anthropic) => {
                object.remove("stop_sequences");
            }
            (Surface::Responses, Provider::Gemini) => {
                object["generationConfig"]
                    .as_object_mut()
                    .expect("generationConfig")
                    .remove("stopSequences");
            }
            _ => {}
        }
        body
    }

    /// The same request without streaming differs only in the streaming fields (for Gemini,
    /// only in the URL).
    fn unstreamed(provider: Provider, mut body: Value) -> Value {
        if let Some(object) = body.as_object_mut() {
            if provider != Provider::Gemini {
                object.remove("stream");
                object.remove("stream_options");
            }
        }
        body
    }

    pub async fn check(p: &Pair) {
        let mut request = request(p.surface);
        let answer = p.post(&request).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let streamed = p.upstream_request(true);
        let expected = expected(p.surface, p.provider);
        assert_eq!(
            streamed,
            expected,
            "{:?} × {:?} sent:\n{}",
            p.surface,
            p.provider,
            serde_json::to_string_pretty(&streamed).unwrap_or_default()
        );

        request["stream"] = json!(false);
        if let Some(object) = request.as_object_mut() {
            object.remove("stream_options");
        }
        let answer = p.post(&request).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let whole = p.upstream_request(false);
        let mut expected = unstreamed(p.provider, expected);
        if (p.surface, p.provider) == (Surface::Chat, Provider::OpenAi) {
            // As the client wrote it.
            expected["stream"] = json!(false);
        }
        assert_eq!(whole, expected);

        // Credentials in the provider's own header, and nothing else's.
        let received = p.mock.received();
        let last = received.last().expect("a request");
        match p.provider {
            Provider::OpenAi => {
                assert_eq!(
                    last.header("authorization"),
                    Some(format!("Bearer {PROVIDER_KEY}").as_str())
                );
                assert_eq!(last.header("x-api-key"), None);
            }
            Provider::Anthropic => {
                assert_eq!(last.header("x-api-key"), Some(PROVIDER_KEY));
                assert_eq!(last.header("anthropic-version"), Some("2023-06-01"));
                assert_eq!(last.header("authorization"), None);
            }
            Provider::Gemini => {
                assert_eq!(last.header("x-goog-api-key"), Some(PROVIDER_KEY));
                assert_eq!(last.header("authorization"), None);
            }
            Provider::Mock => unreachable!(),
        }
    }
}

// ------------------------------------------------------------------ n > 1

/// Several choices exist only on chat completions: served where the upstream can, refused
/// with a clear error by Anthropic, which answers once per request.
#[tokio::test]
async fn chat_n_choices() {
    for provider in [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::Mock,
    ] {
        let p = Pair::start(Surface::Chat, provider).await;
        let mut body = Surface::Chat.body(&Req::new("twice please"));
        body["n"] = json!(2);
        let answer = p.post(&body).await;
        if provider == Provider::Anthropic {
            let message = Surface::Chat.assert_error(&answer, 400);
            assert!(message.contains("`n`"), "{message}");
            assert_eq!(answer.json()["error"]["param"], "n");
            assert_eq!(p.mock.request_count(), 0);
            continue;
        }
        assert_eq!(answer.status, 200, "{provider:?}: {}", answer.text());
        let choices = answer.json()["choices"].clone();
        let texts: Vec<&str> = choices
            .as_array()
            .expect("choices")
            .iter()
            .map(|c| c["message"]["content"].as_str().expect("content"))
            .collect();
        assert_eq!(texts, ["twice please", "twice please"], "{provider:?}");
    }
}

// ------------------------------------------------------------------ system turns

/// Claude Code's first request puts its environment in a system turn after the user's, with
/// `cache_control`. Every provider answers the user, and receives the system text at its place
/// in its own shape: a system turn (Anthropic), a system message (OpenAI), a user turn saying
/// `System:` (Gemini, which has no instruction role mid-conversation).
#[tokio::test]
async fn messages_system_turn_mid_conversation() {
    const ENVIRONMENT: &str = "Today is 2026-12-03.";
    for provider in [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Gemini,
        Provider::Mock,
    ] {
        let p = Pair::start(Surface::Messages, provider).await;
        let mut body = Surface::Messages.body(&Req::new("hello there"));
        body["system"] = json!("You are a coding agent.");
        body["messages"].as_array_mut().expect("messages").push(json!({
            "role": "system",
            "content": [{"type": "text", "text": ENVIRONMENT, "cache_control": {"type": "ephemeral"}}]
        }));
        let answer = p.post(&body).await;
        assert_eq!(answer.status, 200, "{provider:?}: {}", answer.text());
        // Gemini's mock echoes its whole last user turn, which the system text joined.
        let text = Surface::Messages.read(&answer.json()).text;
        assert!(text.starts_with("hello there"), "{provider:?}: {text}");
        if !p.has_upstream() {
            continue;
        }
        let sent = p.upstream_request(false);
        let expected = match provider {
            Provider::Anthropic => json!([
                {"role": "user", "content": [{"type": "text", "text": "hello there"}]},
                {"role": "system", "content": [{"type": "text", "text": ENVIRONMENT, "cache_control": {"type": "ephemeral"}}]}
            ]),
            Provider::OpenAi => json!([
                {"role": "system", "content": "You are a coding agent."},
                {"role": "user", "content": "hello there"},
                {"role": "system", "content": ENVIRONMENT}
            ]),
            _ => json!([{"role": "user", "parts": [
                {"text": "hello there"},
                {"text": format!("System: {ENVIRONMENT}")}
            ]}]),
        };
        let turns = match provider {
            Provider::Gemini => &sent["contents"],
            _ => &sent["messages"],
        };
        assert_eq!(turns, &expected, "{provider:?}");
    }
}

// ------------------------------------------------------------------ the matrix

/// Stamps `matrix::<surface>::<case>::<provider>` for every surface, and every case of a group
/// for every provider of that group.
macro_rules! matrix {
    (surfaces: [$($surface:ident),* $(,)?]; groups: $groups:tt) => {
        $(
            mod $surface {
                matrix!(@groups $surface $groups);
            }
        )*
    };
    (@groups $surface:ident {
        $( $(#[$doc:meta])* providers $providers:tt cases [$($case:ident),* $(,)?]; )*
    }) => {
        $( $(
            mod $case {
                matrix!(@tests $surface $case $providers);
            }
        )* )*
    };
    (@tests $surface:ident $case:ident [$($provider:ident),* $(,)?]) => {
        $(
            #[tokio::test]
            async fn $provider() {
                let pair = super::super::Pair::start(
                    super::super::Surface::named(stringify!($surface)),
                    super::super::Provider::named(stringify!($provider)),
                )
                .await;
                super::super::cases::$case(&pair).await;
            }
        )*
    };
}

matrix! {
    surfaces: [chat, messages, responses];
    groups: {
    /// Every provider kind.
    providers [openai, anthropic, gemini, mock]
        cases [text, stream, usage, model_not_found];
    /// Exclusion: the built-in `mock` kind only echoes the last user text, with no tools,
    /// images, JSON mode, stop sequences, token limits or upstream to fail, so only the
    /// providers with an upstream API run these.
    providers [openai, anthropic, gemini]
        cases [
            tools, streamed_tools, parallel_tools, tool_result, image, json_mode,
            stop_sequences, max_tokens, finish_reasons, upstream_error, wire_body,
        ];
    /// Only Gemini sends calls without ids, so only there does the gateway make them; the
    /// others' ids pass through as the upstream made them.
    providers [gemini]
        cases [minted_call_ids];
    }
}
