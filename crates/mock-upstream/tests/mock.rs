//! End-to-end checks of every reply kind over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;
use tokio::time::Instant;

use futures_util::StreamExt;
use mock_upstream::{MockUpstream, Reply};
use serde_json::{json, Value};

#[path = "mock/gemini.rs"]
mod gemini;

/// A client for these tests. `cargo test --workspace` unifies reqwest's features with the
/// gateway's `rustls-no-provider`, under which building any client, even for plain http://,
/// panics unless a process-wide crypto provider is installed: install ring's (what the gateway
/// uses) first.
fn client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

fn client() -> reqwest::Client {
    client_builder().build().unwrap()
}

async fn post(mock: &MockUpstream, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.url()))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn post_json(mock: &MockUpstream, path: &str, body: &Value) -> (u16, Value) {
    let response = post(mock, path, body).await;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn chat(mock: &MockUpstream, body: Value) -> Value {
    let (status, json) = post_json(mock, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{json}");
    json
}

/// The data payloads of an SSE body, `[DONE]` included.
async fn stream_events(mock: &MockUpstream, body: Value) -> Vec<String> {
    let response = post(mock, "/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n\n"));
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| event.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

fn chunks(events: &[String]) -> Vec<Value> {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn weather_tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ])
}

#[tokio::test]
async fn default_chat_echoes_the_last_user_message() {
    let mock = MockUpstream::start().await.unwrap();
    let reply = chat(
        &mock,
        json!({"model": "gpt-test", "messages": [
            {"role": "system", "content": "be brief"},
            user("first question"),
            {"role": "assistant", "content": "an answer"},
            user("hello there world"),
        ]}),
    )
    .await;
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["model"], "gpt-test");
    assert_eq!(reply["system_fingerprint"], "fp_mock");
    assert_eq!(reply["service_tier"], "default");
    assert!(reply["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &reply["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(
        choice["message"],
        json!({"role": "assistant", "content": "hello there world", "refusal": null})
    );
    assert_eq!(choice["logprobs"], Value::Null);
    assert_eq!(choice["finish_reason"], "stop");
    // Words of all messages (2 + 2 + 2 + 3) plus one per message.
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 13, "completion_tokens": 3, "total_tokens": 16,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
}

#[tokio::test]
async fn content_parts_stop_max_tokens_n_and_json_mode() {
    let mock = MockUpstream::start().await.unwrap();
    let parts = json!({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "describe"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]}]});
    let reply = chat(&mock, parts).await;
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "describe this [1 image(s)]"
    );

    let stop = json!({"model": "m", "stop": ["END", "x"], "messages": [user("one two END three")]});
    let reply = chat(&mock, stop).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "one two ");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");

    let max = json!({"model": "m", "max_tokens": 2, "messages": [user("one two three four")]});
    let reply = chat(&mock, max).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "one two");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 2);

    let n = json!({"model": "m", "n": 3, "messages": [user("hi")]});
    let reply = chat(&mock, n).await;
    let choices = reply["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["content"], "hi");
    }

    let json_mode = json!({"model": "m", "response_format": {"type": "json_object"},
                           "messages": [user("say \"hi\"")]});
    let reply = chat(&mock, json_mode).await;
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        json!({"echo": "say \"hi\""})
    );
}

