//! The `response` object and its output items, built from a canonical answer. The stream
//! state machine builds the same items piece by piece, with the constructors here.

use serde::Serialize;
use serde_json::Value;

use super::file_search::FileSearchResult;
use super::tools::{ToolKind, ToolNames};
use super::{Echo, ResponseContext};
use crate::canonical::{ChatResponse, FinishReason, Part, Usage};
use crate::clock::unix_now;
use crate::error::{Error, ErrorKind};

/// A fresh response id. A stored response is found by it and its owner, so it only has to be
/// unique.
pub fn response_id() -> String {
    format!("resp_{:032x}", fastrand::u128(..))
}

/// A fresh output item id with the API's prefix for its kind (`msg`, `rs`, `fc`, `ctc`, `fs`).
pub fn item_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", fastrand::u128(..))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: u64,
    pub status: Status,
    pub background: bool,
    pub error: Option<ResponseErrorWire>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub usage: Option<UsageWire>,
    #[serde(flatten)]
    pub echo: Echo,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseErrorWire {
    pub code: &'static str,
    pub message: String,
}

impl From<&Error> for ResponseErrorWire {
    fn from(e: &Error) -> ResponseErrorWire {
        // The API's vocabulary for a failed response; clients (Codex) retry rate limits after
        // the delay named in the message and treat the rest as server errors.
        let code = match e.kind {
            ErrorKind::RateLimited | ErrorKind::UpstreamRateLimited => "rate_limit_exceeded",
            ErrorKind::BudgetExceeded => "insufficient_quota",
            _ => "server_error",
        };
        ResponseErrorWire {
            code,
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        status: Status,
        role: &'static str,
        content: Vec<ContentPart>,
    },
    Reasoning {
        id: String,
        summary: Vec<SummaryText>,
        encrypted_content: Option<String>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        arguments: String,
        status: Status,
    },
    CustomToolCall {
        id: String,
        call_id: String,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<String>,
        input: String,
    },
    /// The search the gateway made for the `file_search` tool; `results` only when included.
    FileSearchCall {
        id: String,
        status: Status,
        queries: Vec<String>,
        results: Option<Vec<FileSearchResult>>,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::Reasoning { id, .. }
            | OutputItem::FunctionCall { id, .. }
            | OutputItem::CustomToolCall { id, .. }
            | OutputItem::FileSearchCall { id, .. } => id,
        }
    }

