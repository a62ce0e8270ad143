//! The Responses request (`CreateResponse`) and its conversion to a canonical [`ChatRequest`].

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::file_search::FileSearchTool;
use super::response::{item_id, response_id};
use super::tools::{self, ToolNames};
use super::{ConversationRef, Echo, ResponseContext};
use crate::canonical::{
    Api, ChatRequest, ImageSource, Message, Part, Passthrough, Reasoning, ResponseFormat, Role,
    Sampling, ToolChoice,
};
use crate::error::{Error, Result};

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<InputWire>,
    #[serde(default)]
    pub instructions: Option<String>,
    /// Parsed one by one, so that errors name the tool and hosted tools can be dropped.
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// `{format, verbosity}`; kept whole to echo back.
    #[serde(default)]
    pub text: Option<Map<String, Value>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    /// `{effort, summary}`; kept whole to echo back.
    #[serde(default)]
    pub reasoning: Option<Map<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub prompt: Option<Value>,
    /// Only `include_obfuscation`, which has no meaning here.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Everything else (safety_identifier, top_logprobs, max_tool_calls ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a string or an array of input items")]
pub enum InputWire {
    Text(String),
    Items(Vec<Value>),
}

#[derive(Deserialize)]
struct MessageItem {
    role: String,
    content: ContentWire,
}

