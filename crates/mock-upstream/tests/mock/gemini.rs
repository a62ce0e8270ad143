//! The Gemini API paths: default behaviour, framings, refusals and errors in Gemini's shape.

use serde_json::{json, Value};

use super::{post, post_json};
use mock_upstream::{MockUpstream, Reply};

const GENERATE: &str = "/v1beta/models/gemini-test:generateContent";
const STREAM: &str = "/v1beta/models/gemini-test:streamGenerateContent";

fn user(text: &str) -> Value {
    json!({"role": "user", "parts": [{"text": text}]})
}

fn declarations() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "get_time"}
    ]}])
}

async fn generate(mock: &MockUpstream, body: Value) -> Value {
    let (status, json) = post_json(mock, GENERATE, &body).await;
    assert_eq!(status, 200, "{json}");
    json
}

/// The responses of an `alt=sse` stream.
async fn stream(mock: &MockUpstream, body: Value) -> Vec<Value> {
    let response = post(mock, &format!("{STREAM}?alt=sse"), &body).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

fn text_of(response: &Value) -> String {
    response["candidates"][0]["content"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p["text"].as_str())
        .collect()
}

#[tokio::test]
async fn echoes_with_usage_and_identity() {
    let mock = MockUpstream::start().await.unwrap();
    let reply = generate(
        &mock,
        json!({
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "contents": [user("first"), {"role": "model", "parts": [{"text": "ok"}]}, user("hello there world")]
        }),
    )
    .await;
    let candidate = &reply["candidates"][0];
    assert_eq!(
        candidate["content"],
        json!({"parts": [{"text": "hello there world"}], "role": "model"})
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    assert_eq!(reply["modelVersion"], "gemini-test");
    assert!(reply["responseId"]
        .as_str()
        .unwrap()
        .starts_with("mock-gemini-"));
    // Words (2 + 1 + 1 + 3) plus one per turn and one for the system instruction.
    assert_eq!(reply["usageMetadata"]["promptTokenCount"], 11);
    assert_eq!(reply["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(reply["usageMetadata"]["totalTokenCount"], 14);
}

#[tokio::test]
async fn generation_config_is_honoured() {
    let mock = MockUpstream::start().await.unwrap();
    let with = |config: Value| json!({"contents": [user("one two END three four")], "generationConfig": config});

    let reply = generate(&mock, with(json!({"stopSequences": ["END"]}))).await;
    assert_eq!(text_of(&reply), "one two ");
    let reply = generate(&mock, with(json!({"maxOutputTokens": 2}))).await;
    assert_eq!(text_of(&reply), "one two");
    assert_eq!(reply["candidates"][0]["finishReason"], "MAX_TOKENS");
    let reply = generate(&mock, with(json!({"responseMimeType": "application/json"}))).await;
    let echoed: Value = serde_json::from_str(&text_of(&reply)).unwrap();
    assert_eq!(echoed, json!({"echo": "one two END three four"}));
    let reply = generate(&mock, with(json!({"candidateCount": 2}))).await;
    assert_eq!(reply["candidates"].as_array().unwrap().len(), 2);
    assert_eq!(reply["candidates"][1]["index"], 1);
    let reply = generate(
        &mock,
        with(json!({"thinkingConfig": {"includeThoughts": true}})),
    )
    .await;
    assert_eq!(
        reply["candidates"][0]["content"]["parts"][0],
        json!({"text": "Thinking about: one two END three four", "thought": true})
    );
    assert_eq!(reply["usageMetadata"]["thoughtsTokenCount"], 7);
}

#[tokio::test]
async fn function_calls_and_their_results() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"contents": [user("weather in Paris")], "tools": declarations()});
    let reply = generate(&mock, request.clone()).await;
    assert_eq!(
        reply["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_weather",
                                 "args": {"text": "weather in Paris", "tool": "get_weather"}}}])
    );
    assert_eq!(reply["candidates"][0]["finishReason"], "STOP");

    let mut parallel = request.clone();
    parallel["contents"] = json!([user("both, in parallel")]);
    let reply = generate(&mock, parallel).await;
    let names: Vec<_> = reply["candidates"][0]["content"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["functionCall"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);

    let mut none = request.clone();
    none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    assert_eq!(text_of(&generate(&mock, none).await), "weather in Paris");
    let mut named = request.clone();
    named["toolConfig"] =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let reply = generate(&mock, named).await;
    assert_eq!(
        reply["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );

    let result = json!({"tools": declarations(), "contents": [
        user("weather?"),
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}]}
    ]});
    let reply = generate(&mock, result).await;
    assert_eq!(text_of(&reply), r#"tool result: {"output":"sunny"}"#);
}

