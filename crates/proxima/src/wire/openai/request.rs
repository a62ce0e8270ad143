//! The chat completions request, and its conversion to and from [`ChatRequest`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{
    Api, ChatRequest, ImageSource, Message, Part, Passthrough, Reasoning, ResponseFormat, Role,
    Sampling, Tool, ToolChoice,
};
use crate::error::{Error, Result};

/// Read without `#[serde(flatten)]`, as are its messages (see `wire::deserialize_with_extra`):
/// every chat call reads one.
#[derive(Debug, Default, Serialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<MessageWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoiceWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormatWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptionsWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Everything else (logprobs, logit_bias, metadata, store, vendor extensions ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(ChatCompletionRequest, "a chat completions request", required ["model", "messages"], {
    "model" => model,
    "messages" => messages,
    "tools" => tools,
    "tool_choice" => tool_choice,
    "parallel_tool_calls" => parallel_tool_calls,
    "response_format" => response_format,
    "temperature" => temperature,
    "top_p" => top_p,
    "max_tokens" => max_tokens,
    "max_completion_tokens" => max_completion_tokens,
    "stop" => stop,
    "seed" => seed,
    "presence_penalty" => presence_penalty,
    "frequency_penalty" => frequency_penalty,
    "n" => n,
    "stream" => stream,
    "stream_options" => stream_options,
    "user" => user,
    "reasoning_effort" => reasoning_effort,
});