#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of content parts")]
enum ContentWire {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Deserialize)]
struct FunctionCallItem {
    call_id: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct CustomToolCallItem {
    call_id: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    input: String,
}

#[derive(Deserialize)]
struct CallOutputItem {
    call_id: String,
    output: ContentWire,
}

#[derive(Deserialize)]
struct ReasoningItem {
    #[serde(default)]
    summary: Vec<TextPart>,
    #[serde(default)]
    content: Option<Vec<TextPart>>,
    #[serde(default)]
    encrypted_content: Option<String>,
}

#[derive(Deserialize)]
struct TextPart {
    #[serde(default)]
    text: String,
}

/// A Responses request in canonical form, with what the answer and the stored response need.
pub struct Converted {
    /// The instructions as a system message, then the new input. A surface continuing a stored
    /// chain (`previous_response_id`) inserts its turns at [`Converted::input_start`].
    pub request: ChatRequest,
    /// What the answer needs; the stateful fields (`store`, `previous_response_id`,
    /// `conversation`) are in its echo.
    pub context: ResponseContext,
    /// Where the new input starts in `request.messages`: after the instructions, which are
    /// never inherited from or stored with a turn.
    pub input_start: usize,
    /// The input items as the client sent them, each with an `id` (given one when it had
    /// none), for `input_items`. Empty unless the response is to be stored.
    pub input_items: Vec<Value>,
    /// The `file_search` tool, which the gateway runs before the call.
    pub file_search: Option<FileSearchTool>,
}

impl ResponsesRequest {
    /// Converts to the canonical request, and keeps what the answer needs from the request.
    pub fn into_canonical(self) -> Result<Converted> {
        let conversation = self.conversation.as_ref().map(conversation).transpose()?;
        if conversation.is_some() && self.previous_response_id.is_some() {
            // As OpenAI: a response continues either a chain or a conversation, not both.
            return Err(Error::invalid_request(
                "`previous_response_id` and `conversation` cannot be used together: continue either a stored response or a conversation",
            )
            .with_param("conversation"));
        }
        if self.background == Some(true) {
            return Err(Error::invalid_request(
                "`background: true` is not supported: this gateway answers every response while the request is open; leave `background` out, and stream (`stream: true`) a long answer",
            )
            .with_param("background"));
        }
        if self.prompt.is_some() {
            return Err(Error::invalid_request(
                "stored prompts (`prompt`) are not supported; send `instructions` and `input`",
            )
            .with_param("prompt"));
        }
        // Unknown fields are otherwise kept for a Responses upstream, and so never reach any
        // provider: a stop sequence would be dropped in silence and the answer not cut.
        if self.extra.contains_key("stop") {
            return Err(Error::invalid_request(
                "the Responses API has no stop sequences (`stop`); use /v1/chat/completions (`stop`) or /v1/messages (`stop_sequences`) to stop at a sequence",
            )
            .with_param("stop"));
        }

        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions.as_deref().filter(|i| !i.is_empty()) {
            messages.push(Message::text(Role::System, instructions));
        }
        let input_start = messages.len();
        let store = self.store.unwrap_or(true);
        let mut input_items = Vec::new();
        match self.input {
            None => {}
            Some(InputWire::Text(text)) => {
                if store {
                    input_items.push(json!({
                        "id": item_id("msg"),
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": text}],
                    }));
                }
                messages.push(Message::text(Role::User, text));
            }
            Some(InputWire::Items(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    if store {
                        input_items.push(with_id(item.clone()));
                    }
                    add_item(&mut messages, item, format!("input[{i}]"))?;
                }
            }
        }
        if messages.len() == input_start {
            return Err(Error::invalid_request(
                "`input` must be a non-empty string or contain at least one item",
            )
            .with_param("input"));
        }

        let converted = tools::convert(self.tools.unwrap_or_default())?;
        let mut canonical_tools = converted.tools;
        let mut tool_choice = self
            .tool_choice
            .as_ref()
            .map(|c| tools::tool_choice(c, &mut canonical_tools, converted.file_search.is_some()))
            .transpose()?;
        let mut parallel_tool_calls = self.parallel_tool_calls;
        if canonical_tools.is_empty() {
            // Upstreams refuse tool settings without tools; with hosted tools dropped this is
            // common (a request offering only `web_search`).
            match tool_choice {
                // The file search the gateway runs is the tool call asked for.
                Some(ToolChoice::Required) if converted.file_search.is_some() => tool_choice = None,
                Some(ToolChoice::Required | ToolChoice::Tool { .. }) => {
                    return Err(Error::invalid_request(
                        "tool_choice requires a tool call, but no function or custom tool is offered (hosted tools are not available through this gateway)",
                    )
                    .with_param("tool_choice"))
                }
                _ => tool_choice = None,
            }
            parallel_tool_calls = None;
        }

        let mut text = self.text.unwrap_or_default();
        // `"format": null` means the default, like leaving it out.
        if text.get("format").is_some_and(Value::is_null) {
            text.remove("format");
        }
        let response_format = text.get("format").map(response_format).transpose()?;
        let effort = self
            .reasoning
            .as_ref()
            .and_then(|r| r.get("effort"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        let included = |what: &str| {
            self.include
                .as_ref()
                .is_some_and(|i| i.iter().any(|s| s == what))
        };
        let encrypted_reasoning = included("reasoning.encrypted_content");
        let file_search_results = included("file_search_call.results");
        let echo = Echo {
            instructions: self.instructions,
            max_output_tokens: self.max_output_tokens,
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            previous_response_id: self.previous_response_id,
            conversation,
            reasoning: self
                .reasoning
                .clone()
                .map_or_else(|| json!({"effort": null, "summary": null}), Value::Object),
            service_tier: self.service_tier.clone(),
            store,
            temperature: self.temperature,
            text: if text.contains_key("format") {
                Value::Object(text.clone())
            } else {
                let mut text = text.clone();
                text.insert("format".into(), json!({"type": "text"}));
                Value::Object(text)
            },
            tool_choice: self.tool_choice.unwrap_or_else(|| json!("auto")),
            tools: converted.declared,
            top_p: self.top_p,
            truncation: self.truncation.clone().unwrap_or_else(|| "disabled".into()),
            user: self.user.clone(),
            metadata: Value::Object(self.metadata.clone().unwrap_or_default()),
        };

        // Known fields the canonical model does not carry, kept for a provider speaking this
        // API; providers of other APIs never see them.
        let mut passthrough = self.extra;
        let keep = [
            ("store", self.store.map(Value::from)),
            ("include", self.include.map(Value::from)),
            ("truncation", self.truncation.map(Value::from)),
            ("service_tier", self.service_tier.map(Value::from)),
            ("prompt_cache_key", self.prompt_cache_key.map(Value::from)),
            ("metadata", self.metadata.map(Value::Object)),
            ("reasoning", self.reasoning.map(Value::Object)),
            ("text", (!text.is_empty()).then_some(Value::Object(text))),
        ];
        for (name, value) in keep {
            if let Some(value) = value {
                passthrough.insert(name.into(), value);
            }
        }

        let model = self.model;
        let request = ChatRequest {
            model: model.clone(),
            messages,
            tools: canonical_tools,
            // No provider speaks the Responses API itself, so its hosted tools have nowhere to run.
            hosted_tools: Vec::new(),
            tool_choice,
            parallel_tool_calls,
            response_format,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                max_tokens: self.max_output_tokens,
                ..Sampling::default()
            },
            stream: self.stream.unwrap_or(false),
            // `response.completed` always reports usage.
            include_usage: true,
            n: None,
            user: self.user,
            reasoning: effort.map(|effort| Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            }),
            passthrough: Passthrough {
                api: Some(Api::Responses),
                fields: passthrough,
                headers: Vec::new(),
            },
        };
        let context = ResponseContext {
            id: response_id(),
            echo,
            tools: converted.names,
            encrypted_reasoning,
            model,
            file_search_results,
            file_search: None,
        };
        Ok(Converted {
            request,
            context,
            input_start,
            input_items,
            file_search: converted.file_search,
        })
    }
}

/// `conversation`: its id, or an object with it, as the API accepts both.
fn conversation(value: &Value) -> Result<ConversationRef> {
    let id = match value {
        Value::String(id) => Some(id),
        Value::Object(map) => match map.get("id") {
            Some(Value::String(id)) => Some(id),
            _ => None,
        },
        _ => None,
    };
    match id.filter(|id| !id.is_empty()) {
        Some(id) => Ok(ConversationRef { id: id.clone() }),
        None => Err(Error::invalid_request(
            "`conversation` must be a conversation id, or an object with its `id`",
        )
        .with_param("conversation")),
    }
}

/// An input item as stored for `input_items`: with an `id`, made up when the client sent none.
fn with_id(mut item: Value) -> Value {
    if let Value::Object(map) = &mut item {
        if !map.get("id").is_some_and(Value::is_string) {
            map.insert("id".into(), item_id("msg").into());
        }
    }
    item
}

fn invalid(at: &str, message: impl std::fmt::Display) -> Error {
    Error::invalid_request(format!("{at}: {message}")).with_param(at.to_owned())
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, at: &str, kind: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| invalid(at, format_args!("invalid {kind} item: {e}")))
}

