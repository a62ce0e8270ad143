//! The `generateContent` request, built from a canonical [`ChatRequest`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::content::{Blob, Content, FileData, FunctionCall, FunctionResponse, PartWire};
use super::schema::{clean_parameters, clean_schema};
use crate::canonical::{
    Api, ChatRequest, ImageSource, Message, Part, Reasoning, ResponseFormat, Role, ToolChoice,
};
use crate::error::{Error, Result};

/// The placeholder signature Google documents for function calls the model did not make itself
/// (history from another model, or from a client that dropped the real signature). Without any
/// signature Gemini 3 refuses the whole request.
const FOREIGN_CALL_SIGNATURE: &str = "skip_thought_signature_validator";

/// Thinking budgets for OpenAI-style `reasoning_effort`, in tokens.
const EFFORT_BUDGETS: [(&str, u32); 5] = [
    ("none", 0),
    ("minimal", 0),
    ("low", 1024),
    ("medium", 8192),
    ("high", 24576),
];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest {
    pub contents: Vec<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation_config: Option<GenerationConfig>,
    /// safetySettings, cachedContent and whatever else a Gemini-speaking client sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolWire {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub function_declarations: Vec<FunctionDeclaration>,
    /// googleSearch, codeExecution ...
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// OpenAPI-subset schema (see [`super::schema`]); absent for a function without parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub function_calling_config: FunctionCallingConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig {
    /// AUTO, ANY (must call one) or NONE.
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_function_names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
}

impl GenerateContentRequest {
    /// The request to send for upstream `model`. Fails (400) on what Gemini cannot be told:
    /// tool-call arguments that are not a JSON object, a tool result for an unknown call, an
    /// unknown reasoning effort. Sampling fields Gemini lacks (`user`, `parallel_tool_calls`)
    /// are dropped; Gemini decides on parallel calls itself.
    pub fn from_canonical(req: &ChatRequest, model: &str) -> Result<GenerateContentRequest> {
        let (system_instruction, contents) = Turns::new(req, model).build(&req.messages)?;
        let tools = if req.tools.is_empty() {
            Vec::new()
        } else {
            vec![ToolWire {
                function_declarations: req
                    .tools
                    .iter()
                    .map(|t| FunctionDeclaration {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: t.parameters.as_ref().and_then(clean_parameters),
                    })
                    .collect(),
                extra: Map::new(),
            }]
        };
        let tool_config = req
            .tool_choice
            .as_ref()
            .filter(|_| !tools.is_empty())
            .map(|choice| {
                let (mode, names) = match choice {
                    ToolChoice::Auto => ("AUTO", None),
                    ToolChoice::None => ("NONE", None),
                    ToolChoice::Required => ("ANY", None),
                    ToolChoice::Tool { name } => ("ANY", Some(vec![name.clone()])),
                };
                ToolConfig {
                    function_calling_config: FunctionCallingConfig {
                        mode: mode.into(),
                        allowed_function_names: names,
                    },
                }
            });
        Ok(GenerateContentRequest {
            contents,
            system_instruction,
            tools,
            tool_config,
            generation_config: generation_config(req)?,
            extra: req
                .passthrough
                .for_api(Api::Gemini)
                .cloned()
                .unwrap_or_default(),
        })
    }
}

/// Everything in `generationConfig`, or `None` when nothing is set.
fn generation_config(req: &ChatRequest) -> Result<Option<GenerationConfig>> {
    let s = &req.sampling;
    let (response_mime_type, response_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json".to_owned()), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (
            Some("application/json".to_owned()),
            Some(clean_schema(schema)),
        ),
    };
    let config = GenerationConfig {
        stop_sequences: s.stop.clone(),
        response_mime_type,
        response_schema,
        candidate_count: req.n,
        max_output_tokens: s.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k,
        seed: s.seed,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        thinking_config: req.reasoning.as_ref().map(thinking_config).transpose()?,
        extra: Map::new(),
    };
    // Judged on the serialised form, so a field added later cannot be forgotten here.
    let empty =
        serde_json::to_value(&config).is_ok_and(|v| v.as_object().is_some_and(Map::is_empty));
    Ok((!empty).then_some(config))
}

/// A budget in tokens (given, or from the effort), and thought summaries whenever thinking is on:
/// a client that asked for reasoning wants to see it.
fn thinking_config(reasoning: &Reasoning) -> Result<ThinkingConfig> {
    let budget = match (reasoning.budget_tokens, reasoning.effort.as_deref()) {
        (Some(budget), _) => Some(budget),
        (None, Some(effort)) => Some(
            EFFORT_BUDGETS
                .iter()
                .find(|(name, _)| *name == effort)
                .map(|(_, budget)| *budget)
                .ok_or_else(|| {
                    Error::invalid_request(format!(
                        "reasoning effort `{effort}` is not one of none, minimal, low, medium, high"
                    ))
                    .with_param("reasoning_effort")
                })?,
        ),
        (None, None) => None,
    };
    Ok(ThinkingConfig {
        thinking_budget: budget,
        include_thoughts: (budget != Some(0)).then_some(true),
    })
}

