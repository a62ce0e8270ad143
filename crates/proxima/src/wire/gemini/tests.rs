//! Translation fixtures: the exact JSON sent for rich canonical requests, and the canonical
//! form of recorded-shape Gemini responses.

use serde_json::{json, Value};

use super::*;
use crate::canonical::{
    ChatRequest, FinishReason, ImageSource, Message, Part, Reasoning, ResponseFormat, Role,
    Sampling, Tool, ToolChoice, Usage,
};
use crate::error::ErrorKind;

fn tool_call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    }
}

fn tool_result(call_id: &str, text: &str, is_error: bool) -> Message {
    Message {
        role: Role::Tool,
        content: vec![Part::ToolResult {
            call_id: call_id.into(),
            content: vec![Part::text(text)],
            is_error,
            cache: None,
        }],
        name: None,
        extra: Default::default(),
    }
}

fn message(role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        name: None,
        extra: Default::default(),
    }
}

fn rich_request() -> ChatRequest {
    ChatRequest {
        model: "smart".into(),
        messages: vec![
            Message::text(Role::System, "Be brief."),
            Message::text(Role::Developer, "Answer in English."),
            message(
                Role::User,
                vec![
                    Part::text("What is in this picture?"),
                    Part::Image {
                        source: ImageSource::from_url("data:image/png;base64,iVBOR"),
                        detail: Some("high".into()),
                        cache: None,
                    },
                    Part::Image {
                        source: ImageSource::from_url("https://x.test/cat.webp?x=1"),
                        detail: None,
                        cache: None,
                    },
                ],
            ),
            message(
                Role::Assistant,
                vec![
                    Part::Reasoning {
                        text: "the user wants weather".into(),
                        signature: Some("c2ln".into()),
                        redacted: None,
                    },
                    tool_call("call_a", "get_weather", r#"{"city": "Paris"}"#),
                    tool_call("call_b", "get_time", ""),
                ],
            ),
            tool_result("call_a", r#"{"temp": 21}"#, false),
            tool_result("call_b", "clock broken", true),
            Message::text(Role::System, "Now use metric units."),
            Message::text(Role::Assistant, "It is 21C."),
            Message::text(Role::User, "Thanks, and tomorrow?"),
        ],
        tools: vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Weather for a city".into()),
                parameters: Some(json!({
                    "$schema": "http://json-schema.org/draft-07/schema#",
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                    "additionalProperties": false
                })),
                strict: Some(true),
                cache: None,
            },
            Tool {
                name: "get_time".into(),
                description: None,
                parameters: Some(json!({"type": "object", "properties": {}})),
                strict: None,
                cache: None,
            },
        ],
        hosted_tools: Vec::new(),
        tool_choice: Some(ToolChoice::Tool {
            name: "get_weather".into(),
        }),
        parallel_tool_calls: Some(false),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "forecast".into(),
            schema: json!({
                "type": "object",
                "properties": {"temp": {"type": "number"}},
                "additionalProperties": false
            }),
            strict: Some(true),
            description: None,
        }),
        sampling: Sampling {
            temperature: Some(0.2),
            top_p: Some(0.9),
            top_k: Some(40),
            max_tokens: Some(256),
            stop: vec!["END".into()],
            seed: Some(7),
            presence_penalty: Some(0.5),
            frequency_penalty: Some(0.25),
        },
        stream: false,
        include_usage: false,
        n: Some(2),
        user: Some("u-1".into()),
        reasoning: Some(Reasoning {
            effort: Some("medium".into()),
            budget_tokens: None,
        }),
        passthrough: Default::default(),
    }
}

fn wire(req: &ChatRequest, model: &str) -> Value {
    match GenerateContentRequest::from_canonical(req, model) {
        Ok(wire) => serde_json::to_value(wire).unwrap_or_default(),
        Err(e) => panic!("translation failed: {e}"),
    }
}

#[test]
fn rich_request_translates_exactly() {
    assert_eq!(
        wire(&rich_request(), "gemini-2.5-flash"),
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this picture?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBOR"}},
                    {"fileData": {"mimeType": "image/webp", "fileUri": "https://x.test/cat.webp?x=1"}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                // Both results in the one turn after the calls, then the mid-conversation
                // system message as user text.
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": {"temp": 21}}}},
                    {"functionResponse": {"name": "get_time", "response": {"error": "clock broken"}}},
                    {"text": "System: Now use metric units."}
                ]},
                {"role": "model", "parts": [{"text": "It is 21C."}]},
                {"role": "user", "parts": [{"text": "Thanks, and tomorrow?"}]}
            ],
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather for a city", "parameters": {
                    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
                }},
                {"name": "get_time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {
                "stopSequences": ["END"],
                "responseMimeType": "application/json",
                "responseSchema": {"type": "object", "properties": {"temp": {"type": "number"}}},
                "candidateCount": 2,
                "maxOutputTokens": 256,
                "temperature": 0.2,
                "topP": 0.9,
                "topK": 40,
                "seed": 7,
                "presencePenalty": 0.5,
                "frequencyPenalty": 0.25,
                "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": true}
            }
        })
    );
}