#[derive(Debug, Default, Serialize)]
pub struct StreamOptionsWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(StreamOptionsWire, "stream options", {
    "include_usage" => include_usage,
});

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum StopWire {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Serialize)]
pub struct MessageWire {
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentWire>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallWire>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Reasoning text as DeepSeek, vLLM and others send it on assistant turns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(MessageWire, "a message", required ["role"], {
    "role" => role,
    "content" => content,
    "name" => name,
    "tool_calls" => tool_calls,
    "tool_call_id" => tool_call_id,
    "refusal" => refusal,
    "reasoning_content" => reasoning_content,
});

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "a string, an array of content parts, or null")]
pub enum ContentWire {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ToolCallWire {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCallWire,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct FunctionCallWire {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ToolWire {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionWire,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct FunctionWire {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(
    untagged,
    expecting = "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}"
)]
pub enum ToolChoiceWire {
    Mode(String),
    Named {
        #[serde(rename = "type")]
        kind: String,
        function: NamedFunctionWire,
    },
}

#[derive(Debug, Deserialize, Serialize)]
pub struct NamedFunctionWire {
    pub name: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ResponseFormatWire {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<JsonSchemaWire>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct JsonSchemaWire {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

// ------------------------------------------------------------------ wire -> canonical

impl ChatCompletionRequest {
    /// Converts to the canonical request, checking what serde's types cannot.
    pub fn into_canonical(self) -> Result<ChatRequest> {
        let mut extra = self.extra;
        // Remember the newer field name so a same-API provider gets back what the client sent.
        if self.max_completion_tokens.is_some() {
            extra.insert(
                "max_completion_tokens".into(),
                self.max_completion_tokens.into(),
            );
        }
        let stream = self.stream.unwrap_or(false);
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        // Other stream options (e.g. `include_obfuscation`) go upstream as the client sent them.
        if let Some(options) = self.stream_options.filter(|o| !o.extra.is_empty()) {
            extra.insert("stream_options".into(), Value::Object(options.extra));
        }
        if self.n == Some(0) {
            return Err(Error::invalid_request("`n` must be at least 1").with_param("n"));
        }
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| message_to_canonical(m, i))
            .collect::<Result<Vec<_>>>()?;
        if messages.is_empty() {
            return Err(
                Error::invalid_request("`messages` must contain at least one message")
                    .with_param("messages"),
            );
        }
        let tools = self
            .tools
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                if t.kind != "function" {
                    return Err(Error::invalid_request(format!(
                        "tools[{i}].type `{}` is not supported; use \"function\"",
                        t.kind
                    ))
                    .with_param(format!("tools[{i}].type")));
                }
                Ok(Tool {
                    name: t.function.name,
                    description: t.function.description,
                    parameters: t.function.parameters,
                    strict: t.function.strict,
                    cache: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tool_choice = self.tool_choice.map(tool_choice_to_canonical).transpose()?;
        let response_format = self
            .response_format
            .map(response_format_to_canonical)
            .transpose()?;
        Ok(ChatRequest {
            model: self.model,
            messages,
            tools,
            hosted_tools: Vec::new(),
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            response_format,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: None,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                stop: match self.stop {
                    None => Vec::new(),
                    Some(StopWire::One(s)) => vec![s],
                    Some(StopWire::Many(v)) => v,
                },
                seed: self.seed,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
            },
            stream,
            include_usage,
            n: self.n,
            user: self.user,
            reasoning: self.reasoning_effort.map(|effort| Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            }),
            passthrough: Passthrough {
                api: Some(Api::OpenAiChat),
                fields: extra,
                headers: Vec::new(),
            },
        })
    }
}

fn message_to_canonical(m: MessageWire, i: usize) -> Result<Message> {
    let role = match m.role.as_str() {
        "system" => Role::System,
        "developer" => Role::Developer,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" | "function" => Role::Tool,
        other => {
            return Err(Error::invalid_request(format!(
            "messages[{i}].role `{other}` is not one of system, developer, user, assistant, tool"
        ))
            .with_param(format!("messages[{i}].role")))
        }
    };
    let mut content = match m.content {
        None => Vec::new(),
        Some(ContentWire::Text(text)) => vec![Part::text(text)],
        Some(ContentWire::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(j, p)| part_to_canonical(p, i, j))
            .collect::<Result<Vec<_>>>()?,
    };
    if role == Role::Tool {
        // Legacy `function` turns name the function instead of a call id.
        let call_id = m.tool_call_id.or_else(|| m.name.clone()).ok_or_else(|| {
            Error::invalid_request(format!("messages[{i}] has role tool but no `tool_call_id`"))
                .with_param(format!("messages[{i}].tool_call_id"))
        })?;
        content = vec![Part::ToolResult {
            call_id,
            content,
            is_error: false,
            cache: None,
        }];
    }
    if let Some(text) = m.reasoning_content {
        content.insert(
            0,
            Part::Reasoning {
                text,
                signature: None,
                redacted: None,
            },
        );
    }
    if let Some(text) = m.refusal {
        content.push(Part::Refusal { text });
    }
    for call in m.tool_calls.into_iter().flatten() {
        content.push(Part::ToolCall {
            id: call.id,
            name: call.function.name,
            arguments: call.function.arguments,
        });
    }
    Ok(Message {
        role,
        content,
        name: if role == Role::Tool { None } else { m.name },
        extra: m.extra,
    })
}

fn part_to_canonical(part: Value, i: usize, j: usize) -> Result<Part> {
    let at = || format!("messages[{i}].content[{j}]");
    let kind = part.get("type").and_then(Value::as_str).ok_or_else(|| {
        Error::invalid_request(format!("{} needs a string `type`", at())).with_param(at())
    })?;
    let field = |name: &str| -> Result<&str> {
        part.get(name).and_then(Value::as_str).ok_or_else(|| {
            Error::invalid_request(format!("{} of type {kind} needs a string `{name}`", at()))
                .with_param(at())
        })
    };
    Ok(match kind {
        "text" => Part::text(field("text")?),
        "refusal" => Part::Refusal {
            text: field("refusal")?.to_owned(),
        },
        "image_url" => {
            let image = part.get("image_url");
            // Both {"url": ...} and a bare string are seen in the wild.
            let url = image
                .and_then(|v| v.get("url").and_then(Value::as_str).or(v.as_str()))
                .ok_or_else(|| {
                    Error::invalid_request(format!("{} needs `image_url.url`", at()))
                        .with_param(at())
                })?;
            Part::Image {
                source: ImageSource::from_url(url),
                detail: image
                    .and_then(|v| v.get("detail"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                cache: None,
            }
        }
        _ => Part::Opaque {
            api: Api::OpenAiChat,
            value: part,
        },
    })
}

fn tool_choice_to_canonical(choice: ToolChoiceWire) -> Result<ToolChoice> {
    match choice {
        ToolChoiceWire::Mode(mode) => match mode.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(Error::invalid_request(format!(
                "tool_choice `{other}` is not one of none, auto, required"
            ))
            .with_param("tool_choice")),
        },
        ToolChoiceWire::Named { function, .. } => Ok(ToolChoice::Tool {
            name: function.name,
        }),
    }
}

fn response_format_to_canonical(format: ResponseFormatWire) -> Result<ResponseFormat> {
    match (format.kind.as_str(), format.json_schema) {
        ("text", _) => Ok(ResponseFormat::Text),
        ("json_object", _) => Ok(ResponseFormat::JsonObject),
        ("json_schema", Some(s)) => Ok(ResponseFormat::JsonSchema {
            name: s.name,
            schema: s.schema,
            strict: s.strict,
            description: s.description,
        }),
        ("json_schema", None) => Err(Error::invalid_request(
            "response_format of type json_schema needs a `json_schema` object",
        )
        .with_param("response_format.json_schema")),
        (other, _) => Err(Error::invalid_request(format!(
            "response_format.type `{other}` is not one of text, json_object, json_schema"
        ))
        .with_param("response_format.type")),
    }
}

// ------------------------------------------------------------------ canonical -> wire

impl ChatCompletionRequest {
    /// The request to send upstream for `model`. Usage is always requested in streams, since
    /// accounting needs it; fields from another API are dropped, never forwarded.
    pub fn from_canonical(req: &ChatRequest, model: &str) -> ChatCompletionRequest {
        let mut extra = req
            .passthrough
            .for_api(Api::OpenAiChat)
            .cloned()
            .unwrap_or_default();
        let stream_extra = match extra.remove("stream_options") {
            Some(Value::Object(options)) => options,
            _ => Map::new(),
        };
        let s = &req.sampling;
        let same_api = req.passthrough.api == Some(Api::OpenAiChat);
        let reasoning_model = is_reasoning_model(model);
        // Reasoning models refuse `max_tokens`; older compatible servers know only it.
        let use_new_max =
            extra.contains_key("max_completion_tokens") || (!same_api && reasoning_model);
        ChatCompletionRequest {
            model: model.to_owned(),
            messages: req.messages.iter().flat_map(message_to_wire).collect(),
            tools: (!req.tools.is_empty()).then(|| {
                req.tools
                    .iter()
                    .map(|t| ToolWire {
                        kind: "function".into(),
                        function: FunctionWire {
                            name: t.name.clone(),
                            description: t.description.clone(),
                            parameters: t.parameters.clone(),
                            strict: t.strict,
                        },
                    })
                    .collect()
            }),
            tool_choice: req.tool_choice.as_ref().map(|c| match c {
                ToolChoice::Auto => ToolChoiceWire::Mode("auto".into()),
                ToolChoice::None => ToolChoiceWire::Mode("none".into()),
                ToolChoice::Required => ToolChoiceWire::Mode("required".into()),
                ToolChoice::Tool { name } => ToolChoiceWire::Named {
                    kind: "function".into(),
                    function: NamedFunctionWire { name: name.clone() },
                },
            }),
            parallel_tool_calls: req.parallel_tool_calls,
            response_format: req.response_format.as_ref().map(|f| match f {
                ResponseFormat::Text => ResponseFormatWire {
                    kind: "text".into(),
                    json_schema: None,
                },
                ResponseFormat::JsonObject => ResponseFormatWire {
                    kind: "json_object".into(),
                    json_schema: None,
                },
                ResponseFormat::JsonSchema {
                    name,
                    schema,
                    strict,
                    description,
                } => ResponseFormatWire {
                    kind: "json_schema".into(),
                    json_schema: Some(JsonSchemaWire {
                        name: name.clone(),
                        description: description.clone(),
                        schema: schema.clone(),
                        strict: *strict,
                    }),
                },
            }),
            temperature: s.temperature,
            top_p: s.top_p,
            max_tokens: if use_new_max { None } else { s.max_tokens },
            // Carried in `extra` when the client used it.
            max_completion_tokens: if use_new_max && !extra.contains_key("max_completion_tokens") {
                s.max_tokens
            } else {
                None
            },
            stop: match s.stop.len() {
                0 => None,
                1 => Some(StopWire::One(s.stop[0].clone())),
                _ => Some(StopWire::Many(s.stop.clone())),
            },
            seed: s.seed,
            presence_penalty: s.presence_penalty,
            frequency_penalty: s.frequency_penalty,
            n: req.n,
            stream: req.stream.then_some(true),
            stream_options: req.stream.then_some(StreamOptionsWire {
                include_usage: Some(true),
                extra: stream_extra,
            }),
            user: req.user.clone(),
            // Other APIs ask for thinking on every model; OpenAI refuses the field on models
            // that do not reason, so it is sent only to those that do.
            reasoning_effort: if same_api || reasoning_model {
                req.reasoning.as_ref().and_then(Reasoning::as_effort)
            } else {
                None
            },
            extra,
        }
    }
}

/// OpenAI's reasoning models (o-series, gpt-5), which take `reasoning_effort` and
/// `max_completion_tokens`.
fn is_reasoning_model(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// One canonical message becomes one wire message, except that each tool result is its own
/// `tool` message on this API.
fn message_to_wire(m: &Message) -> Vec<MessageWire> {
    let same_api_extra = |m: &Message| m.extra.clone();
    if m.role == Role::Tool
        || m.content
            .iter()
            .any(|p| matches!(p, Part::ToolResult { .. }))
    {
        let mut out = Vec::new();
        let mut other = Vec::new();
        for part in &m.content {
            match part {
                Part::ToolResult {
                    call_id,
                    content,
                    is_error,
                    ..
                } => {
                    let mut parts = content_to_wire(content);
                    if *is_error {
                        // This API has no error flag on tool results: say it in the text.
                        parts = match parts {
                            Some(ContentWire::Text(t)) => {
                                Some(ContentWire::Text(format!("Error: {t}")))
                            }
                            other => other,
                        };
                    }
                    out.push(MessageWire {
                        role: "tool".into(),
                        content: Some(parts.unwrap_or(ContentWire::Text(String::new()))),
                        name: None,
                        tool_calls: None,
                        tool_call_id: Some(call_id.clone()),
                        refusal: None,
                        reasoning_content: None,
                        extra: Map::new(),
                    });
                }
                other_part => other.push(other_part.clone()),
            }
        }
        // Text sent alongside tool results (Anthropic allows it) follows them as a user turn.
        if let Some(content) = content_to_wire(&other) {
            out.push(MessageWire {
                role: "user".into(),
                content: Some(content),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                refusal: None,
                reasoning_content: None,
                extra: Map::new(),
            });
        }
        return out;
    }
    let tool_calls: Vec<ToolCallWire> = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall {
                id,
                name,
                arguments,
            } => Some(ToolCallWire {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCallWire {
                    name: name.clone(),
                    arguments: arguments.clone(),
                },
            }),
            _ => None,
        })
        .collect();
    let reasoning: Vec<&str> = m
        .content
        .iter()
        .filter_map(|p| match p {
            Part::Reasoning { text, .. } if !text.is_empty() => Some(text.as_str()),
            _ => None,
        })
        .collect();
    let refusal = m.content.iter().find_map(|p| match p {
        Part::Refusal { text } => Some(text.clone()),
        _ => None,
    });
    let content = content_to_wire(&m.content);
    vec![MessageWire {
        role: m.role.as_str().into(),
        // Assistant turns that only call tools carry `content: null`.
        content: match (content, m.role) {
            (None, Role::Assistant) => None,
            (None, _) => Some(ContentWire::Text(String::new())),
            (some, _) => some,
        },
        name: m.name.clone(),
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        tool_call_id: None,
        refusal: if m.role == Role::Assistant {
            refusal
        } else {
            None
        },
        reasoning_content: (m.role == Role::Assistant && !reasoning.is_empty())
            .then(|| reasoning.join("\n")),
        extra: same_api_extra(m),
    }]
}

/// Text and image parts as wire content: a plain string when it is just text, else parts.
/// `None` when there is no such part.
fn content_to_wire(parts: &[Part]) -> Option<ContentWire> {
    let mut wire: Vec<Value> = Vec::new();
    let mut only_text = true;
    for part in parts {
        match part {
            Part::Text { text, .. } => {
                wire.push(serde_json::json!({"type": "text", "text": text}));
            }
            Part::Image { source, detail, .. } => {
                only_text = false;
                let mut image = Map::new();
                image.insert("url".into(), source.to_url().into());
                if let Some(detail) = detail {
                    image.insert("detail".into(), detail.clone().into());
                }
                wire.push(serde_json::json!({"type": "image_url", "image_url": image}));
            }
            Part::Opaque {
                api: Api::OpenAiChat,
                value,
            } => {
                only_text = false;
                wire.push(value.clone());
            }
            _ => {}
        }
    }
    if wire.is_empty() {
        return None;
    }
    if only_text {
        let texts: Vec<&str> = parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        if texts.len() == 1 {
            return Some(ContentWire::Text(texts[0].to_owned()));
        }
    }
    Some(ContentWire::Parts(wire))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_request_reads_every_field_and_keeps_the_rest_at_each_level() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief", "x_cache": true},
                {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"},
                {"role": "assistant", "reasoning_content": "hmm",
                 "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "auto",
            "temperature": 0.5,
            "max_tokens": 50,
            "stop": ["\n"],
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": false},
            "user": "u",
            "logit_bias": {"50256": -100},
            "metadata": {"team": "a"}
        });
        let req: ChatCompletionRequest =
            crate::wire::from_json(body.to_string().as_bytes()).unwrap();
        assert_eq!(req.model, "m");
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.temperature, Some(0.5));
        assert_eq!(
            req.stream_options.as_ref().unwrap().include_usage,
            Some(true)
        );
        assert_eq!(req.extra["logit_bias"], json!({"50256": -100}));
        assert_eq!(req.messages[0].extra["x_cache"], true);
        // Written again, it is the request it was read from.
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    #[test]
    fn a_request_or_message_without_its_required_fields_fails_naming_them() {
        let fails = |body: serde_json::Value| {
            crate::wire::from_json::<ChatCompletionRequest>(body.to_string().as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(fails(json!({"messages": []})).contains("missing field `model`"));
        assert!(fails(json!({"model": "m"})).contains("missing field `messages`"));
        let no_role = fails(json!({"model": "m", "messages": [{"content": "hi"}]}));
        assert!(no_role.contains("missing field `role`"), "{no_role}");
        let null_content =
            json!({"model": "m", "messages": [{"role": "assistant", "content": null}]});
        let req: ChatCompletionRequest =
            crate::wire::from_json(null_content.to_string().as_bytes()).unwrap();
        assert!(req.messages[0].content.is_none());
        let wrong = fails(json!({"model": "m", "messages": [], "n": "two"}));
        assert!(wrong.starts_with("invalid type: string \"two\""), "{wrong}");
    }
}