    /// Marks a message or function call cut short (the others have no status).
    pub fn set_status(&mut self, new: Status) {
        if let OutputItem::Message { status, .. } | OutputItem::FunctionCall { status, .. } = self {
            *status = new;
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    OutputText {
        text: String,
        annotations: Vec<Value>,
        logprobs: Vec<Value>,
    },
    Refusal {
        refusal: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct SummaryText {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub text: String,
}

impl SummaryText {
    pub fn new(text: String) -> SummaryText {
        SummaryText {
            kind: "summary_text",
            text,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageWire {
    pub input_tokens: u64,
    pub input_tokens_details: InputDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputDetails,
    pub total_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct InputDetails {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputDetails {
    pub reasoning_tokens: u64,
}

impl From<&Usage> for UsageWire {
    fn from(u: &Usage) -> UsageWire {
        UsageWire {
            input_tokens: u.input_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: u.cached_input_tokens.unwrap_or(0),
            },
            output_tokens: u.output_tokens,
            output_tokens_details: OutputDetails {
                reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
            },
            total_tokens: u.total_tokens(),
        }
    }
}

pub fn message_item(id: String, content: Vec<ContentPart>, status: Status) -> OutputItem {
    OutputItem::Message {
        id,
        status,
        role: "assistant",
        content,
    }
}

/// A reasoning item: its text as the one summary part, and the encrypted (redacted) reasoning
/// only when the client asked for it with `include`, as the API does.
pub fn reasoning_item(
    id: String,
    text: String,
    redacted: Option<String>,
    cx: &ResponseContext,
) -> OutputItem {
    OutputItem::Reasoning {
        id,
        summary: if text.is_empty() {
            Vec::new()
        } else {
            vec![SummaryText::new(text)]
        },
        encrypted_content: redacted.filter(|_| cx.encrypted_reasoning),
    }
}

/// A canonical tool call as the client's kind of call: a `function_call`, or a
/// `custom_tool_call` whose input is the `input` argument, each with its namespace.
pub fn function_call_item(
    id: String,
    call_id: String,
    name: &str,
    arguments: String,
    status: Status,
    tools: &ToolNames,
) -> OutputItem {
    let origin = tools.origin(name);
    match origin.kind {
        ToolKind::Function => OutputItem::FunctionCall {
            id,
            call_id,
            name: origin.name,
            namespace: origin.namespace,
            arguments,
            status,
        },
        ToolKind::Custom => OutputItem::CustomToolCall {
            id,
            call_id,
            name: origin.name,
            namespace: origin.namespace,
            input: custom_input(&arguments),
        },
    }
}

/// The text input of a custom tool call from the arguments of its function form. A model that
/// did not follow the schema still gets its call through, with the arguments as the input.
pub fn custom_input(arguments: &str) -> String {
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(mut map)) => match map.remove("input") {
            Some(Value::String(input)) => input,
            _ => arguments.to_owned(),
        },
        Ok(Value::String(input)) => input,
        _ => arguments.to_owned(),
    }
}

/// How a finish reason ends a response.
pub fn status_for(finish: Option<&FinishReason>) -> (Status, Option<IncompleteDetails>) {
    match finish {
        Some(FinishReason::Length) => (
            Status::Incomplete,
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        ),
        Some(FinishReason::ContentFilter) => (
            Status::Incomplete,
            Some(IncompleteDetails {
                reason: "content_filter",
            }),
        ),
        _ => (Status::Completed, None),
    }
}

impl ResponseObject {
    /// A response without output yet, as `response.created` shows it.
    pub fn in_progress(cx: &ResponseContext, model: &str, created_at: u64) -> ResponseObject {
        ResponseObject {
            id: cx.id.clone(),
            object: "response",
            created_at,
            status: Status::InProgress,
            background: false,
            error: None,
            incomplete_details: None,
            model: if model.is_empty() {
                cx.model.clone()
            } else {
                model.to_owned()
            },
            output: Vec::new(),
            usage: None,
            echo: cx.echo.clone(),
        }
    }

    /// The complete response for a canonical answer. Only the first choice counts: this API
    /// has no `n`.
    pub fn from_canonical(answer: &ChatResponse, cx: &ResponseContext) -> ResponseObject {
        let created = if answer.created == 0 {
            unix_now()
        } else {
            answer.created
        };
        let mut response = ResponseObject::in_progress(cx, &answer.model, created);
        let choice = answer.choices.first();
        // The gateway's search came before the model's answer.
        let mut output: Vec<OutputItem> = cx
            .file_search
            .iter()
            .map(|search| search.item(Status::Completed))
            .collect();
        let mut message: Vec<ContentPart> = Vec::new();
        let flush = |message: &mut Vec<ContentPart>, output: &mut Vec<OutputItem>| {
            if !message.is_empty() {
                output.push(message_item(
                    item_id("msg"),
                    std::mem::take(message),
                    Status::Completed,
                ));
            }
        };
        for part in choice.map(|c| c.message.content.as_slice()).unwrap_or(&[]) {
            match part {
                Part::Text { text, .. } => match message.last_mut() {
                    Some(ContentPart::OutputText { text: last, .. }) => last.push_str(text),
                    _ => message.push(ContentPart::OutputText {
                        text: text.clone(),
                        annotations: Vec::new(),
                        logprobs: Vec::new(),
                    }),
                },
                Part::Refusal { text } => message.push(ContentPart::Refusal {
                    refusal: text.clone(),
                }),
                Part::Reasoning { text, redacted, .. } => {
                    flush(&mut message, &mut output);
                    output.push(reasoning_item(
                        item_id("rs"),
                        text.clone(),
                        redacted.clone(),
                        cx,
                    ));
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    flush(&mut message, &mut output);
                    let origin = cx.tools.origin(name);
                    let prefix = match origin.kind {
                        ToolKind::Function => "fc",
                        ToolKind::Custom => "ctc",
                    };
                    output.push(function_call_item(
                        item_id(prefix),
                        id.clone(),
                        name,
                        arguments.clone(),
                        Status::Completed,
                        &cx.tools,
                    ));
                }
                // Images, tool results and foreign parts do not occur in answers.
                Part::Image { .. } | Part::ToolResult { .. } | Part::Opaque { .. } => {}
            }
        }
        flush(&mut message, &mut output);
        if let Some(search) = &cx.file_search {
            for item in &mut output {
                let OutputItem::Message { content, .. } = item else {
                    continue;
                };
                for part in content {
                    if let ContentPart::OutputText {
                        text, annotations, ..
                    } = part
                    {
                        *annotations = search.citations(text, 0).0;
                    }
                }
            }
        }
        let (status, incomplete) = status_for(choice.and_then(|c| c.finish_reason.as_ref()));
        if status == Status::Incomplete {
            if let Some(last) = output.last_mut() {
                last.set_status(Status::Incomplete);
            }
        }
        response.status = status;
        response.incomplete_details = incomplete;
        response.output = output;
        response.usage = answer.usage.as_ref().map(UsageWire::from);
        response
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::canonical::{Choice, Message, Role};
    use crate::wire::responses::ResponsesRequest;

    fn context(body: Value) -> ResponseContext {
        let req: ResponsesRequest = serde_json::from_value(body).unwrap();
        req.into_canonical().unwrap().context
    }

    fn answer(content: Vec<Part>, finish: FinishReason) -> ChatResponse {
        ChatResponse {
            id: "chatcmpl-1".into(),
            model: "up-model".into(),
            created: 1_700_000_000,
            choices: vec![Choice {
                index: 0,
                message: Message {
                    role: Role::Assistant,
                    content,
                    name: None,
                    extra: Default::default(),
                },
                finish_reason: Some(finish),
                extra: Default::default(),
            }],
            usage: Some(Usage {
                input_tokens: 10,
                output_tokens: 7,
                cached_input_tokens: Some(4),
                cache_creation_input_tokens: None,
                reasoning_tokens: Some(3),
            }),
            extra: Default::default(),
            extra_api: None,
            raw: None,
        }
    }

    #[test]
    fn answer_becomes_items_in_order() {
        let cx = context(json!({
            "model": "fast", "input": "hi", "include": ["reasoning.encrypted_content"],
            "instructions": "Be brief.", "temperature": 0.5,
            "tools": [{"type": "function", "name": "f"}, {"type": "custom", "name": "patch"}],
        }));
        let a = answer(
            vec![
                Part::Reasoning {
                    text: "Think.".into(),
                    signature: None,
                    redacted: Some("enc".into()),
                },
                Part::text("Calling "),
                Part::text("tools."),
                Part::ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                },
                Part::ToolCall {
                    id: "call_2".into(),
                    name: "patch".into(),
                    arguments: "{\"input\":\"diff\"}".into(),
                },
            ],
            FinishReason::ToolCalls,
        );
        let r = serde_json::to_value(ResponseObject::from_canonical(&a, &cx)).unwrap();
        assert!(r["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "up-model");
        assert_eq!(r["created_at"], 1_700_000_000);
        assert_eq!(r["error"], Value::Null);
        assert_eq!(r["incomplete_details"], Value::Null);
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(out[0]["type"], "reasoning");
        assert!(out[0]["id"].as_str().unwrap().starts_with("rs_"));
        assert_eq!(
            out[0]["summary"],
            json!([{"type": "summary_text", "text": "Think."}])
        );
        assert_eq!(out[0]["encrypted_content"], "enc");
        assert_eq!(out[1]["type"], "message");
        assert_eq!(out[1]["role"], "assistant");
        assert_eq!(out[1]["status"], "completed");
        assert_eq!(
            out[1]["content"],
            json!([{"type": "output_text", "text": "Calling tools.", "annotations": [], "logprobs": []}])
        );
        assert_eq!(out[2]["type"], "function_call");
        assert!(out[2]["id"].as_str().unwrap().starts_with("fc_"));
        assert_eq!(out[2]["call_id"], "call_1");
        assert_eq!(out[2]["name"], "f");
        assert_eq!(out[2]["arguments"], "{\"a\":1}");
        assert_eq!(out[2]["status"], "completed");
        assert_eq!(out[3]["type"], "custom_tool_call");
        assert_eq!(out[3]["call_id"], "call_2");
        assert_eq!(out[3]["name"], "patch");
        assert_eq!(out[3]["input"], "diff");
        assert_eq!(
            r["usage"],
            json!({
                "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 3},
                "total_tokens": 17,
            })
        );
        // Echoed request fields.
        assert_eq!(r["instructions"], "Be brief.");
        assert_eq!(r["temperature"], 0.5);
        assert_eq!(r["top_p"], Value::Null);
        assert_eq!(r["tool_choice"], "auto");
        assert_eq!(r["parallel_tool_calls"], true);
        assert_eq!(r["store"], true);
        assert_eq!(r["tools"].as_array().unwrap().len(), 2);
        assert_eq!(r["previous_response_id"], Value::Null);
        assert_eq!(r["metadata"], json!({}));
        assert!(r.get("output_text").is_none(), "output_text is SDK-side");
    }

    #[test]
    fn a_file_search_comes_first_and_its_passages_are_cited() {
        let mut cx = context(json!({
            "model": "m", "input": "holidays?",
            "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}],
            "include": ["file_search_call.results"],
        }));
        assert!(cx.file_search_results);
        cx.file_search = Some(super::super::FileSearchCall {
            id: "fs_1".into(),
            query: "holidays?".into(),
            results: vec![FileSearchResult {
                file_id: "file-a".into(),
                filename: "a.pdf".into(),
                score: 0.5,
                attributes: Default::default(),
                text: "30 days".into(),
            }],
            include_results: true,
        });
        let a = answer(
            vec![Part::text("30 days [1], not [2].")],
            FinishReason::Stop,
        );
        let r = serde_json::to_value(ResponseObject::from_canonical(&a, &cx)).unwrap();
        let out = r["output"].as_array().unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["type"], "file_search_call");
        assert_eq!(out[0]["status"], "completed");
        assert_eq!(out[0]["queries"], json!(["holidays?"]));
        assert_eq!(out[0]["results"][0]["file_id"], "file-a");
        assert_eq!(out[1]["type"], "message");
        assert_eq!(
            out[1]["content"][0]["annotations"],
            json!([{"type": "file_citation", "file_id": "file-a", "filename": "a.pdf", "index": 8}])
        );
        // The tool is echoed as declared.
        assert_eq!(r["tools"][0]["type"], "file_search");
    }

    #[test]
    fn encrypted_reasoning_only_when_included() {
        let cx = context(json!({"model": "m", "input": "hi"}));
        let a = answer(
            vec![Part::Reasoning {
                text: String::new(),
                signature: None,
                redacted: Some("enc".into()),
            }],
            FinishReason::Stop,
        );
        let r = serde_json::to_value(ResponseObject::from_canonical(&a, &cx)).unwrap();
        assert_eq!(r["output"][0]["summary"], json!([]));
        assert_eq!(r["output"][0]["encrypted_content"], Value::Null);
    }

    #[test]
    fn cut_short_answers_are_incomplete() {
        let cx = context(json!({"model": "m", "input": "hi", "max_output_tokens": 16}));
        for (finish, reason) in [
            (FinishReason::Length, "max_output_tokens"),
            (FinishReason::ContentFilter, "content_filter"),
        ] {
            let a = answer(vec![Part::text("partial")], finish);
            let r = serde_json::to_value(ResponseObject::from_canonical(&a, &cx)).unwrap();
            assert_eq!(r["status"], "incomplete");
            assert_eq!(r["incomplete_details"], json!({"reason": reason}));
            assert_eq!(r["output"][0]["status"], "incomplete");
            assert_eq!(r["max_output_tokens"], 16);
        }
    }

    #[test]
    fn refusals_are_message_parts() {
        let cx = context(json!({"model": "m", "input": "hi"}));
        let a = answer(
            vec![Part::Refusal {
                text: "I can't.".into(),
            }],
            FinishReason::Stop,
        );
        let r = serde_json::to_value(ResponseObject::from_canonical(&a, &cx)).unwrap();
        assert_eq!(
            r["output"][0]["content"],
            json!([{"type": "refusal", "refusal": "I can't."}])
        );
    }

    #[test]
    fn custom_input_tolerates_models_that_ignore_the_schema() {
        assert_eq!(custom_input("{\"input\":\"x\"}"), "x");
        assert_eq!(custom_input("\"x\""), "x");
        assert_eq!(custom_input("{\"other\":1}"), "{\"other\":1}");
        assert_eq!(custom_input("not json"), "not json");
    }
}