#[tokio::test]
async fn tool_calls_stream_reassembles_to_the_non_streaming_call() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"model": "m", "tools": weather_tools(),
                         "messages": [user("weather in Paris please")]});
    let reply = chat(&mock, request.clone()).await;
    let choice = &reply["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], "call_0");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments = calls[0]["function"]["arguments"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(arguments).unwrap(),
        json!({"text": "weather in Paris please", "tool": "get_weather"})
    );

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let chunks = chunks(&stream_events(&mock, streaming).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    let mut reassembled = String::new();
    let mut argument_chunks = 0;
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(call["index"], 0);
            if let Some(id) = call.get("id") {
                assert_eq!(id, "call_0");
                assert_eq!(call["function"]["name"], "get_weather");
            }
            let piece = call["function"]["arguments"].as_str().unwrap();
            if !piece.is_empty() {
                argument_chunks += 1;
            }
            reassembled.push_str(piece);
        }
    }
    assert_eq!(reassembled, arguments);
    assert!(argument_chunks > 3, "{argument_chunks}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");

    // tool_choice "none" turns tools off; a named choice picks that tool.
    let mut none = request.clone();
    none["tool_choice"] = json!("none");
    let reply = chat(&mock, none).await;
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "weather in Paris please"
    );
    let mut named = request;
    named["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let reply = chat(&mock, named).await;
    assert_eq!(
        reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
}

#[tokio::test]
async fn parallel_tool_calls_and_tool_results() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"model": "m", "tools": weather_tools(),
                         "messages": [user("do both in parallel")]});
    let reply = chat(&mock, request.clone()).await;
    let calls = reply["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    let names: Vec<_> = calls
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap())
        .collect();
    let ids: Vec<_> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    assert_eq!(ids, ["call_0", "call_1"]);

    let mut streaming = request;
    streaming["stream"] = json!(true);
    let chunks = chunks(&stream_events(&mock, streaming).await);
    let mut arguments = [String::new(), String::new()];
    for chunk in &chunks {
        for call in chunk["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            arguments[index].push_str(call["function"]["arguments"].as_str().unwrap());
        }
    }
    for (call, streamed) in calls.iter().zip(&arguments) {
        assert_eq!(call["function"]["arguments"], streamed.as_str());
    }

    let result = json!({"model": "m", "tools": weather_tools(), "messages": [
        user("weather?"),
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_0", "content": "sunny, 21C"},
    ]});
    let reply = chat(&mock, result).await;
    assert_eq!(
        reply["choices"][0]["message"]["content"],
        "tool result: sunny, 21C"
    );
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn text_stream_with_include_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true},
                         "messages": [user("hello big world")]});
    let chunks = chunks(&stream_events(&mock, request).await);
    assert_eq!(
        chunks[0]["choices"][0],
        json!({"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
               "logprobs": null, "finish_reason": null})
    );
    let pieces: Vec<_> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(pieces, ["hello", " big", " world"]);
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    for chunk in &chunks[..5] {
        assert_eq!(chunk["usage"], Value::Null);
        assert!(chunk.get("usage").is_some());
        assert_eq!(chunk["model"], "m");
    }
    let last = &chunks[5];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 4);
    assert_eq!(last["usage"]["completion_tokens"], 3);
    assert_eq!(last["usage"]["total_tokens"], 7);
    assert_eq!(chunks.len(), 6);
}

#[tokio::test]
async fn scripted_replies_are_fifo_then_default() {
    let mock = MockUpstream::start().await.unwrap();
    mock.enqueue(Reply::json(201, json!({"first": true})));
    mock.enqueue(Reply::raw(502, "text/html", "<html>bad gateway</html>"));
    let body = json!({"model": "m", "messages": [user("hi")]});

    let (status, json) = post_json(&mock, "/anything", &body).await;
    assert_eq!((status, json), (201, json!({"first": true})));
    let response = post(&mock, "/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["content-type"], "text/html");
    assert_eq!(response.text().await.unwrap(), "<html>bad gateway</html>");
    let reply = chat(&mock, body).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "hi");
}