/// Appends the parts of an assistant turn to the last message when that is an assistant turn
/// too: one model turn arrives as several items (reasoning, message, function calls), and
/// backends want it as one message — Anthropic requires a thinking block and the tool calls it
/// led to in the same message.
fn push_assistant(messages: &mut Vec<Message>, parts: Vec<Part>) {
    match messages.last_mut() {
        Some(last) if last.role == Role::Assistant => last.content.extend(parts),
        _ => messages.push(Message {
            role: Role::Assistant,
            content: parts,
            name: None,
            extra: Map::new(),
        }),
    }
}

/// Consecutive tool results form one tool turn, as every backend accepts them.
fn push_tool_result(messages: &mut Vec<Message>, part: Part) {
    match messages.last_mut() {
        Some(last) if last.role == Role::Tool => last.content.push(part),
        _ => messages.push(Message {
            role: Role::Tool,
            content: vec![part],
            name: None,
            extra: Map::new(),
        }),
    }
}

/// Items in the Responses API's input shape (a conversation's items have it too) as
/// canonical messages; errors name the item as `{list}[i]`.
pub fn items_to_messages(items: Vec<Value>, list: &str) -> Result<Vec<Message>> {
    let mut messages = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        add_item(&mut messages, item, format!("{list}[{i}]"))?;
    }
    Ok(messages)
}