#[test]
fn minimal_request_has_only_contents() {
    let req = ChatRequest {
        messages: vec![Message::text(Role::User, "hi")],
        tool_choice: Some(ToolChoice::Required), // no tools: nothing to configure
        response_format: Some(ResponseFormat::Text),
        ..ChatRequest::default()
    };
    assert_eq!(
        wire(&req, "gemini-2.0-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
    // Instructions alone: Gemini needs a turn, so they are it.
    let only_system = ChatRequest {
        messages: vec![Message::text(Role::System, "Say hi.")],
        ..ChatRequest::default()
    };
    assert_eq!(
        wire(&only_system, "gemini-2.0-flash"),
        json!({"contents": [{"role": "user", "parts": [{"text": "Say hi."}]}]})
    );
}

#[test]
fn tool_choice_modes_json_object_and_budgets() {
    let mut req = rich_request();
    for (choice, expected) in [
        (ToolChoice::Auto, json!({"mode": "AUTO"})),
        (ToolChoice::None, json!({"mode": "NONE"})),
        (ToolChoice::Required, json!({"mode": "ANY"})),
    ] {
        req.tool_choice = Some(choice);
        assert_eq!(
            wire(&req, "gemini-2.5-pro")["toolConfig"]["functionCallingConfig"],
            expected
        );
    }
    req.response_format = Some(ResponseFormat::JsonObject);
    req.reasoning = Some(Reasoning {
        effort: Some("high".into()),
        budget_tokens: Some(300),
    });
    let config = &wire(&req, "gemini-2.5-pro")["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert!(config.get("responseSchema").is_none());
    // An explicit budget wins over the effort.
    assert_eq!(
        config["thinkingConfig"],
        json!({"thinkingBudget": 300, "includeThoughts": true})
    );
    for (effort, budget) in [("low", 1024), ("high", 24576)] {
        req.reasoning = Some(Reasoning {
            effort: Some(effort.into()),
            budget_tokens: None,
        });
        assert_eq!(
            wire(&req, "gemini-2.5-pro")["generationConfig"]["thinkingConfig"]["thinkingBudget"],
            budget
        );
    }
    // Thinking off: no thoughts to include.
    req.reasoning = Some(Reasoning {
        effort: Some("minimal".into()),
        budget_tokens: None,
    });
    assert_eq!(
        wire(&req, "gemini-2.5-flash")["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 0})
    );
    req.reasoning = Some(Reasoning {
        effort: Some("extreme".into()),
        budget_tokens: None,
    });
    let Err(e) = GenerateContentRequest::from_canonical(&req, "gemini-2.5-flash") else {
        panic!("an unknown effort must be refused")
    };
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert!(e.message.contains("extreme"), "{}", e.message);
}

#[test]
fn gemini_3_function_calls_without_a_signature_get_the_placeholder() {
    let req = ChatRequest {
        messages: vec![
            Message::text(Role::User, "weather?"),
            message(
                Role::Assistant,
                vec![
                    tool_call("c1", "get_weather", "{}"),
                    tool_call("c2", "get_weather", "{}"),
                ],
            ),
            tool_result("c1", "sunny", false),
            tool_result("c2", "rainy", false),
        ],
        ..ChatRequest::default()
    };
    let sent = wire(&req, "gemini-3-pro-preview");
    let parts = &sent["contents"][1]["parts"];
    // Only the first call of a step carries a signature, as Gemini itself sends them.
    assert_eq!(
        parts[0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(parts[1].get("thoughtSignature").is_none());
    assert!(wire(&req, "gemini-2.5-flash")["contents"][1]["parts"][0]
        .get("thoughtSignature")
        .is_none());
    assert_eq!(
        sent["contents"][2]["parts"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn refuses_what_gemini_cannot_be_told() {
    let bad_arguments = ChatRequest {
        messages: vec![
            Message::text(Role::User, "go"),
            message(Role::Assistant, vec![tool_call("c1", "run", "{not json")]),
        ],
        ..ChatRequest::default()
    };
    let Err(e) = GenerateContentRequest::from_canonical(&bad_arguments, "gemini-2.5-flash") else {
        panic!("invalid arguments must be refused")
    };
    assert_eq!(e.kind, ErrorKind::InvalidRequest);
    assert_eq!(e.param.as_deref(), Some("messages[1]"));
    assert!(
        e.message.contains("`c1` (run) are not valid JSON"),
        "{}",
        e.message
    );

    let unknown_call = ChatRequest {
        messages: vec![
            Message::text(Role::User, "go"),
            tool_result("c9", "x", false),
        ],
        ..ChatRequest::default()
    };
    let Err(e) = GenerateContentRequest::from_canonical(&unknown_call, "gemini-2.5-flash") else {
        panic!("a result for an unknown call must be refused")
    };
    assert_eq!(e.param.as_deref(), Some("messages[1]"));
    assert!(e.message.contains("`c9`"), "{}", e.message);
}

#[test]
fn response_becomes_canonical() {
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "Let me think.", "thought": true},
                {"text": "Calling tools."},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "get_time"}},
                {"executableCode": {"language": "PYTHON", "code": "print(1)"}}
            ]},
            "finishReason": "STOP",
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
        }, {
            "index": 1,
            "content": {"role": "model", "parts": [{"functionCall": {"id": "given", "name": "get_time", "args": {}}}]},
            "finishReason": "MAX_TOKENS"
        }],
        "usageMetadata": {
            "promptTokenCount": 10, "cachedContentTokenCount": 4, "candidatesTokenCount": 6,
            "thoughtsTokenCount": 5, "totalTokenCount": 21,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 10}]
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "abc"
    });
    let Ok(response) = serde_json::from_value::<GenerateContentResponse>(body) else {
        panic!("the fixture should parse")
    };
    assert_eq!(response.prompt_blocked(), None);
    let r = response.into_canonical("fallback".into(), "gemini-2.5-flash", 5);
    assert_eq!(r.id, "abc");
    assert_eq!(r.model, "gemini-2.5-flash-001");
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: 10,
            output_tokens: 11,
            cached_input_tokens: Some(4),
            cache_creation_input_tokens: None,
            reasoning_tokens: Some(5),
        })
    );
    let first = &r.choices[0];
    assert_eq!(first.finish_reason, Some(FinishReason::ToolCalls));
    assert!(first.extra.contains_key("safetyRatings"));
    let parts = serde_json::to_value(&first.message.content).unwrap_or_default();
    assert_eq!(
        parts,
        json!([
            {"type": "reasoning", "text": "Let me think."},
            {"type": "text", "text": "Calling tools."},
            {"type": "reasoning", "text": "", "signature": "c2ln"},
            {"type": "tool_call", "id": "call_0", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "tool_call", "id": "call_1", "name": "get_time", "arguments": "{}"},
            {"type": "opaque", "api": "gemini", "value": {"executableCode": {"language": "PYTHON", "code": "print(1)"}}}
        ])
    );
    assert_eq!(r.choices[1].index, 1);
    assert_eq!(r.choices[1].finish_reason, Some(FinishReason::Length));
    assert!(matches!(
        &r.choices[1].message.content[0],
        Part::ToolCall { id, .. } if id == "given"
    ));

    // The reasoning signature goes back on the call it came with.
    let mut req = ChatRequest {
        messages: vec![Message::text(Role::User, "weather?"), first.message.clone()],
        ..ChatRequest::default()
    };
    req.messages[1].content.truncate(4);
    assert_eq!(
        wire(&req, "gemini-2.5-flash")["contents"][1]["parts"],
        json!([
            {"text": "Calling tools."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"}
        ])
    );
}