#[tokio::test]
async fn error_replies_have_openai_shape() {
    let mock = MockUpstream::start().await.unwrap();
    mock.enqueue(Reply::error(429, "slow down").header("retry-after", "2"));
    mock.enqueue(Reply::error(503, "overloaded"));
    mock.enqueue(Reply::error(400, "bad field"));
    let body = json!({});

    let response = post(&mock, "/v1/chat/completions", &body).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "2");
    let json: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(
        json,
        json!({"error": {"message": "slow down", "type": "requests", "param": null,
                         "code": "rate_limit_exceeded"}})
    );
    let (status, json) = post_json(&mock, "/v1/chat/completions", &body).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"]["type"], "server_error");
    let (status, json) = post_json(&mock, "/v1/chat/completions", &body).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(json["error"]["message"], "bad field");

    // Default errors: unknown path, malformed JSON.
    let (status, json) = post_json(&mock, "/v1/nope", &body).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"]["code"], "unknown_url");
    let response = client()
        .post(format!("{}/v1/chat/completions", mock.url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let json: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn cut_after_breaks_the_stream() {
    let mock = MockUpstream::start().await.unwrap();
    let events = (0..5).map(|i| format!("{{\"n\":{i}}}")).collect();
    mock.enqueue(Reply::sse(events).cut_after(2));
    mock.enqueue(Reply::default_behaviour().cut_after(1));

    let response = post(&mock, "/v1/chat/completions", &json!({})).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the stream should end with an error");
    assert_eq!(
        String::from_utf8(received).unwrap(),
        "data: {\"n\":0}\n\ndata: {\"n\":1}\n\n"
    );

    let request = json!({"model": "m", "stream": true, "messages": [user("a b c")]});
    let response = post(&mock, "/v1/chat/completions", &request).await;
    assert!(response.text().await.is_err());
}

#[tokio::test]
async fn drop_connection_and_hang() {
    let mock = MockUpstream::start().await.unwrap();
    mock.enqueue(Reply::drop_connection());
    mock.enqueue(Reply::hang());
    let client = client();
    let url = format!("{}/v1/chat/completions", mock.url());

    let error = client.post(&url).body("{}").send().await.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");

    let started = Instant::now();
    let error = client
        .post(&url)
        .body("{}")
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(mock.request_count(), 2);
}

#[tokio::test]
async fn delays_apply_before_headers_and_between_events() {
    let mock = MockUpstream::start().await.unwrap();
    mock.enqueue(Reply::json(200, json!({})).delay(Duration::from_millis(150)));
    mock.enqueue(Reply::default_behaviour().chunk_delay(Duration::from_millis(40)));

    let started = Instant::now();
    let response = post(&mock, "/", &json!({})).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), 200);

    let request = json!({"model": "m", "stream": true, "messages": [user("a b c")]});
    let started = Instant::now();
    let events = stream_events(&mock, request).await;
    // role, 3 words, finish, [DONE]: five gaps.
    assert_eq!(events.len(), 6);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn an_event_gap_spaces_every_default_stream_unless_a_reply_sets_its_own() {
    let options = mock_upstream::Options {
        event_gap: Duration::from_millis(30),
        ..mock_upstream::Options::default()
    };
    let mock = MockUpstream::start_on(([127, 0, 0, 1], 0).into(), options)
        .await
        .unwrap();
    let request = json!({"model": "m", "stream": true, "messages": [user("a b c")]});
    let started = Instant::now();
    assert_eq!(stream_events(&mock, request.clone()).await.len(), 6);
    // Five gaps of 30 ms.
    assert!(started.elapsed() >= Duration::from_millis(150));

    mock.enqueue(Reply::default_behaviour().chunk_delay(Duration::from_millis(1)));
    let started = Instant::now();
    assert_eq!(stream_events(&mock, request).await.len(), 6);
    assert!(started.elapsed() < Duration::from_millis(150));
}

#[tokio::test]
async fn records_requests() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "m", "messages": [user("hi")]});
    client()
        .post(format!("{}/v1/chat/completions?trace=1", mock.url()))
        .header("authorization", "Bearer sk-test")
        .header("x-custom", "yes")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let received = mock.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.query.as_deref(), Some("trace=1"));
    assert_eq!(request.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(request.header("x-custom"), Some("yes"));
    assert_eq!(request.header("missing"), None);
    assert_eq!(request.json(), body);
    assert_eq!(request.body, body.to_string());
    assert_eq!(mock.request_count(), 1);

    mock.enqueue(Reply::error(500, "never sent"));
    mock.clear();
    assert!(mock.received().is_empty());
    assert_eq!(mock.request_count(), 0);
    let reply = chat(&mock, body).await;
    assert_eq!(reply["choices"][0]["message"]["content"], "hi");
}

