//! The Messages request, and its conversion to and from [`ChatRequest`].

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{cache_hint, with_cache};
use crate::canonical::{
    Api, ChatRequest, HostedTool, ImageSource, Message, Part, Passthrough, Reasoning,
    ResponseFormat, Role, Sampling, Tool, ToolChoice,
};
use crate::error::{Error, Result};

/// Sent when a client of another API gave no limit: Anthropic requires `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Thinking budgets for OpenAI-style effort levels.
fn budget_for_effort(effort: &str) -> u32 {
    match effort {
        "minimal" | "low" => 2048,
        "high" => 24576,
        "xhigh" | "max" => 32768,
        _ => 8192,
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<InputMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<Map<String, Value>>,
    /// service_tier, container, inference_geo, context_management, mcp_servers ...
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct InputMessage {
    pub role: String,
    pub content: ContentWire,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "a string or an array of content blocks")]
pub enum ContentWire {
    Text(String),
    Blocks(Vec<Value>),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "a string or an array of text blocks")]
pub enum SystemWire {
    Text(String),
    Blocks(Vec<Value>),
}

fn bad(message: String, param: String) -> Error {
    Error::invalid_request(message).with_param(param)
}

// ------------------------------------------------------------------ wire -> canonical

impl MessagesRequest {
    /// Converts to canonical. `beta` is the client's `anthropic-beta` header, kept for an
    /// Anthropic provider.
    pub fn into_canonical(self, beta: Option<String>) -> Result<ChatRequest> {
        let mut messages = Vec::new();
        if let Some(system) = self.system {
            let content = match system {
                SystemWire::Text(text) => vec![Part::text(text)],
                SystemWire::Blocks(blocks) => blocks
                    .into_iter()
                    .enumerate()
                    .map(|(j, b)| block_to_canonical(b, &format!("system[{j}]")))
                    .collect::<Result<_>>()?,
            };
            if !content.is_empty() {
                messages.push(Message {
                    role: Role::System,
                    content,
                    name: None,
                    extra: Map::new(),
                });
            }
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                // Current models take instructions mid-conversation (Claude Code sends its
                // environment this way); they keep their place in the canonical conversation.
                "system" => Role::System,
                other => {
                    return Err(bad(
                        format!(
                            "messages[{i}].role `{other}` is not one of user, assistant, system"
                        ),
                        format!("messages[{i}].role"),
                    ))
                }
            };
            let content = match m.content {
                ContentWire::Text(text) => vec![Part::text(text)],
                ContentWire::Blocks(blocks) => blocks
                    .into_iter()
                    .enumerate()
                    .map(|(j, b)| block_to_canonical(b, &format!("messages[{i}].content[{j}]")))
                    .collect::<Result<_>>()?,
            };
            messages.push(Message {
                role,
                content,
                name: None,
                extra: Map::new(),
            });
        }
        if !messages.iter().any(|m| !m.role.is_instruction()) {
            return Err(bad(
                "`messages` must contain at least one message".into(),
                "messages".into(),
            ));
        }