#[test]
fn finish_reasons_and_blocked_prompts() {
    for (wire, calls, expected) in [
        ("STOP", false, FinishReason::Stop),
        ("STOP", true, FinishReason::ToolCalls),
        ("MAX_TOKENS", false, FinishReason::Length),
        ("SAFETY", false, FinishReason::ContentFilter),
        ("RECITATION", false, FinishReason::ContentFilter),
        ("BLOCKLIST", false, FinishReason::ContentFilter),
        ("PROHIBITED_CONTENT", false, FinishReason::ContentFilter),
        ("SPII", false, FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            false,
            FinishReason::Other("MALFORMED_FUNCTION_CALL".into()),
        ),
    ] {
        assert_eq!(finish_reason_from_wire(wire, calls), expected, "{wire}");
    }
    let blocked: GenerateContentResponse = serde_json::from_value(json!({
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": "no"}
    }))
    .unwrap_or_default();
    assert_eq!(
        blocked.prompt_blocked().as_deref(),
        Some("PROHIBITED_CONTENT: no")
    );
}

#[test]
fn embeddings_request_and_response() {
    use crate::canonical::{EmbeddingInput, EmbeddingVector, EmbeddingsRequest};
    let mut req = EmbeddingsRequest {
        model: "embed".into(),
        input: EmbeddingInput::Texts(vec!["a".into(), "b c".into()]),
        dimensions: Some(3),
        encoding_format: Some("base64".into()),
        user: None,
        passthrough: Default::default(),
    };
    let Ok(wire) = BatchEmbedContentsRequest::from_canonical(&req, "gemini-embedding-001") else {
        panic!("text input should translate")
    };
    assert_eq!(
        serde_json::to_value(&wire).unwrap_or_default(),
        json!({"requests": [
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 3},
            {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b c"}]}, "outputDimensionality": 3}
        ]})
    );
    let answer: BatchEmbedContentsResponse =
        serde_json::from_value(json!({"embeddings": [{"values": [1.0]}, {"values": [1.0, 1.0]}]}))
            .unwrap_or_default();
    let canonical = answer.into_canonical("gemini-embedding-001", req.wants_base64());
    assert!(matches!(&canonical.data[0], EmbeddingVector::Base64(b) if b == "AACAPw=="));
    req.input = EmbeddingInput::Tokens(vec![1, 2]);
    let Err(e) = BatchEmbedContentsRequest::from_canonical(&req, "m") else {
        panic!("token input must be refused")
    };
    assert_eq!(e.param.as_deref(), Some("input"));
}