fn add_item(messages: &mut Vec<Message>, item: Value, at: String) -> Result<()> {
    // `type` may be left out of messages ("easy input messages").
    let kind = match item.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        None | Some(Value::Null) if item.get("role").is_some() => "message".to_owned(),
        _ => return Err(invalid(&at, "an input item needs a string `type`")),
    };
    match kind.as_str() {
        "message" => {
            let m: MessageItem = parse(item, &at, "message")?;
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                "developer" => Role::Developer,
                other => {
                    return Err(invalid(
                        &format!("{at}.role"),
                        format_args!(
                            "`{other}` is not one of user, assistant, system, developer"
                        ),
                    ))
                }
            };
            let content = content(m.content, &format!("{at}.content"))?;
            if role == Role::Assistant {
                push_assistant(messages, content);
            } else {
                messages.push(Message {
                    role,
                    content,
                    name: None,
                    extra: Map::new(),
                });
            }
        }
        "function_call" => {
            let call: FunctionCallItem = parse(item, &at, "function_call")?;
            push_assistant(
                messages,
                vec![Part::ToolCall {
                    id: call.call_id,
                    name: ToolNames::canonical(call.namespace.as_deref(), &call.name),
                    arguments: call.arguments,
                }],
            );
        }
        "custom_tool_call" => {
            let call: CustomToolCallItem = parse(item, &at, "custom_tool_call")?;
            // Custom tools are offered as functions of one string `input`.
            push_assistant(
                messages,
                vec![Part::ToolCall {
                    id: call.call_id,
                    name: ToolNames::canonical(call.namespace.as_deref(), &call.name),
                    arguments: json!({ "input": call.input }).to_string(),
                }],
            );
        }
        "function_call_output" | "custom_tool_call_output" => {
            let output: CallOutputItem = parse(item, &at, &kind)?;
            push_tool_result(
                messages,
                Part::ToolResult {
                    call_id: output.call_id,
                    content: content(output.output, &format!("{at}.output"))?,
                    is_error: false,
                    cache: None,
                },
            );
        }
        "reasoning" => {
            let r: ReasoningItem = parse(item, &at, "reasoning")?;
            // The full reasoning when the client has it, else its summary.
            let full: Vec<String> = r
                .content
                .unwrap_or_default()
                .into_iter()
                .map(|p| p.text)
                .filter(|t| !t.is_empty())
                .collect();
            let texts = if full.is_empty() {
                r.summary
                    .into_iter()
                    .map(|p| p.text)
                    .filter(|t| !t.is_empty())
                    .collect()
            } else {
                full
            };
            let redacted = r.encrypted_content.filter(|c| !c.is_empty());
            if !texts.is_empty() || redacted.is_some() {
                push_assistant(
                    messages,
                    vec![Part::Reasoning {
                        text: texts.join("\n\n"),
                        signature: None,
                        redacted,
                    }],
                );
            }
        }
        "item_reference" => {
            return Err(invalid(
                &at,
                "item references (`item_reference`) are not supported; send the item itself, or continue a stored response with `previous_response_id`",
            ))
        }
        other => {
            return Err(invalid(
                &format!("{at}.type"),
                format_args!("input items of type `{other}` are not supported; use message, function_call, function_call_output, custom_tool_call, custom_tool_call_output or reasoning"),
            ))
        }
    }
    Ok(())
}

fn content(content: ContentWire, at: &str) -> Result<Vec<Part>> {
    match content {
        ContentWire::Text(text) => Ok(vec![Part::text(text)]),
        ContentWire::Parts(parts) => parts
            .into_iter()
            .enumerate()
            .map(|(j, part)| content_part(part, &format!("{at}[{j}]")))
            .collect(),
    }
}