        let mut tools = Vec::new();
        let mut hosted_tools = Vec::new();
        for (i, tool) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {
                    let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| {
                        bad(
                            format!("tools[{i}] needs a string `name`"),
                            format!("tools[{i}].name"),
                        )
                    })?;
                    tools.push(Tool {
                        name: name.to_owned(),
                        description: tool
                            .get("description")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                        parameters: tool.get("input_schema").cloned(),
                        strict: tool.get("strict").and_then(Value::as_bool),
                        cache: cache_hint(&tool),
                    });
                }
                Some(_) => hosted_tools.push(HostedTool {
                    api: Api::Anthropic,
                    value: tool,
                }),
            }
        }

        let mut parallel_tool_calls = None;
        let tool_choice = match &self.tool_choice {
            None => None,
            Some(choice) => {
                if choice
                    .get("disable_parallel_tool_use")
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    parallel_tool_calls = Some(false);
                }
                Some(match choice.get("type").and_then(Value::as_str) {
                    Some("auto") => ToolChoice::Auto,
                    Some("any") => ToolChoice::Required,
                    Some("none") => ToolChoice::None,
                    Some("tool") => ToolChoice::Tool {
                        name: choice
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                    },
                    _ => {
                        return Err(bad(
                            "tool_choice.type must be one of auto, any, tool, none".into(),
                            "tool_choice.type".into(),
                        ))
                    }
                })
            }
        };

        let effort = self
            .output_config
            .as_ref()
            .and_then(|c| c.get("effort"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let reasoning = match self
            .thinking
            .as_ref()
            .and_then(|t| t.get("type"))
            .and_then(Value::as_str)
        {
            Some("enabled") => Some(Reasoning {
                effort,
                budget_tokens: self
                    .thinking
                    .as_ref()
                    .and_then(|t| t.get("budget_tokens"))
                    .and_then(Value::as_u64)
                    .map(|b| b as u32),
            }),
            Some("adaptive") => Some(Reasoning {
                effort: effort.or(Some("medium".into())),
                budget_tokens: None,
            }),
            _ => effort.map(|effort| Reasoning {
                effort: Some(effort),
                budget_tokens: None,
            }),
        };
        let response_format = self
            .output_config
            .as_ref()
            .and_then(|c| c.get("format"))
            .and_then(|f| f.get("schema"))
            .map(|schema| ResponseFormat::JsonSchema {
                name: "response".into(),
                schema: schema.clone(),
                strict: Some(true),
                description: None,
            });
        let user = self
            .metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned);

        // Keep the client's own spelling of these for an Anthropic provider.
        let mut extra = self.extra;
        for (name, value) in [
            ("thinking", self.thinking),
            ("output_config", self.output_config.map(Value::Object)),
            ("metadata", self.metadata.map(Value::Object)),
            ("tool_choice", self.tool_choice),
        ] {
            if let Some(value) = value {
                extra.insert(name.into(), value);
            }
        }
        Ok(ChatRequest {
            model: self.model,
            messages,
            tools,
            hosted_tools,
            tool_choice,
            parallel_tool_calls,
            response_format,
            sampling: Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                max_tokens: self.max_tokens,
                stop: self.stop_sequences.unwrap_or_default(),
                ..Sampling::default()
            },
            stream: self.stream.unwrap_or(false),
            // Anthropic streams always carry usage.
            include_usage: true,
            n: None,
            user,
            reasoning,
            passthrough: Passthrough {
                api: Some(Api::Anthropic),
                fields: extra,
                headers: beta
                    .map(|b| vec![("anthropic-beta".to_owned(), b)])
                    .unwrap_or_default(),
            },
        })
    }
}

fn block_to_canonical(block: Value, at: &str) -> Result<Part> {
    let kind = block
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let string = |name: &str| -> Result<String> {
        block
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                bad(
                    format!("{at} of type {kind} needs a string `{name}`"),
                    format!("{at}.{name}"),
                )
            })
    };
    Ok(match kind.as_str() {
        "text" => Part::Text {
            text: string("text")?,
            cache: cache_hint(&block),
        },
        "image" => {
            let source = block.get("source").cloned().unwrap_or_default();
            let image = match source.get("type").and_then(Value::as_str) {
                Some("base64") => ImageSource::Base64 {
                    media_type: source
                        .get("media_type")
                        .and_then(Value::as_str)
                        .unwrap_or("image/png")
                        .to_owned(),
                    data: source
                        .get("data")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                },
                Some("url") => ImageSource::Url {
                    url: source
                        .get("url")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                },
                // File references only mean something to Anthropic itself.
                _ => {
                    return Ok(Part::Opaque {
                        api: Api::Anthropic,
                        value: block,
                    })
                }
            };
            Part::Image {
                source: image,
                detail: None,
                cache: cache_hint(&block),
            }
        }
        "tool_use" => Part::ToolCall {
            id: string("id")?,
            name: string("name")?,
            arguments: block
                .get("input")
                .map(Value::to_string)
                .unwrap_or_else(|| "{}".into()),
        },
        "tool_result" => {
            let content = match block.get("content") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::String(text)) => vec![Part::text(text.clone())],
                Some(Value::Array(items)) => items
                    .iter()
                    .enumerate()
                    .map(|(k, item)| {
                        block_to_canonical(item.clone(), &format!("{at}.content[{k}]"))
                    })
                    .collect::<Result<_>>()?,
                Some(_) => {
                    return Err(bad(
                        format!("{at}.content must be a string or an array"),
                        format!("{at}.content"),
                    ))
                }
            };
            Part::ToolResult {
                call_id: string("tool_use_id")?,
                content,
                is_error: block
                    .get("is_error")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                cache: cache_hint(&block),
            }
        }
        "thinking" => Part::Reasoning {
            text: string("thinking")?,
            signature: block
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_owned),
            redacted: None,
        },
        "redacted_thinking" => Part::Reasoning {
            text: String::new(),
            signature: None,
            redacted: Some(string("data")?),
        },
        "" => {
            return Err(bad(
                format!("{at} needs a string `type`"),
                format!("{at}.type"),
            ))
        }
        _ => Part::Opaque {
            api: Api::Anthropic,
            value: block,
        },
    })
}