#[tokio::test]
async fn streams_word_by_word_and_calls_in_one_event() {
    let mock = MockUpstream::start().await.unwrap();
    let events = stream(
        &mock,
        json!({"contents": [user("hello big world")], "generationConfig": {"thinkingConfig": {"includeThoughts": true}}}),
    )
    .await;
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"][0]["thought"],
        true
    );
    let pieces: Vec<String> = events[1..].iter().map(text_of).collect();
    assert_eq!(pieces, ["hello", " big", " world"]);
    for event in &events[..3] {
        assert!(event["candidates"][0].get("finishReason").is_none());
        assert!(event["usageMetadata"].get("candidatesTokenCount").is_none());
        assert_eq!(event["responseId"], events[0]["responseId"]);
    }
    assert_eq!(events[3]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[3]["usageMetadata"]["candidatesTokenCount"], 3);
    assert_eq!(events[3]["usageMetadata"]["thoughtsTokenCount"], 5);

    let calls = stream(
        &mock,
        json!({"contents": [user("do both in parallel")], "tools": declarations()}),
    )
    .await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["candidates"][0]["content"]["parts"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(calls[0]["candidates"][0]["finishReason"], "STOP");

    // Without alt=sse the same responses come as one JSON array.
    let (status, array) = post_json(&mock, STREAM, &json!({"contents": [user("a b")]})).await;
    assert_eq!(status, 200);
    let pieces: Vec<String> = array.as_array().unwrap().iter().map(text_of).collect();
    assert_eq!(pieces, ["a", " b"]);
}

#[tokio::test]
async fn refuses_what_gemini_refuses() {
    let mock = MockUpstream::start().await.unwrap();
    let cases = [
        (
            json!({"contents": [user("x")], "model": "gemini-test"}),
            "Unknown name \"model\"",
        ),
        (
            json!({"contents": [user("x")], "generationConfig": {"max_tokens": 1}}),
            "at 'generation_config'",
        ),
        (
            json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
            "valid role",
        ),
        (json!({"contents": []}), "contents is not specified"),
        (
            json!({"contents": [user("x"), {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}),
            "immediately after a function call turn",
        ),
        (
            json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}}]}]}),
            "Unknown name \"additionalProperties\"",
        ),
        (
            json!({"contents": [user("x")], "tools": [{"functionDeclarations": [{"name": "f",
            "parameters": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
                           "properties": {"a": {"type": "string"}}}}]}]}),
            "Unknown name \"$schema\"",
        ),
    ];
    for (body, expected) in cases {
        let (status, json) = post_json(&mock, GENERATE, &body).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json["error"]["code"], 400);
        assert_eq!(json["error"]["status"], "INVALID_ARGUMENT");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message} / {expected}");
    }
    let (status, json) =
        post_json(&mock, "/v1beta/models/gemini-test:countTokens", &json!({})).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"]["status"], "NOT_FOUND");
}

#[tokio::test]
async fn embeddings_match_the_openai_vectors() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "hello world"}]}},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "bye"}]}, "outputDimensionality": 3}
    ]});
    let (status, reply) = post_json(
        &mock,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        &request,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let embeddings = reply["embeddings"].as_array().unwrap();
    assert_eq!(embeddings[0]["values"].as_array().unwrap().len(), 8);
    assert_eq!(embeddings[1]["values"].as_array().unwrap().len(), 3);
    let (_, openai) = post_json(
        &mock,
        "/v1/embeddings",
        &json!({"model": "e", "input": "hello world"}),
    )
    .await;
    assert_eq!(openai["data"][0]["embedding"], embeddings[0]["values"]);

    let mut wrong_model = request.clone();
    wrong_model["requests"][0]["model"] = json!("models/other");
    let (status, json) = post_json(
        &mock,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        &wrong_model,
    )
    .await;
    assert_eq!(status, 400);
    assert!(json["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests[0].model"));
}

#[tokio::test]
async fn scripted_gemini_errors_and_recording() {
    let mock = MockUpstream::start().await.unwrap();
    mock.enqueue(
        Reply::gemini_error(429, "Resource has been exhausted").header("retry-after", "5"),
    );
    let response = post(&mock, GENERATE, &json!({"contents": [user("x")]})).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}})
    );

    super::client()
        .post(format!("{}{STREAM}?alt=sse", mock.url()))
        .header("x-goog-api-key", "gm-key")
        .body(json!({"contents": [user("hi")]}).to_string())
        .send()
        .await
        .unwrap();
    let received = &mock.received()[1];
    assert_eq!(received.path, STREAM);
    assert_eq!(received.query.as_deref(), Some("alt=sse"));
    assert_eq!(received.header("x-goog-api-key"), Some("gm-key"));
    assert_eq!(received.json()["contents"][0]["parts"][0]["text"], "hi");
}

/// The text pieces of a streamed answer to `prompt`.
pub(super) async fn stream_of(mock: &MockUpstream, prompt: &str) -> Vec<String> {
    stream(mock, json!({"contents": [user(prompt)]}))
        .await
        .iter()
        .map(text_of)
        .filter(|t| !t.is_empty())
        .collect()
}
