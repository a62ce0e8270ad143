//! Canonical chat request: messages made of typed parts, tools, sampling and output options.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Api;

/// A chat request as every provider sees it, whichever surface it came in on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The public model name the client asked for; providers receive the upstream name separately.
    pub model: String,
    /// The conversation in order. System and developer turns may appear anywhere, not only first.
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    /// Tools the provider runs itself (web search, code execution ...), as the client's API
    /// defines them; sent only to a provider of that API, dropped for others.
    pub hosted_tools: Vec<HostedTool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub sampling: Sampling,
    pub stream: bool,
    /// Whether the client wants usage reported in the stream. Providers always ask upstream for
    /// usage (accounting needs it); the surface drops it when the client did not ask.
    pub include_usage: bool,
    /// Number of choices to generate.
    pub n: Option<u32>,
    /// The end user on whose behalf the call is made.
    pub user: Option<String>,
    pub reasoning: Option<Reasoning>,
    /// Fields the model does not know, forwarded only to a provider speaking `passthrough.api`.
    pub passthrough: Passthrough,
}

/// Unmodelled top-level fields and request headers, and the API they belong to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Passthrough {
    pub api: Option<Api>,
    pub fields: Map<String, Value>,
    /// API-specific headers worth forwarding (e.g. `anthropic-beta`), lower-case names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl Passthrough {
    /// The fields, if they may be sent to a provider speaking `api`.
    pub fn for_api(&self, api: Api) -> Option<&Map<String, Value>> {
        (self.api == Some(api) && !self.fields.is_empty()).then_some(&self.fields)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub max_tokens: Option<u32>,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    /// System and developer turns are both instructions to the model.
    pub fn is_instruction(self) -> bool {
        matches!(self, Role::System | Role::Developer)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    /// Participant name (OpenAI `name`).
    pub name: Option<String>,
    /// Unmodelled message fields (e.g. a vendor's `prefix` flag), for the API the request came in on.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Message {
        Message {
            role,
            content: vec![Part::text(text)],
            name: None,
            extra: Map::new(),
        }
    }

    /// All text parts joined, ignoring other kinds of part.
    pub fn joined_text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text { text, .. } = part {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(text);
            }
        }
        out
    }
}

/// One piece of a message.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<CacheHint>,
    },
    Image {
        source: ImageSource,
        /// OpenAI's `detail` (auto/low/high).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<CacheHint>,
    },
    /// A call the assistant made; `arguments` is the JSON text exactly as the model produced it.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a call, sent back by the client.
    ToolResult {
        call_id: String,
        content: Vec<Part>,
        #[serde(default)]
        is_error: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<CacheHint>,
    },
    /// Model reasoning ("thinking"). `signature` lets a provider verify it was not altered.
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
        /// Encrypted reasoning some providers return instead of text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redacted: Option<String>,
    },
    Refusal {
        text: String,
    },
    /// A part the model does not know (audio, files ...), kept as sent, for the API it came from.
    Opaque {
        api: Api,
        value: Value,
    },
}

impl Part {
    pub fn text(text: impl Into<String>) -> Part {
        Part::Text {
            text: text.into(),
            cache: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    Url { url: String },
    Base64 { media_type: String, data: String },
}

impl ImageSource {
    /// Parses `data:<media type>;base64,<data>` URLs into their parts; any other URL stays a URL.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:") {
            if let Some((media_type, data)) = rest.split_once(";base64,") {
                return ImageSource::Base64 {
                    media_type: media_type.to_owned(),
                    data: data.to_owned(),
                };
            }
        }
        ImageSource::Url {
            url: url.to_owned(),
        }
    }

    /// The image as a URL, turning inline data into a `data:` URL.
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Url { url } => url.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// A prompt-caching hint (Anthropic `cache_control`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CacheHint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments.
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
    pub cache: Option<CacheHint>,
}

/// A provider-run tool in its API's own shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostedTool {
    pub api: Api,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool.
    Required,
    /// The model must call this tool.
    Tool {
        name: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
        description: Option<String>,
    },
}

/// How much the model should reason, in whichever form the client gave it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reasoning {
    /// OpenAI's `reasoning_effort`: minimal, low, medium, high.
    pub effort: Option<String>,
    /// Anthropic's / Gemini's thinking budget.
    pub budget_tokens: Option<u32>,
}

impl Reasoning {
    /// An OpenAI-style effort level, derived from a thinking budget when only that was given.
    pub fn as_effort(&self) -> Option<String> {
        self.effort.clone().or_else(|| {
            self.budget_tokens.map(|b| {
                match b {
                    0..=4095 => "low",
                    4096..=16383 => "medium",
                    _ => "high",
                }
                .to_owned()
            })
        })
    }
}

impl ChatRequest {
    /// The text of the last user turn (what the built-in mock echoes).
    pub fn last_user_text(&self) -> Option<String> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::joined_text)
    }
}