// ------------------------------------------------------------------ canonical -> wire

impl MessagesRequest {
    /// The request to send to an Anthropic provider for `model`.
    pub fn from_canonical(req: &ChatRequest, model: &str) -> Result<MessagesRequest> {
        if req.n.unwrap_or(1) > 1 {
            return Err(bad(
                "Anthropic models return one answer per request: `n` must be 1".into(),
                "n".into(),
            ));
        }
        let same_api = req.passthrough.for_api(Api::Anthropic);
        let mut extra = same_api.cloned().unwrap_or_default();

        // Leading instructions go to `system`. Later ones stay system turns in place when an
        // Anthropic client sent them so (it knows its model takes them); from other APIs they
        // join `system`, which every Claude model accepts.
        let system_turns_in_place = req.passthrough.api == Some(Api::Anthropic);
        let mut system: Vec<Value> = Vec::new();
        let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for m in &req.messages {
            let mut blocks = parts_to_blocks(&m.content);
            let role = if m.role.is_instruction() {
                // Instructions are text only.
                blocks.retain(|b| b.get("type").and_then(Value::as_str) == Some("text"));
                if turns.is_empty() || !system_turns_in_place {
                    system.extend(blocks);
                    continue;
                }
                "system"
            } else if m.role == Role::Assistant {
                "assistant"
            } else {
                "user"
            };
            if blocks.is_empty() {
                continue;
            }
            // Consecutive turns of one role become one turn; tool results lead a user turn.
            match turns.last_mut() {
                Some((last, existing)) if *last == role => existing.extend(blocks),
                _ => turns.push((role, blocks)),
            }
        }
        if let Some(format) = &req.response_format {
            if !extra.contains_key("output_config") {
                let schema = match format {
                    ResponseFormat::JsonSchema { schema, .. } => Some(schema.clone()),
                    ResponseFormat::JsonObject => Some(json!({"type": "object"})),
                    ResponseFormat::Text => None,
                };
                if let Some(schema) = schema {
                    let mut config = Map::new();
                    config.insert(
                        "format".into(),
                        json!({"type": "json_schema", "schema": schema}),
                    );
                    extra.insert("output_config".into(), Value::Object(config));
                }
            }
        }
        let mut max_tokens = req.sampling.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if !extra.contains_key("thinking") {
            if let Some(r) = &req.reasoning {
                let budget = r.budget_tokens.or_else(|| {
                    r.effort
                        .as_deref()
                        .filter(|e| *e != "none")
                        .map(budget_for_effort)
                });
                if let Some(budget) = budget {
                    let budget = budget.max(1024);
                    // The budget must leave room for the answer.
                    max_tokens = max_tokens.max(budget + 1024);
                    extra.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": budget}),
                    );
                }
            }
        }
        if !extra.contains_key("metadata") {
            if let Some(user) = &req.user {
                extra.insert("metadata".into(), json!({"user_id": user}));
            }
        }
        let tool_choice = match extra.remove("tool_choice") {
            Some(choice) => Some(choice),
            None => {
                let mut choice = match &req.tool_choice {
                    None if req.parallel_tool_calls == Some(false) => Some(json!({"type": "auto"})),
                    None => None,
                    Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
                    Some(ToolChoice::Required) => Some(json!({"type": "any"})),
                    Some(ToolChoice::None) => Some(json!({"type": "none"})),
                    Some(ToolChoice::Tool { name }) => Some(json!({"type": "tool", "name": name})),
                };
                if req.parallel_tool_calls == Some(false) {
                    if let Some(Value::Object(c)) = &mut choice {
                        c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
                    }
                }
                choice
            }
        };
        let mut tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    tool.insert("description".into(), json!(d));
                }
                tool.insert(
                    "input_schema".into(),
                    t.parameters
                        .clone()
                        .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                );
                with_cache(Value::Object(tool), &t.cache)
            })
            .collect();
        tools.extend(
            req.hosted_tools
                .iter()
                .filter(|t| t.api == Api::Anthropic)
                .map(|t| t.value.clone()),
        );
        let s = &req.sampling;
        Ok(MessagesRequest {
            model: model.to_owned(),
            messages: turns
                .into_iter()
                .map(|(role, blocks)| InputMessage {
                    role: role.to_owned(),
                    content: ContentWire::Blocks(blocks),
                })
                .collect(),
            max_tokens: Some(max_tokens),
            system: (!system.is_empty()).then_some(SystemWire::Blocks(system)),
            tools: (!tools.is_empty()).then_some(tools),
            tool_choice,
            stop_sequences: (!s.stop.is_empty()).then(|| s.stop.clone()),
            temperature: s.temperature,
            top_p: s.top_p,
            top_k: s.top_k,
            stream: req.stream.then_some(true),
            metadata: None,
            thinking: None,
            output_config: None,
            extra,
        })
    }
}

