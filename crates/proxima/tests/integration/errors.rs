//! Errors exactly as the SPEC table says, in OpenAI's shape, and never a crash.

use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use mock_upstream::{MockUpstream, Reply};
use serde_json::json;

use crate::harness::*;

const CHAT: &str = "/v1/chat/completions";

/// One provider with no retries, so each scripted reply is the whole story.
async fn no_retries(extra_provider_lines: &str) -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .server("max_body_bytes = 4096")
            .openai_with("up", &mock, extra_provider_lines)
            .model_with("chat", "up", "gpt-upstream", "retries = 0"),
    )
    .await;
    (mock, gw)
}

#[tokio::test]
async fn malformed_json_is_400_invalid_request() {
    let (mock, gw) = no_retries("").await;
    let answer = gw
        .post_raw(CHAT, r#"{"model": "chat", "messages": [}"#)
        .await;
    let error = answer.assert_error(400, "invalid_request");
    assert_eq!(error["type"], "invalid_request_error");
    assert!(
        error["message"].as_str().unwrap().contains("JSON"),
        "{error}"
    );
    assert_eq!(mock.request_count(), 0);

    // Trailing garbage after a valid object is malformed too.
    let answer = gw
        .post_raw(CHAT, format!("{} xyz", chat_body("chat", "hi")))
        .await;
    answer.assert_error(400, "invalid_request");
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn wrong_field_types_are_400_naming_the_field() {
    let (mock, gw) = no_retries("").await;
    let cases = [
        (json!({"model": "chat", "messages": "hi"}), "messages"),
        (
            json!({"model": "chat", "messages": [user("hi")], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"model": "chat", "messages": [user("hi")], "max_tokens": -3}),
            "max_tokens",
        ),
        (json!({"model": 42, "messages": [user("hi")]}), "model"),
        (
            json!({"model": "chat", "messages": [user("hi")], "stream": "yes"}),
            "stream",
        ),
    ];
    for (body, field) in cases {
        let answer = gw.chat(body.clone()).await;
        let error = answer.assert_error(400, "invalid_request");
        assert_eq!(error["param"], field, "for {body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(field),
            "the message should name `{field}`: {error}"
        );
    }
    // Missing required fields, and fields the wire types cannot catch.
    let answer = gw.chat(json!({"model": "chat"})).await;
    let error = answer.assert_error(400, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("messages"));
    let answer = gw.chat(json!({"model": "chat", "messages": []})).await;
    assert_eq!(
        answer.assert_error(400, "invalid_request")["param"],
        "messages"
    );
    let answer = gw
        .chat(json!({"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}))
        .await;
    assert_eq!(
        answer.assert_error(400, "invalid_request")["param"],
        "messages[0].role"
    );
    assert_eq!(mock.request_count(), 0);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn invalid_utf8_and_empty_bodies_are_400() {
    let (mock, gw) = no_retries("").await;
    let mut body = br#"{"model": "chat", "messages": [{"role": "user", "content": ""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    body.extend_from_slice(br#""}]}"#);
    gw.post_raw(CHAT, body)
        .await
        .assert_error(400, "invalid_request");

    let answer = gw.post_raw(CHAT, "").await;
    let error = answer.assert_error(400, "invalid_request");
    assert!(error["message"].as_str().unwrap().contains("empty"));
    gw.post_raw(CHAT, "   \n")
        .await
        .assert_error(400, "invalid_request");
    gw.post_raw(CHAT, "null")
        .await
        .assert_error(400, "invalid_request");
    gw.post_raw(CHAT, "[]")
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(mock.request_count(), 0);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn deeply_nested_json_is_400_not_a_crash() {
    let mock = MockUpstream::start().await.unwrap();
    // A big limit so the depth, not the size, is what gets refused.
    let gw = Gateway::start(one_model(&mock).server("max_body_bytes = 10_000_000")).await;

    let arrays = "[".repeat(100_000);
    gw.post_raw(CHAT, arrays)
        .await
        .assert_error(400, "invalid_request");

    // Nested inside an unknown field, which the gateway keeps as free-form JSON.
    let objects = format!(
        r#"{{"model": "chat", "messages": [{{"role": "user", "content": "x"}}], "vendor": {}{}}}"#,
        r#"{"a":"#.repeat(100_000),
        "}".repeat(100_000)
    );
    gw.post_raw(CHAT, objects)
        .await
        .assert_error(400, "invalid_request");

    // And inside a message's content parts.
    let parts = format!(
        r#"{{"model": "chat", "messages": [{{"role": "user", "content": [{}]}}]}}"#,
        "[".repeat(50_000)
    );
    gw.post_raw(CHAT, parts)
        .await
        .assert_error(400, "invalid_request");
    assert_eq!(mock.request_count(), 0);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413_with_and_without_content_length() {
    let (mock, gw) = no_retries("").await;
    let big = json!({"model": "chat", "messages": [user(&"x".repeat(8000))]}).to_string();

    let answer = gw.post_raw(CHAT, big.clone()).await;
    let error = answer.assert_error(413, "request_too_large");
    assert!(
        error["message"].as_str().unwrap().contains("4096"),
        "{error}"
    );

    // Chunked transfer encoding: no content-length to check up front.
    let pieces: Vec<Result<Bytes, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let answer = gw
        .post_raw(
            CHAT,
            reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)),
        )
        .await;
    answer.assert_error(413, "request_too_large");

    // Far over the limit: the gateway answers before the client has finished sending.
    let huge = json!({"model": "chat", "messages": [user(&"z".repeat(1_000_000))]}).to_string();
    gw.post_raw(CHAT, huge)
        .await
        .assert_error(413, "request_too_large");

    // The embeddings endpoint has the same limit.
    let embed = json!({"model": "chat", "input": "y".repeat(8000)});
    gw.post_json("/v1/embeddings", &embed)
        .await
        .assert_error(413, "request_too_large");

    // Just under the limit is fine.
    let small = json!({"model": "chat", "messages": [user(&"x".repeat(3000))]});
    assert_eq!(gw.chat(small).await.status, 200);
    assert_eq!(mock.request_count(), 1);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (mock, gw) = no_retries("").await;
    let answer = gw.chat(chat_body("gpt-nonexistent", "hi")).await;
    let error = answer.assert_error(404, "model_not_found");
    assert_eq!(error["param"], "model");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("gpt-nonexistent"));
    gw.post_json("/v1/embeddings", &json!({"model": "nope", "input": "text"}))
        .await
        .assert_error(404, "model_not_found");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn unknown_path_is_404_and_wrong_method_is_405_both_json() {
    let (_mock, gw) = no_retries("").await;
    let answer = gw.get("/v1/no/such/endpoint").await;
    let error = answer.assert_error(404, "not_found");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("/v1/no/such/endpoint"));
    gw.post_json("/nothing-here", &json!({}))
        .await
        .assert_error(404, "not_found");
    // Under an Anthropic route, in Anthropic's shape.
    for path in ["/v1/messages/", "/v1/messages/no/such/thing"] {
        let answer = gw.post_json(path, &json!({})).await;
        assert_eq!(answer.status, 404, "{path}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["type"], "error", "{path}: {body}");
        assert_eq!(body["error"]["type"], "not_found_error", "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(path),
            "{body}"
        );
    }

    let answer = gw.get(CHAT).await;
    assert_eq!(answer.status, 405, "{}", answer.text());
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let body = answer.json();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("GET"),
        "{body}"
    );
    let answer = gw.post_json("/v1/models", &json!({})).await;
    assert_eq!(answer.status, 405, "{}", answer.text());
    assert!(answer.json()["error"].is_object());
}

#[tokio::test]
async fn upstream_garbage_200_is_502_upstream_error() {
    let (_mock, gw) = no_retries("").await;
    _mock.enqueue(Reply::raw(200, "application/json", "{\"choices\": [tru"));
    let answer = gw.chat(chat_body("chat", "hi")).await;
    let error = answer.assert_error(502, "upstream_error");
    assert_eq!(error["type"], "server_error");

    _mock.enqueue(Reply::raw(200, "text/html", "<html>proxy login</html>"));
    gw.chat(chat_body("chat", "hi"))
        .await
        .assert_error(502, "upstream_error");
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn upstream_dropping_the_connection_is_502() {
    let (mock, gw) = no_retries("").await;
    mock.enqueue(Reply::drop_connection());
    let answer = gw.chat(chat_body("chat", "hi")).await;
    answer.assert_error(502, "upstream_error");
    assert_eq!(answer.header("x-proxima-attempts"), Some("1"));

    // The same for a stream that never got its first chunk: a plain JSON error, not SSE.
    mock.enqueue(Reply::drop_connection());
    let answer = gw.chat(stream_body("chat", "hi")).await;
    answer.assert_error(502, "upstream_error");
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn upstream_timeout_is_504() {
    let (mock, gw) = no_retries("timeout = \"300ms\"").await;
    mock.enqueue(Reply::hang());
    let started = Instant::now();
    let answer = gw.chat(chat_body("chat", "hi")).await;
    let error = answer.assert_error(504, "upstream_timeout");
    // The upstream never answers: any prompt answer shows the 300 ms timeout at work.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(error["message"].as_str().unwrap().contains("up"));

    // A stream whose upstream never answers: same.
    mock.enqueue(Reply::hang());
    gw.chat(stream_body("chat", "hi"))
        .await
        .assert_error(504, "upstream_timeout");
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn upstream_503_on_every_attempt_is_502_carrying_the_upstream_message() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model_with(&mock, "retries = 1")).await;
    mock.enqueue(Reply::error(503, "The engine is currently overloaded"));
    mock.enqueue(Reply::error(503, "The engine is currently overloaded"));

    let answer = gw.chat(chat_body("chat", "hi")).await;
    let error = answer.assert_error(502, "upstream_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("The engine is currently overloaded"),
        "{error}"
    );
    assert_eq!(answer.header("x-proxima-attempts"), Some("2"));
    assert_eq!(mock.request_count(), 2);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn gateway_survives_a_barrage_of_bad_requests() {
    let (mock, gw) = no_retries("timeout = \"300ms\"").await;
    let bad_bodies: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"\"just a string\"".to_vec(),
        vec![0xff; 100],
        b"{\"model\": null, \"messages\": null}".to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": [{"type": 7}]}]}"#
            .to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#
            .to_vec(),
        br#"{"model": "chat", "messages": [{"role": "tool", "content": "x"}]}"#.to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 0}"#.to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "retrieval"}]}"#
            .to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "yaml"}}"#
            .to_vec(),
        br#"{"model": "chat", "messages": [{"role": "user", "content": "\ud800"}]}"#.to_vec(),
    ];
    for body in bad_bodies {
        let answer = gw.post_raw(CHAT, body.clone()).await;
        assert_eq!(
            answer.status,
            400,
            "for {:?}: {}",
            String::from_utf8_lossy(&body),
            answer.text()
        );
        answer.assert_error(400, "invalid_request");
    }
    mock.enqueue(Reply::hang());
    mock.enqueue(Reply::drop_connection());
    mock.enqueue(Reply::raw(200, "application/json", "not json"));
    for _ in 0..3 {
        let answer = gw.chat(chat_body("chat", "x")).await;
        assert!(answer.status >= 500, "{}", answer.text());
        assert!(answer.json()["error"]["code"].is_string());
    }
    assert_eq!(mock.request_count(), 3);
    gw.assert_still_serves("chat").await;
}

#[tokio::test]
async fn an_upstream_redirect_is_not_followed() {
    let (mock, gw) = no_retries("").await;
    mock.enqueue(
        Reply::json(307, json!({"moved": true}))
            .header("location", &format!("{}/v1/elsewhere", mock.url())),
    );
    let answer = gw.chat(chat_body("chat", "hello")).await;
    answer.assert_error(502, "upstream_error");
    assert_eq!(
        mock.request_count(),
        1,
        "the POST must not be re-sent to the redirect target"
    );
    gw.assert_still_serves("chat").await;
}