#[tokio::test]
async fn azure_deployment_paths() {
    let mock = MockUpstream::start().await.unwrap();
    let response = client()
        .post(format!(
            "{}/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
            mock.url()
        ))
        .header("api-key", "azure-key")
        .body(json!({"messages": [user("from azure")]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(reply["model"], "my-gpt");
    assert_eq!(reply["choices"][0]["message"]["content"], "from azure");
    let request = &mock.received()[0];
    assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(request.header("api-key"), Some("azure-key"));

    let (status, reply) = post_json(
        &mock,
        "/openai/deployments/my-embed/embeddings?api-version=2024-10-21",
        &json!({"input": "x"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(reply["model"], "my-embed");
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::new();
    for quad in text.as_bytes().chunks(4) {
        let digits: Vec<u8> = quad
            .iter()
            .filter(|&&c| c != b'=')
            .map(|&c| value(c))
            .collect();
        let n = digits.iter().fold(0u32, |n, &d| n << 6 | u32::from(d)) << (6 * (4 - digits.len()));
        out.extend(&n.to_be_bytes()[1..digits.len()]);
    }
    out
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let mock = MockUpstream::start().await.unwrap();
    let request = json!({"model": "text-embedding-3-small", "input": ["hello world", "bye"]});
    let (status, floats) = post_json(&mock, "/v1/embeddings", &request).await;
    assert_eq!(status, 200);
    assert_eq!(floats["object"], "list");
    assert_eq!(floats["model"], "text-embedding-3-small");
    assert_eq!(
        floats["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );
    let data = floats["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[0]["object"], "embedding");
    let vector: Vec<f32> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(vector.len(), 8);
    let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);

    let mut base64 = request.clone();
    base64["encoding_format"] = json!("base64");
    let (_, encoded) = post_json(&mock, "/v1/embeddings", &base64).await;
    let bytes = decode_base64(encoded["data"][0]["embedding"].as_str().unwrap());
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, vector);

    let single = json!({"model": "e", "input": "hello world", "dimensions": 3});
    let (_, reply) = post_json(&mock, "/v1/embeddings", &single).await;
    assert_eq!(reply["data"].as_array().unwrap().len(), 1);
    assert_eq!(reply["data"][0]["embedding"].as_array().unwrap().len(), 3);
    let tokens = json!({"model": "e", "input": [[1, 2, 3], [4]]});
    let (_, reply) = post_json(&mock, "/v1/embeddings", &tokens).await;
    assert_eq!(reply["usage"]["prompt_tokens"], 4);
    let (status, _) = post_json(&mock, "/v1/embeddings", &json!({"model": "e"})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn lists_models() {
    let mock = MockUpstream::start().await.unwrap();
    let response = client()
        .get(format!("{}/v1/models", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let list: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(
        list["data"][0],
        json!({"id": "mock-gpt", "object": "model", "created": 0, "owned_by": "mock"})
    );
}

#[tokio::test]
async fn speaks_h2c_with_prior_knowledge() {
    let mock = MockUpstream::start().await.unwrap();
    let client = client_builder().http2_prior_knowledge().build().unwrap();
    let response = client
        .post(format!("{}/v1/chat/completions", mock.url()))
        .body(json!({"model": "m", "messages": [user("over h2")]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let reply: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "over h2");
}

#[tokio::test]
async fn stops_on_shutdown_and_on_drop() {
    for explicit in [true, false] {
        let mock = MockUpstream::start().await.unwrap();
        let addr = mock.addr();
        mock.enqueue(Reply::hang());
        let client = client();
        let hanging = tokio::spawn(client.post(mock.url()).body("{}").send());
        while mock.request_count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if explicit {
            mock.shutdown();
        } else {
            drop(mock);
        }
        // The hanging request is cut off and new connections are refused.
        assert!(hanging.await.unwrap().is_err());
        let deadline = Instant::now() + Duration::from_secs(2);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(Instant::now() < deadline, "still accepting after shutdown");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections() {
    let mock = MockUpstream::start().await.unwrap();
    let body = json!({"model": "m", "stream": true, "messages": [user("load test")]}).to_string();
    // No idle connections kept, so every request opens its own. (One shared client: building
    // 500 clients, each loading the TLS roots that workspace builds enable, took ~50 s.)
    let client = client_builder().pool_max_idle_per_host(0).build().unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let url = format!("{}/v1/chat/completions", mock.url());
            let request = client.post(url).body(body.clone());
            tokio::spawn(async move {
                let text = request.send().await?.text().await?;
                Ok::<_, reqwest::Error>(text.ends_with("data: [DONE]\n\n"))
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap());
    }
    assert_eq!(mock.request_count(), 500);
}

#[tokio::test]
async fn a_prompt_can_ask_for_fragments_that_cut_through_words() {
    let mock = MockUpstream::start().await.unwrap();
    let prompt = "say hello mock-fragments: 3";
    // OpenAI: text in pieces of three characters, then a call's arguments likewise.
    let request = json!({"model": "m", "stream": true, "messages": [user(prompt)]});
    let text_chunks = chunks(&stream_events(&mock, request).await);
    let pieces: Vec<&str> = text_chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(pieces.concat(), prompt);
    assert!(pieces[..pieces.len() - 1]
        .iter()
        .all(|p| p.chars().count() == 3));
    let call = r#"mock-call: get_weather {"city": "Paris"} mock-fragments: 2"#;
    let request = json!({"model": "m", "stream": true, "tools": weather_tools(),
                         "messages": [user(call)]});
    let call_chunks = chunks(&stream_events(&mock, request).await);
    let arguments: Vec<&str> = call_chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(arguments.concat(), r#"{"city":"Paris"}"#);
    assert!(arguments.iter().all(|p| p.chars().count() <= 2));

    // Anthropic.
    let response = client()
        .post(format!("{}/v1/messages", mock.url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(
            json!({"model": "m", "max_tokens": 100, "stream": true,
                   "messages": [{"role": "user", "content": "héllo wörld mock-fragments: 4"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let deltas: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|e| e["delta"]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(deltas.concat(), "héllo wörld mock-fragments: 4");
    assert_eq!(deltas[0], "héll");

    // Gemini.
    let events = gemini::stream_of(&mock, "one two mock-fragments: 5").await;
    assert_eq!(events[0], "one t");
    assert_eq!(events.concat(), "one two mock-fragments: 5");
}