/// Canonical parts as Anthropic blocks. Tool results come first, as the API requires them at
/// the start of a user turn; empty text is dropped, since the API refuses it.
fn parts_to_blocks(parts: &[Part]) -> Vec<Value> {
    let mut results = Vec::new();
    let mut blocks = Vec::new();
    for part in parts {
        match part {
            Part::ToolResult {
                call_id,
                content,
                is_error,
                cache,
            } => {
                let mut block = json!({"type": "tool_result", "tool_use_id": call_id, "content": parts_to_blocks(content)});
                if *is_error {
                    block["is_error"] = Value::Bool(true);
                }
                results.push(with_cache(block, cache));
            }
            other => blocks.extend(part_to_block(other)),
        }
    }
    results.extend(blocks);
    results
}

fn part_to_block(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text { text, cache } if !text.is_empty() => {
            with_cache(json!({"type": "text", "text": text}), cache)
        }
        Part::Text { .. } => return None,
        Part::Image { source, cache, .. } => {
            let source = match source {
                ImageSource::Base64 { media_type, data } => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                ImageSource::Url { url } => json!({"type": "url", "url": url}),
            };
            with_cache(json!({"type": "image", "source": source}), cache)
        }
        Part::ToolCall {
            id,
            name,
            arguments,
        } => {
            json!({"type": "tool_use", "id": id, "name": name, "input": super::response::tool_input(arguments)})
        }
        // Only signed reasoning can go back to Anthropic; another provider's is dropped.
        Part::Reasoning {
            text,
            signature: Some(signature),
            ..
        } => {
            json!({"type": "thinking", "thinking": text, "signature": signature})
        }
        Part::Reasoning {
            redacted: Some(data),
            ..
        } => json!({"type": "redacted_thinking", "data": data}),
        Part::Reasoning { .. } => return None,
        Part::Refusal { text } => json!({"type": "text", "text": text}),
        Part::Opaque {
            api: Api::Anthropic,
            value,
        } => value.clone(),
        Part::Opaque { .. } | Part::ToolResult { .. } => return None,
    })
}
