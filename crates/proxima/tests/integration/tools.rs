//! Tools, tool results, images, structured output and sampling options on the OpenAI surface.

use mock_upstream::MockUpstream;
use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test]
async fn tool_call_comes_back_with_id_name_and_arguments() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let answer = gw
        .chat_ok(json!({
            "model": "chat",
            "messages": [user("weather in Paris?")],
            "tools": weather_tools(),
        }))
        .await;
    let body = answer.json();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    let calls = tool_calls(&body);
    assert_eq!(calls.len(), 1, "{body}");
    let (id, name, arguments) = &calls[0];
    assert_eq!(id, "call_0");
    assert_eq!(name, "get_weather");
    let arguments: Value = serde_json::from_str(arguments).expect("arguments are JSON");
    assert_eq!(arguments["text"], "weather in Paris?");
    // The tools reached the upstream intact.
    assert_eq!(mock.received()[0].json()["tools"], weather_tools());
}

#[tokio::test]
async fn parallel_tool_calls_come_back_as_two_calls() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let body = gw
        .chat_ok(json!({
            "model": "chat",
            "messages": [user("weather and time in parallel please")],
            "tools": weather_tools(),
            "tool_choice": "auto",
        }))
        .await
        .json();
    let calls = tool_calls(&body);
    let names: Vec<&str> = calls.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_time"], "{body}");
    assert_ne!(calls[0].0, calls[1].0, "call ids must differ");
    assert_eq!(mock.received()[0].json()["tool_choice"], "auto");
}

#[tokio::test]
async fn tool_choice_and_parallel_flag_are_forwarded() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let choice = json!({"type": "function", "function": {"name": "get_time"}});
    let body = gw
        .chat_ok(json!({
            "model": "chat",
            "messages": [user("in parallel")],
            "tools": weather_tools(),
            "tool_choice": choice,
            "parallel_tool_calls": false,
        }))
        .await
        .json();
    let sent = mock.received()[0].json();
    assert_eq!(sent["tool_choice"], choice);
    assert_eq!(sent["parallel_tool_calls"], false);
    let calls = tool_calls(&body);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, "get_time");
}

#[tokio::test]
async fn tool_result_turn_round_trips() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    // Turn 1: the model calls a tool.
    let first = gw
        .chat_ok(json!({
            "model": "chat",
            "messages": [user("weather in Oslo?")],
            "tools": weather_tools(),
        }))
        .await
        .json();
    let assistant = first["choices"][0]["message"].clone();
    let call_id = assistant["tool_calls"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Turn 2: the client sends the assistant turn back with the tool's result.
    let messages = json!([
        user("weather in Oslo?"),
        {"role": "assistant", "content": null, "tool_calls": assistant["tool_calls"]},
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"}
    ]);
    let second = gw
        .chat_ok(json!({"model": "chat", "messages": messages, "tools": weather_tools()}))
        .await;
    assert_eq!(second.content(), "tool result: sunny, 21C");
    assert_eq!(second.json()["choices"][0]["finish_reason"], "stop");

    let sent = mock.received()[1].json();
    assert_eq!(sent["messages"][1]["role"], "assistant");
    assert_eq!(sent["messages"][1]["tool_calls"], assistant["tool_calls"]);
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C"})
    );
}

#[tokio::test]
async fn images_as_data_and_https_urls_are_forwarded() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let content = json!([
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    ]);
    let answer = gw
        .chat_ok(json!({"model": "chat", "messages": [{"role": "user", "content": content}]}))
        .await;
    assert_eq!(answer.content(), "what is in these? [2 image(s)]");
    assert_eq!(mock.received()[0].json()["messages"][0]["content"], content);
}

#[tokio::test]
async fn json_schema_response_format_is_forwarded() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let format = json!({
        "type": "json_schema",
        "json_schema": {
            "name": "echo",
            "strict": true,
            "schema": {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}
        }
    });
    let answer = gw
        .chat_ok(
            json!({"model": "chat", "messages": [user("structured")], "response_format": format}),
        )
        .await;
    let parsed: Value = serde_json::from_str(&answer.content()).expect("JSON content");
    assert_eq!(parsed, json!({"echo": "structured"}));
    assert_eq!(mock.received()[0].json()["response_format"], format);
}

#[tokio::test]
async fn n_two_gives_two_choices() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let body = gw
        .chat_ok(json!({"model": "chat", "messages": [user("twice")], "n": 2}))
        .await
        .json();
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{body}");
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["message"]["content"], "twice");
    assert_eq!(mock.received()[0].json()["n"], 2);
}

#[tokio::test]
async fn stop_sequences_are_forwarded_and_honoured() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let answer = gw
        .chat_ok(json!({"model": "chat", "messages": [user("one two STOP three")], "stop": ["STOP", "zzz"]}))
        .await;
    assert_eq!(answer.content(), "one two ");
    assert_eq!(mock.received()[0].json()["stop"], json!(["STOP", "zzz"]));

    let answer = gw
        .chat_ok(json!({"model": "chat", "messages": [user("a b c")], "stop": "b"}))
        .await;
    assert_eq!(answer.content(), "a ");
    assert_eq!(mock.received()[1].json()["stop"], "b");
}

#[tokio::test]
async fn max_completion_tokens_and_max_tokens_keep_their_names() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let answer = gw
        .chat_ok(json!({"model": "chat", "messages": [user("one two three four")], "max_completion_tokens": 2}))
        .await;
    assert_eq!(answer.content(), "one two");
    assert_eq!(answer.json()["choices"][0]["finish_reason"], "length");
    let sent = mock.received()[0].json();
    assert_eq!(sent["max_completion_tokens"], 2, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");

    let answer = gw
        .chat_ok(
            json!({"model": "chat", "messages": [user("one two three four")], "max_tokens": 3}),
        )
        .await;
    assert_eq!(answer.content(), "one two three");
    let sent = mock.received()[1].json();
    assert_eq!(sent["max_tokens"], 3, "{sent}");
    assert!(sent.get("max_completion_tokens").is_none(), "{sent}");
}