fn content_part(part: Value, at: &str) -> Result<Part> {
    let kind = part
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(at, "a content part needs a string `type`"))?;
    let string = |field: &str| -> Result<String> {
        part.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| invalid(at, format_args!("a {kind} part needs a string `{field}`")))
    };
    Ok(match kind {
        "input_text" | "output_text" => Part::text(string("text")?),
        "refusal" => Part::Refusal {
            text: string("refusal")?,
        },
        "input_image" => {
            let url = part.get("image_url").and_then(Value::as_str);
            match url {
                Some(url) => Part::Image {
                    source: ImageSource::from_url(url),
                    detail: part
                        .get("detail")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    cache: None,
                },
                None if part.get("file_id").is_some_and(|f| !f.is_null()) => {
                    return Err(invalid(
                        at,
                        "images by `file_id` are not supported yet (uploaded files come with /v1/files); send `image_url` with a URL or a data: URL",
                    ))
                }
                None => return Err(invalid(at, "an input_image part needs `image_url`")),
            }
        }
        "input_file" => {
            return Err(invalid(
                at,
                "input_file parts are not supported yet (files come with /v1/files)",
            ))
        }
        other => {
            return Err(invalid(
                at,
                format_args!("content parts of type `{other}` are not supported; use input_text, input_image, output_text or refusal"),
            ))
        }
    })
}

