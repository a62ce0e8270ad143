//! Stored responses over real sockets: `previous_response_id` chains replayed to OpenAI and
//! Anthropic upstreams (the Codex loop: a call, then only its output), and responses that belong
//! to their key's team.

use mock_upstream::MockUpstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::*;

fn tools() -> Value {
    json!([{
        "type": "function",
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }])
}

/// The `response.completed` event's response in an SSE body.
fn completed(sse: &str) -> Value {
    sse.lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "response.completed")
        .unwrap_or_else(|| panic!("no response.completed in {sse}"))["response"]
        .clone()
}

/// Text of a content value: a string, or the text of its parts.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// What an upstream request carried, one line per turn or block, in order, the same for both
/// APIs: `system: …`, `user: …`, `assistant: …`, `call ID`, `result ID: …`.
fn turns(sent: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let system = text_of(&sent["system"]);
    if !system.is_empty() {
        out.push(format!("system: {system}"));
    }
    for message in sent["messages"].as_array().unwrap() {
        let role = message["role"].as_str().unwrap();
        match (&message["content"], role) {
            // Anthropic blocks, and OpenAI parts.
            (Value::Array(blocks), _) if blocks.iter().any(|b| b["type"] != "text") => {
                for block in blocks {
                    match block["type"].as_str().unwrap() {
                        "text" => out.push(format!("{role}: {}", text_of(&block["text"]))),
                        "tool_use" => out.push(format!("call {}", block["id"].as_str().unwrap())),
                        "tool_result" => out.push(format!(
                            "result {}: {}",
                            block["tool_use_id"].as_str().unwrap(),
                            text_of(&block["content"])
                        )),
                        other => out.push(format!("{role}: <{other}>")),
                    }
                }
            }
            (content, "tool") => out.push(format!(
                "result {}: {}",
                message["tool_call_id"].as_str().unwrap(),
                text_of(content)
            )),
            (content, _) => {
                let text = text_of(content);
                if !text.is_empty() {
                    out.push(format!("{role}: {text}"));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    out.push(format!("call {}", call["id"].as_str().unwrap()));
                }
            }
        }
    }
    out
}

/// Three calls chained by `previous_response_id`, the second streamed, against an upstream of
/// `kind`: each call sends the earlier turns (the call and its output in order), its own
/// instructions and never the earlier ones.
async fn chain_of_three(kind: &str) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .section(&format!(
                "[providers.up]\nkind = \"{kind}\"\nbase_url = \"{}/v1\"\napi_key = \"{PROVIDER_KEY}\"\n",
                mock.url()
            ))
            .model_with("m", "up", "up-model", "retries = 0"),
    )
    .await;
    let first = gw
        .post_json(
            "/v1/responses",
            &json!({"model": "m", "instructions": "First instructions.",
                    "input": "what is the weather in Oslo", "tools": tools()}),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let first = first.json();
    let call = &first["output"][0];
    assert_eq!(call["type"], "function_call", "{first}");
    let call_id = call["call_id"].as_str().unwrap();

    // The Codex loop: only the call's output, streamed.
    let second = gw
        .post_json(
            "/v1/responses",
            &json!({"model": "m", "instructions": "Second instructions.", "stream": true,
                    "previous_response_id": first["id"], "tools": tools(),
                    "input": [{"type": "function_call_output", "call_id": call_id, "output": "sunny"}]}),
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.text());
    let second = completed(&second.text());
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(
        turns(&mock.received()[1].json()),
        [
            "system: Second instructions.".to_owned(),
            "user: what is the weather in Oslo".to_owned(),
            format!("call {call_id}"),
            format!("result {call_id}: sunny"),
        ]
    );
    let said = text_of(&second["output"][0]["content"]);
    assert!(said.contains("sunny"), "{second}");
    // The streamed response was stored as the client saw it.
    let stored = gw
        .get(&format!("/v1/responses/{}", second["id"].as_str().unwrap()))
        .await;
    assert_eq!(stored.json(), second);

    let third = gw
        .post_json(
            "/v1/responses",
            &json!({"model": "m", "input": "thanks mock-no-tools", "tools": tools(),
                    "previous_response_id": second["id"]}),
        )
        .await;
    assert_eq!(third.status, 200, "{}", third.text());
    let third = third.json();
    assert_eq!(third["previous_response_id"], second["id"]);
    let sent = mock.received()[2].json();
    assert_eq!(
        turns(&sent),
        [
            "user: what is the weather in Oslo".to_owned(),
            format!("call {call_id}"),
            format!("result {call_id}: sunny"),
            format!("assistant: {said}"),
            "user: thanks mock-no-tools".to_owned(),
        ]
    );
    assert!(!sent.to_string().contains("instructions."), "{sent}");

    // Each response lists only its own input.
    let items = gw
        .get(&format!(
            "/v1/responses/{}/input_items",
            third["id"].as_str().unwrap()
        ))
        .await
        .json();
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{items}");
    assert_eq!(data[0]["content"][0]["text"], "thanks mock-no-tools");
}

#[tokio::test]
async fn a_chain_replays_its_turns_to_an_openai_upstream() {
    chain_of_three("openai").await;
}

#[tokio::test]
async fn a_chain_replays_its_turns_to_an_anthropic_upstream() {
    chain_of_three("anthropic").await;
}

#[tokio::test]
async fn a_response_belongs_to_its_keys_team() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock).section(
        "[keys.a]\nkey = \"k-alpha\"\nteam = \"alpha\"\n\n\
         [keys.a2]\nkey = \"k-alpha-2\"\nteam = \"alpha\"\n\n\
         [keys.b]\nkey = \"k-beta\"\nteam = \"beta\"\n",
    ))
    .await;
    let as_key = |key: &str, method: Method, path: &str, body: Option<Value>| {
        let mut request = gw.request_as(key, method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        gw.send(request)
    };
    let made = as_key(
        "k-alpha",
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "chat", "input": "team secret"})),
    )
    .await;
    assert_eq!(made.status, 200, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/responses/{id}");
    let items = format!("{path}/input_items");

    // Another team: as if it did not exist.
    as_key("k-beta", Method::GET, &path, None)
        .await
        .assert_error(404, "not_found");
    as_key("k-beta", Method::GET, &items, None)
        .await
        .assert_error(404, "not_found");
    as_key("k-beta", Method::DELETE, &path, None)
        .await
        .assert_error(404, "not_found");
    let error = as_key(
        "k-beta",
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "chat", "input": "and?", "previous_response_id": id})),
    )
    .await
    .assert_error(404, "not_found");
    assert_eq!(error["param"], "previous_response_id");
    assert_eq!(
        mock.request_count(),
        1,
        "the other team's call went nowhere"
    );

    // The same team shares it, and it survived the other team's delete.
    assert_eq!(
        as_key("k-alpha-2", Method::GET, &path, None).await.status,
        200
    );
    let next = as_key(
        "k-alpha-2",
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "chat", "input": "and?", "previous_response_id": id})),
    )
    .await;
    assert_eq!(next.status, 200, "{}", next.text());
    let deleted = as_key("k-alpha", Method::DELETE, &path, None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    as_key("k-alpha", Method::GET, &path, None)
        .await
        .assert_error(404, "not_found");
}