/// Turns canonical messages into Gemini contents.
struct Turns<'a> {
    req: &'a ChatRequest,
    /// Whether the model is one that checks thought signatures on function calls.
    signatures: bool,
    /// Function name of every tool call seen so far, by call id: Gemini answers calls by name.
    call_names: HashMap<&'a str, &'a str>,
}

impl<'a> Turns<'a> {
    fn new(req: &'a ChatRequest, model: &str) -> Turns<'a> {
        Turns {
            req,
            signatures: checks_signatures(model),
            call_names: HashMap::new(),
        }
    }

    /// The system instruction and the turns. Leading system and developer messages become the
    /// system instruction (their text: it takes nothing else); Gemini has no instruction role
    /// later on, so a later one becomes a user turn saying what it is. Adjacent turns of one role are merged: Gemini wants all
    /// results of one step's calls in the single turn after it, while OpenAI sends one message
    /// per result.
    fn build(mut self, messages: &'a [Message]) -> Result<(Option<Content>, Vec<Content>)> {
        let mut system = Vec::new();
        let mut contents: Vec<Content> = Vec::new();
        let mut leading = true;
        for (i, m) in messages.iter().enumerate() {
            let (role, parts) = if m.role.is_instruction() {
                let text = m.joined_text();
                if text.is_empty() {
                    continue;
                }
                if leading {
                    system.push(PartWire::text(text));
                    continue;
                }
                ("user", vec![PartWire::text(format!("System: {text}"))])
            } else {
                leading = false;
                match m.role {
                    Role::Assistant => ("model", self.model_parts(m, i)?),
                    _ => ("user", self.user_parts(m, i)?),
                }
            };
            if parts.is_empty() {
                // Gemini refuses a turn without parts; an empty message says nothing anyway.
                continue;
            }
            match contents.last_mut() {
                Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
                _ => contents.push(Content {
                    role: Some(role.into()),
                    parts,
                }),
            }
        }
        if contents.is_empty() && !system.is_empty() {
            // Only instructions: Gemini needs at least one turn, so they become it.
            return Ok((
                None,
                vec![Content {
                    role: Some("user".into()),
                    parts: system,
                }],
            ));
        }
        let system = (!system.is_empty()).then_some(Content {
            role: None,
            parts: system,
        });
        Ok((system, contents))
    }

    /// An assistant message. Reasoning text is not sent back (Gemini does not need its thought
    /// summaries); reasoning signatures are, on the part that followed them.
    fn model_parts(&mut self, m: &'a Message, i: usize) -> Result<Vec<PartWire>> {
        let mut parts: Vec<PartWire> = Vec::new();
        let mut signature: Option<String> = None;
        for part in &m.content {
            let mut wire = match part {
                Part::Reasoning {
                    signature: Some(s), ..
                } => {
                    signature = Some(s.clone());
                    continue;
                }
                Part::Text { text, .. } | Part::Refusal { text } if !text.is_empty() => {
                    PartWire::text(text.clone())
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    self.call_names.insert(id, name);
                    PartWire {
                        function_call: Some(FunctionCall {
                            id: None,
                            name: name.clone(),
                            args: call_arguments(arguments, id, name, i)?,
                        }),
                        ..PartWire::default()
                    }
                }
                Part::Opaque {
                    api: Api::Gemini,
                    value,
                } => match serde_json::from_value(value.clone()) {
                    Ok(wire) => wire,
                    Err(_) => continue,
                },
                _ => continue,
            };
            wire.thought_signature = signature.take().or(wire.thought_signature.take());
            parts.push(wire);
        }
        if let Some(signature) = signature {
            // A signature after the last part belongs to the turn's end (Gemini sends it on an
            // empty text part when streaming); the last part carries it back.
            match parts.last_mut() {
                Some(last) if last.thought_signature.is_none() => {
                    last.thought_signature = Some(signature)
                }
                _ => parts.push(PartWire {
                    text: Some(String::new()),
                    thought_signature: Some(signature),
                    ..PartWire::default()
                }),
            }
        }
        if self.signatures {
            if let Some(first_call) = parts.iter_mut().find(|p| p.function_call.is_some()) {
                first_call
                    .thought_signature
                    .get_or_insert_with(|| FOREIGN_CALL_SIGNATURE.to_owned());
            }
        }
        Ok(parts)
    }

    /// A user or tool message: text, images, and tool results as function responses.
    fn user_parts(&self, m: &Message, i: usize) -> Result<Vec<PartWire>> {
        let mut parts = Vec::new();
        for part in &m.content {
            match part {
                Part::Text { text, .. } | Part::Refusal { text } if !text.is_empty() => {
                    parts.push(PartWire::text(text.clone()))
                }
                Part::Image { source, .. } => parts.push(image_part(source)),
                Part::ToolResult {
                    call_id,
                    content,
                    is_error,
                    ..
                } => {
                    let name = self.result_name(call_id, i)?;
                    parts.push(PartWire {
                        function_response: Some(FunctionResponse {
                            id: None,
                            name: name.to_owned(),
                            response: result_body(content, *is_error),
                        }),
                        ..PartWire::default()
                    });
                    // Images a tool returned follow its result as parts of the same turn.
                    for inner in content {
                        if let Part::Image { source, .. } = inner {
                            parts.push(image_part(source));
                        }
                    }
                }
                Part::Opaque {
                    api: Api::Gemini,
                    value,
                } => {
                    if let Ok(wire) = serde_json::from_value(value.clone()) {
                        parts.push(wire);
                    }
                }
                _ => {}
            }
        }
        Ok(parts)
    }

    /// The function a tool result answers. Legacy OpenAI `function` messages name the function
    /// instead of a call id, so a declared tool name is accepted too.
    fn result_name(&self, call_id: &str, i: usize) -> Result<&str> {
        if let Some(name) = self.call_names.get(call_id) {
            return Ok(name);
        }
        if let Some(tool) = self.req.tools.iter().find(|t| t.name == call_id) {
            return Ok(&tool.name);
        }
        Err(Error::invalid_request(format!(
            "messages[{i}] is the result of tool call `{call_id}`, but no earlier assistant message made a call with that id; Gemini needs the name of the function it answers"
        ))
        .with_param(format!("messages[{i}]")))
    }
}

/// Whether `model` checks thought signatures on function calls: Gemini 3 and later. Older
/// models and other families (Gemma) get no placeholder signature.
fn checks_signatures(model: &str) -> bool {
    let name = model.rsplit('/').next().unwrap_or(model);
    name.starts_with("gemini-") && !name.starts_with("gemini-1") && !name.starts_with("gemini-2")
}

/// Arguments as the JSON object Gemini wants. Empty text means no arguments (some clients send
/// `""` for functions without parameters).
fn call_arguments(arguments: &str, id: &str, name: &str, i: usize) -> Result<Value> {
    if arguments.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(args @ Value::Object(_)) => Ok(args),
        Ok(_) => Err(format!("are not a JSON object: {arguments}")),
        Err(e) => Err(format!("are not valid JSON ({e})")),
    }
    .map_err(|problem| {
        Error::invalid_request(format!(
            "messages[{i}]: the arguments of tool call `{id}` ({name}) {problem}"
        ))
        .with_param(format!("messages[{i}]"))
    })
}