/// `text.format` → canonical response format. Its fields sit at the top level here, not under
/// `json_schema` as in chat completions.
fn response_format(format: &Value) -> Result<ResponseFormat> {
    let at = "text.format";
    let kind = format
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(at, "needs a string `type`"))?;
    match kind {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => Ok(ResponseFormat::JsonSchema {
            name: format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(at, "a json_schema format needs a string `name`"))?
                .to_owned(),
            schema: format
                .get("schema")
                .cloned()
                .ok_or_else(|| invalid(at, "a json_schema format needs a `schema`"))?,
            strict: format.get("strict").and_then(Value::as_bool),
            description: format
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }),
        other => Err(invalid(
            &format!("{at}.type"),
            format_args!("`{other}` is not one of text, json_object, json_schema"),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::wire::responses::ToolKind;

    fn convert(body: Value) -> Result<(ChatRequest, ResponseContext)> {
        let req: ResponsesRequest = serde_json::from_value(body).expect("request shape");
        req.into_canonical().map(|c| (c.request, c.context))
    }

    fn error(body: Value) -> Error {
        match convert(body) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn texts(m: &Message) -> Vec<&str> {
        m.content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn string_input_is_one_user_turn() {
        let (req, cx) = convert(json!({"model": "fast", "input": "hi"})).unwrap();
        assert_eq!(req.model, "fast");
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(texts(&req.messages[0]), ["hi"]);
        assert!(!req.stream);
        assert!(req.include_usage, "response.completed always carries usage");
        assert!(req.tools.is_empty() && req.tool_choice.is_none());
        assert!(req.parallel_tool_calls.is_none());
        assert_eq!(req.passthrough.api, Some(Api::Responses));
        // What the answer echoes, with the API's defaults.
        assert!(cx.echo.store);
        assert!(cx.echo.parallel_tool_calls);
        assert_eq!(cx.echo.tool_choice, json!("auto"));
        assert_eq!(cx.echo.text, json!({"format": {"type": "text"}}));
        assert_eq!(cx.echo.truncation, "disabled");
        assert!(!cx.encrypted_reasoning);
    }

    #[test]
    fn items_become_turns() {
        let (req, _) = convert(json!({
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"type": "message", "role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is in this picture, and the weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need two tools."}],
                 "encrypted_content": "opaque"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "describe", "arguments": "{\"image\":0}"},
                {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "4 °C"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "A cat; 4 °C.", "annotations": []}]},
                {"type": "message", "role": "user", "content": "Thanks"},
            ],
        }))
        .unwrap();
        let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [
                Role::System,
                Role::Developer,
                Role::User,
                Role::Assistant,
                Role::Tool,
                Role::Assistant,
                Role::User
            ]
        );
        assert_eq!(texts(&req.messages[0]), ["Be brief."]);
        assert_eq!(texts(&req.messages[1]), ["Use metric units."]);
        match &req.messages[2].content[1] {
            Part::Image { source, detail, .. } => {
                assert!(matches!(source, ImageSource::Base64 { media_type, data }
                    if media_type == "image/png" && data == "iVBORw0KGgo="));
                assert_eq!(detail.as_deref(), Some("low"));
            }
            other => panic!("expected an image, got {other:?}"),
        }
        // Reasoning and both calls are one assistant turn, in order.
        let turn = &req.messages[3].content;
        assert_eq!(turn.len(), 3);
        assert!(matches!(&turn[0], Part::Reasoning { text, redacted, .. }
            if text == "Need two tools." && redacted.as_deref() == Some("opaque")));
        assert!(matches!(&turn[1], Part::ToolCall { id, name, arguments }
            if id == "call_1" && name == "describe" && arguments == "{\"image\":0}"));
        assert!(
            matches!(&turn[2], Part::ToolCall { id, name, .. } if id == "call_2" && name == "weather")
        );
        // Both results are one tool turn.
        let results = &req.messages[4].content;
        assert_eq!(results.len(), 2);
        match (&results[0], &results[1]) {
            (
                Part::ToolResult {
                    call_id: a,
                    content: ca,
                    ..
                },
                Part::ToolResult {
                    call_id: b,
                    content: cb,
                    ..
                },
            ) => {
                assert_eq!((a.as_str(), b.as_str()), ("call_1", "call_2"));
                assert!(matches!(&ca[0], Part::Text { text, .. } if text == "a cat"));
                assert!(matches!(&cb[0], Part::Text { text, .. } if text == "4 °C"));
            }
            other => panic!("expected two tool results, got {other:?}"),
        }
        assert_eq!(texts(&req.messages[5]), ["A cat; 4 °C."]);
    }

    #[test]
    fn codex_like_request() {
        let (req, cx) = convert(json!({
            "model": "fast",
            "instructions": "You are a coding agent.",
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix the bug"}]},
                {"type": "custom_tool_call", "call_id": "call_p", "name": "apply_patch", "input": "*** Begin Patch\n*** End Patch"},
                {"type": "custom_tool_call_output", "call_id": "call_p", "output": "Done!"},
            ],
            "tools": [
                {"type": "function", "name": "shell", "description": "Runs a command.", "strict": false,
                 "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
                {"type": "function", "name": "mcp__github__search_issues", "description": "Search issues.",
                 "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}},
                {"type": "custom", "name": "apply_patch", "description": "Edit files.",
                 "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch"}},
                {"type": "web_search", "external_web_access": false},
                {"type": "local_shell"},
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": false,
            "reasoning": {"effort": "medium", "summary": "auto"},
            "store": false,
            "stream": true,
            "include": ["reasoning.encrypted_content"],
            "prompt_cache_key": "0198-session",
            "text": {"verbosity": "medium"},
        }))
        .unwrap();
        assert!(req.stream);
        assert_eq!(req.messages[0].role, Role::System);
        assert_eq!(req.messages[1].role, Role::Developer);
        // Hosted tools are gone; function names pass through, namespaced ones included.
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["shell", "mcp__github__search_issues", "apply_patch"]
        );
        let patch = &req.tools[2];
        let input = &patch.parameters.as_ref().unwrap()["properties"]["input"];
        assert_eq!(input["type"], "string");
        assert!(input["description"]
            .as_str()
            .unwrap()
            .contains("start: begin_patch hunk+ end_patch"));
        assert_eq!(cx.tools.origin("apply_patch").kind, ToolKind::Custom);
        assert_eq!(cx.tools.origin("shell").kind, ToolKind::Function);
        // The earlier custom call is a call of that function with `input`.
        let call = &req.messages[3].content[0];
        assert!(matches!(call, Part::ToolCall { id, name, arguments }
            if id == "call_p" && name == "apply_patch"
            && serde_json::from_str::<Value>(arguments).unwrap() == json!({"input": "*** Begin Patch\n*** End Patch"})));
        assert!(
            matches!(&req.messages[4].content[0], Part::ToolResult { call_id, .. } if call_id == "call_p")
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(req.parallel_tool_calls, Some(false));
        assert_eq!(
            req.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
            Some("medium")
        );
        // Unmodelled fields are kept only for a provider of this same API.
        let kept = &req.passthrough.fields;
        assert_eq!(req.passthrough.api, Some(Api::Responses));
        assert_eq!(kept["prompt_cache_key"], "0198-session");
        assert_eq!(kept["store"], false);
        assert_eq!(kept["include"], json!(["reasoning.encrypted_content"]));
        assert!(req.passthrough.for_api(Api::OpenAiChat).is_none());
        // The answer says what was asked.
        assert!(cx.encrypted_reasoning);
        assert!(!cx.echo.store);
        assert!(!cx.echo.parallel_tool_calls);
        assert_eq!(
            cx.echo.reasoning,
            json!({"effort": "medium", "summary": "auto"})
        );
        assert_eq!(
            cx.echo.text,
            json!({"verbosity": "medium", "format": {"type": "text"}})
        );
        assert_eq!(cx.echo.tools.len(), 3, "hosted tools are not echoed");
    }

    #[test]
    fn unknown_items_are_refused_by_index_and_type() {
        let e = error(json!({"model": "m", "input": [
            {"role": "user", "content": "hi"},
            {"type": "computer_call_output", "call_id": "c", "output": {}},
        ]}));
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidRequest);
        assert_eq!(e.param.as_deref(), Some("input[1].type"));
        assert!(e.message.contains("input[1]") && e.message.contains("computer_call_output"));

        let e = error(
            json!({"model": "m", "input": [{"type": "message", "role": "robot", "content": "x"}]}),
        );
        assert_eq!(e.param.as_deref(), Some("input[0].role"));

        let e = error(json!({"model": "m", "input": [{"type": "function_call", "name": "f"}]}));
        assert_eq!(e.param.as_deref(), Some("input[0]"));
        assert!(e.message.contains("call_id"), "{}", e.message);
    }

    #[test]
    fn images_by_file_id_wait_for_files() {
        let e = error(json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-123", "detail": "auto"},
        ]}]}));
        assert_eq!(e.param.as_deref(), Some("input[0].content[0]"));
        assert!(e.message.contains("file_id"), "{}", e.message);
    }

    #[test]
    fn server_side_state_is_echoed() {
        let (req, cx) = convert(json!({
            "model": "m", "instructions": "Be brief.", "input": "hi",
            "previous_response_id": "resp_1", "store": false,
        }))
        .unwrap();
        assert_eq!(cx.echo.previous_response_id.as_deref(), Some("resp_1"));
        assert!(cx.echo.conversation.is_none() && !cx.echo.store);
        assert!(cx.id.starts_with("resp_"));
        // The chain's turns go after the instructions, which are never inherited.
        assert_eq!(req.messages[0].role, Role::System);
        for conversation in [json!("conv_1"), json!({"id": "conv_1"})] {
            let (_, cx) =
                convert(json!({"model": "m", "input": "hi", "conversation": conversation}))
                    .unwrap();
            assert_eq!(cx.echo.conversation.unwrap().id, "conv_1");
        }
        for bad in [json!(7), json!({"name": "x"}), json!("")] {
            let e = error(json!({"model": "m", "input": "hi", "conversation": bad}));
            assert_eq!(e.param.as_deref(), Some("conversation"));
        }
        let e = error(json!({
            "model": "m", "input": "hi", "conversation": "conv_1", "previous_response_id": "resp_1",
        }));
        assert_eq!(e.param.as_deref(), Some("conversation"));
        assert!(e.message.contains("together"), "{}", e.message);
        let e = error(json!({"model": "m", "input": "hi", "background": true}));
        assert_eq!(e.param.as_deref(), Some("background"));
    }

    #[test]
    fn input_items_are_kept_with_ids_when_stored() {
        let convert = |body: Value| {
            let req: ResponsesRequest = serde_json::from_value(body).unwrap();
            req.into_canonical().unwrap()
        };
        let converted = convert(json!({"model": "m", "instructions": "x", "input": [
            {"type": "message", "id": "msg_mine", "role": "user", "content": "hi"},
            {"type": "function_call_output", "call_id": "c", "output": "42"},
        ]}));
        assert_eq!(converted.input_start, 1);
        let items = &converted.input_items;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["id"], "msg_mine");
        assert!(items[1]["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(items[1]["output"], "42");
        let converted = convert(json!({"model": "m", "input": "hello"}));
        assert_eq!(converted.input_start, 0);
        assert_eq!(converted.input_items[0]["role"], "user");
        assert_eq!(
            converted.input_items[0]["content"],
            json!([{"type": "input_text", "text": "hello"}])
        );
        // Not stored, not kept.
        let converted = convert(json!({"model": "m", "input": "hello", "store": false}));
        assert!(converted.input_items.is_empty());
    }

    #[test]
    fn stop_sequences_are_refused_not_dropped() {
        let e = error(json!({"model": "m", "input": "hi", "stop": ["END"]}));
        assert_eq!(e.param.as_deref(), Some("stop"));
        assert!(e.message.contains("no stop sequences"), "{}", e.message);
    }

    #[test]
    fn empty_input_is_refused() {
        let e = error(json!({"model": "m", "instructions": "x"}));
        assert_eq!(e.param.as_deref(), Some("input"));
        let e = error(json!({"model": "m", "input": []}));
        assert_eq!(e.param.as_deref(), Some("input"));
    }

    #[test]
    fn output_options_map_to_canonical() {
        let (req, cx) = convert(json!({
            "model": "m",
            "input": "hi",
            "temperature": 0.2,
            "top_p": 0.9,
            "max_output_tokens": 64,
            "user": "u-1",
            "metadata": {"team": "a"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                                "schema": {"type": "object", "properties": {"x": {"type": "number"}}}}},
        }))
        .unwrap();
        assert_eq!(req.sampling.temperature, Some(0.2));
        assert_eq!(req.sampling.top_p, Some(0.9));
        assert_eq!(req.sampling.max_tokens, Some(64));
        assert_eq!(req.user.as_deref(), Some("u-1"));
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool { name: "f".into() }));
        assert!(
            matches!(&req.response_format, Some(ResponseFormat::JsonSchema { name, strict, schema, .. })
            if name == "answer" && *strict == Some(true) && schema["properties"]["x"]["type"] == "number")
        );
        assert_eq!(cx.echo.metadata, json!({"team": "a"}));
        assert_eq!(cx.echo.max_output_tokens, Some(64));

        let (req, _) = convert(
            json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}}),
        )
        .unwrap();
        assert!(matches!(
            req.response_format,
            Some(ResponseFormat::JsonObject)
        ));
        let (req, cx) =
            convert(json!({"model": "m", "input": "hi", "text": {"format": null}})).unwrap();
        assert!(req.response_format.is_none());
        assert_eq!(cx.echo.text, json!({"format": {"type": "text"}}));
    }

    #[test]
    fn tool_settings_go_when_no_tool_remains() {
        // Only a hosted tool: the upstream would refuse tool_choice and parallel_tool_calls
        // without tools.
        let (req, cx) = convert(json!({
            "model": "m", "input": "hi",
            "tools": [{"type": "web_search"}], "tool_choice": "auto", "parallel_tool_calls": true,
        }))
        .unwrap();
        assert!(req.tools.is_empty());
        assert!(req.tool_choice.is_none() && req.parallel_tool_calls.is_none());
        assert!(cx.echo.tools.is_empty());

        let e = error(json!({
            "model": "m", "input": "hi", "tools": [{"type": "web_search"}], "tool_choice": "required",
        }));
        assert_eq!(e.param.as_deref(), Some("tool_choice"));

        // The gateway's file search is the tool used: nothing is left for the model to call.
        for choice in [json!("required"), json!({"type": "file_search"})] {
            let (req, cx) = convert(json!({
                "model": "m", "input": "hi", "tool_choice": choice,
                "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
            }))
            .unwrap();
            assert!(req.tools.is_empty() && req.tool_choice.is_none());
            assert_eq!(cx.echo.tools[0]["type"], "file_search");
        }
    }
}