/// A tool result as the object Gemini expects: `{"output": ...}`, or `{"error": ...}` for a
/// failed call. Text that is a JSON object or array goes in as JSON, anything else as a string.
fn result_body(content: &[Part], is_error: bool) -> Value {
    let text = content
        .iter()
        .filter_map(|p| match p {
            Part::Text { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let value = match serde_json::from_str::<Value>(&text) {
        Ok(json @ (Value::Object(_) | Value::Array(_))) => json,
        _ => Value::String(text),
    };
    let key = if is_error { "error" } else { "output" };
    Value::Object(Map::from_iter([(key.to_owned(), value)]))
}

fn image_part(source: &ImageSource) -> PartWire {
    match source {
        ImageSource::Base64 { media_type, data } => PartWire {
            inline_data: Some(Blob {
                mime_type: media_type.clone(),
                data: data.clone(),
            }),
            ..PartWire::default()
        },
        ImageSource::Url { url } => PartWire {
            file_data: Some(FileData {
                mime_type: Some(image_mime_type(url).to_owned()),
                file_uri: url.clone(),
            }),
            ..PartWire::default()
        },
    }
}

/// Gemini wants a MIME type with every file; a URL only hints at it through its extension.
fn image_mime_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let extension = path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_from_urls() {
        assert_eq!(image_mime_type("https://x.test/a.PNG?size=2"), "image/png");
        assert_eq!(image_mime_type("https://x.test/a.webp#frag"), "image/webp");
        assert_eq!(image_mime_type("https://x.test/photo"), "image/jpeg");
        assert_eq!(image_mime_type("gs://bucket/doc.pdf"), "application/pdf");
    }

    #[test]
    fn signature_checking_models() {
        assert!(checks_signatures("gemini-3-pro-preview"));
        assert!(checks_signatures("models/gemini-flash-latest"));
        assert!(!checks_signatures("gemini-2.5-flash"));
        assert!(!checks_signatures("gemini-1.5-pro"));
        assert!(!checks_signatures("gemma-3-27b-it"));
    }
}
