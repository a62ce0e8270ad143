//! Non-streaming chat completions through an `openai`-kind provider: what the client gets, and
//! what the upstream receives.

use mock_upstream::{MockUpstream, Reply};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn chat_answer_echoes_with_usage_and_routing_headers() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let answer = gw.chat_ok(chat_body("chat", "hello proxima world")).await;
    let body = answer.json();

    assert_eq!(answer.content(), "hello proxima world");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // The mock counts words: 3 words + 1 per message in, 3 words out.
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 7);
    assert!(answer
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(answer.header("x-proxima-provider"), Some("up"));
    assert_eq!(answer.header("x-proxima-model"), Some("gpt-upstream"));
    assert_eq!(answer.header("x-proxima-attempts"), Some("1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn request_id_is_echoed_when_sent_and_generated_otherwise() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let sent = chat_with_request_id(&gw, "my-trace-id-42").await;
    assert_eq!(sent.status, 200);
    assert_eq!(sent.header("x-request-id"), Some("my-trace-id-42"));

    let first = gw.chat_ok(chat_body("chat", "hi")).await;
    let second = gw.chat_ok(chat_body("chat", "hi")).await;
    let a = first.header("x-request-id").expect("generated request id");
    let b = second.header("x-request-id").expect("generated request id");
    assert!(a.len() >= 8, "{a}");
    assert_ne!(a, b, "generated ids must differ per request");

    // Errors carry one too, so users can quote it.
    let error = gw.chat(chat_body("no-such-model", "hi")).await;
    assert!(error.header("x-request-id").is_some());

    // So do routes outside /v1 and the fallbacks (the id is set around the whole router).
    let unknown = gw.send(gw.client().get(gw.url("/v1/no-such-route"))).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.header("x-request-id").is_some());
    let wrong_method = gw
        .send(gw.client().get(gw.url("/v1/chat/completions")))
        .await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.header("x-request-id").is_some());
    let health = gw
        .send(
            gw.client()
                .get(gw.url("/health/live"))
                .header("x-request-id", "probe-7"),
        )
        .await;
    assert_eq!(health.header("x-request-id"), Some("probe-7"));

    // An id that is not 1 to 128 visible characters is replaced, not echoed.
    let odd = chat_with_request_id(&gw, "has spaces in it").await;
    let replaced = odd.header("x-request-id").expect("a generated id");
    assert!(replaced.starts_with("req_"), "{replaced}");
}

/// A chat completion sent with `x-request-id: id`.
async fn chat_with_request_id(gw: &Gateway, id: &str) -> Answer {
    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(chat_body("chat", "hi").to_string()),
    )
    .await
}

#[tokio::test]
async fn upstream_receives_target_model_and_provider_key() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", "Bearer client-key-should-not-go-upstream")
            .header("content-type", "application/json")
            .body(chat_body("chat", "hi").to_string()),
    )
    .await;

    let received = mock.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.json()["model"], "gpt-upstream");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert!(request
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
}

#[tokio::test]
async fn unknown_request_fields_are_forwarded_untouched() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let logit_bias = json!({"50256": -100, "1234": 5});
    let metadata = json!({"team": "search", "nested": {"a": [1, 2, {"b": null}]}});
    gw.chat_ok(json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "hi", "vendor_message_flag": true}],
        "logit_bias": logit_bias,
        "metadata": metadata,
        "top_k": 5,
        "logprobs": true,
        "top_logprobs": 2,
        "temperature": 0.25,
        "seed": 7,
        "user": "end-user-1",
    }))
    .await;

    let sent = mock.received()[0].json();
    assert_eq!(sent["logit_bias"], logit_bias);
    assert_eq!(sent["metadata"], metadata);
    assert_eq!(sent["top_k"], 5);
    assert_eq!(sent["logprobs"], true);
    assert_eq!(sent["top_logprobs"], 2);
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["user"], "end-user-1");
    assert_eq!(sent["messages"][0]["vendor_message_flag"], true);
    assert!(
        sent.get("stream").is_none() || sent["stream"] == false,
        "{sent}"
    );
}

/// A request body written its own way: member order, spacing, escapes, extensions.
const CLIENT_BODY: &str = r#"{ "messages": [ {"role":"user", "content":"quote \" and {brackets] \\"} ],
  "vendor_flag" : {"model": "not the model", "n": [1, 2.5e3, null]},  "model" : "chat",
  "temperature":0.25 }"#;

/// Posts `body` as it is written to the chat completions route.
async fn post_text(gw: &Gateway, body: &str) -> Answer {
    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn a_request_nothing_changes_goes_to_an_openai_upstream_as_the_client_wrote_it() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let answer = post_text(&gw, CLIENT_BODY).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let sent = mock.received()[0].body.clone();
    assert_eq!(
        std::str::from_utf8(&sent).unwrap(),
        CLIENT_BODY.replace(r#""model" : "chat""#, r#""model" : "gpt-upstream""#),
        "only the model changes"
    );
}

#[tokio::test]
async fn a_request_forwarded_as_written_still_asks_a_stream_for_usage() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let mut stream = gw.stream(stream_body("chat", "one two three")).await;
    let chunks = chunks_until_done(&stream.data().await);
    // The client did not ask for usage: it gets none, but the upstream was asked for it.
    assert!(chunks
        .iter()
        .all(|c| c.get("usage").is_none() || c["usage"].is_null()));
    let sent = mock.received()[0].json();
    assert_eq!(sent["model"], "gpt-upstream");
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // The client's own stream options are kept beside the usage the gateway asks for.
    let mut body = stream_body("chat", "four five");
    body["stream_options"] = json!({"include_obfuscation": false});
    gw.stream(body).await.data().await;
    assert_eq!(
        mock.received()[1].json()["stream_options"],
        json!({"include_obfuscation": false, "include_usage": true})
    );
}

#[tokio::test]
async fn the_gateways_own_fields_never_go_upstream() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;

    let answer = post_text(
        &gw,
        r#"{"model":"chat","conversation":null,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let sent = mock.received()[0].json();
    assert!(sent.get("conversation").is_none(), "{sent}");
    assert_eq!(sent["messages"][0]["content"], "hi");
}

#[tokio::test]
async fn unknown_response_fields_from_upstream_reach_the_client() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    mock.enqueue(Reply::json(
        200,
        json!({
            "id": "chatcmpl-custom",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-upstream-2024",
            "system_fingerprint": "fp_x",
            "vendor_stats": {"queue_ms": 12, "gpu": "h100"},
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "scripted",
                    "annotations": [{"type": "url_citation", "url": "https://example.com"}],
                    "vendor_note": "kept"
                },
                "logprobs": {"content": []},
                "finish_reason": "stop",
                "vendor_choice_field": 3
            }],
            "usage": {"prompt_tokens": 11, "completion_tokens": 1, "total_tokens": 12}
        }),
    ));

    let answer = gw.chat_ok(chat_body("chat", "hi")).await;
    let body = answer.json();
    assert_eq!(body["id"], "chatcmpl-custom");
    assert_eq!(body["model"], "gpt-upstream-2024");
    assert_eq!(body["created"], 1_700_000_000);
    assert_eq!(body["system_fingerprint"], "fp_x");
    assert_eq!(body["vendor_stats"], json!({"queue_ms": 12, "gpu": "h100"}));
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["content"], "scripted");
    assert_eq!(choice["message"]["vendor_note"], "kept");
    assert_eq!(
        choice["message"]["annotations"],
        json!([{"type": "url_citation", "url": "https://example.com"}])
    );
    assert_eq!(choice["logprobs"], json!({"content": []}));
    assert_eq!(choice["vendor_choice_field"], 3);
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(body["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn multi_turn_conversation_is_forwarded_in_order() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    let messages = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an answer"},
        {"role": "developer", "content": "more rules"},
        {"role": "user", "content": "second question", "name": "alice"}
    ]);
    let answer = gw
        .chat_ok(json!({"model": "chat", "messages": messages}))
        .await;
    assert_eq!(answer.content(), "second question");
    assert_eq!(mock.received()[0].json()["messages"], messages);
}

#[tokio::test]
async fn configured_extra_headers_go_upstream_and_a_trailing_slash_in_base_url_is_harmless() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().section(&format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1/\"\napi_key = \"{PROVIDER_KEY}\"\nheaders = {{ \"OpenAI-Organization\" = \"org-42\", \"x-vendor-tag\" = \"blue\" }}\n\n\
         [models.chat]\ntargets = [{{ provider = \"up\", model = \"gpt-upstream\" }}]\n",
        mock.url()
    )))
    .await;
    gw.chat_ok(chat_body("chat", "hi")).await;
    let request = &mock.received()[0];
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(request.header("openai-organization"), Some("org-42"));
    assert_eq!(request.header("x-vendor-tag"), Some("blue"));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
}

#[tokio::test]
async fn a_provider_without_api_key_sends_no_authorization() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().section(&format!(
        "[providers.local]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\n[models.chat]\ntargets = [{{ provider = \"local\", model = \"llama\" }}]\n",
        mock.url()
    )))
    .await;
    gw.send(
        gw.client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("client-key-not-forwarded")
            .header("content-type", "application/json")
            .body(chat_body("chat", "hi").to_string()),
    )
    .await;
    let request = &mock.received()[0];
    assert!(
        request.header("authorization").is_none(),
        "{:?}",
        request.headers
    );
}

/// An OpenAI-kind upstream's answer written its own way: field order, spacing, extensions at
/// every level, usage details the gateway does not model.
const UPSTREAM_ANSWER: &str = r#"{"id":"chatcmpl-v1","object":"chat.completion","created":7,"model":"gpt-upstream","service_tier":"default",
 "choices":[{"index":0,"message":{"role":"assistant","content":"verbatim answer","refusal":null,"annotations":[{"type":"url_citation","url_citation":{"url":"https://example.com","start_index":0,"end_index":8}}]},"logprobs":null,"finish_reason":"stop"}],
 "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}},
 "system_fingerprint":"fp_v1"}"#;

#[tokio::test]
async fn an_openai_answer_reaches_an_openai_client_as_the_upstream_wrote_it() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    mock.enqueue(Reply::raw(200, "application/json", UPSTREAM_ANSWER));

    let answer = gw.chat_ok(chat_body("chat", "hi")).await;
    assert_eq!(
        answer.text(),
        UPSTREAM_ANSWER,
        "nothing on the way reads it"
    );
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-proxima-provider"), Some("up"));
    // The request still went upstream as the gateway writes it.
    assert_eq!(mock.received()[0].json()["model"], "gpt-upstream");
}

/// An answer written anew from the canonical model says what `UPSTREAM_ANSWER` says.
fn assert_means_the_upstream_answer(body: &serde_json::Value) {
    let upstream: serde_json::Value = serde_json::from_str(UPSTREAM_ANSWER).unwrap();
    for field in [
        "id",
        "created",
        "model",
        "service_tier",
        "system_fingerprint",
    ] {
        assert_eq!(body[field], upstream[field], "{field}: {body}");
    }
    assert_eq!(
        body["choices"][0]["message"],
        upstream["choices"][0]["message"]
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 11);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

#[tokio::test]
async fn an_answer_a_stage_may_change_is_written_anew_with_the_same_meaning() {
    let mock = MockUpstream::start().await.unwrap();
    // A masked prompt gets an unmasking stage, which may change the answer.
    let gw = Gateway::start(one_model(&mock).section("[pii]\nmode = \"mask\"\n")).await;
    mock.enqueue(Reply::raw(200, "application/json", UPSTREAM_ANSWER));

    let answer = gw.chat_ok(chat_body("chat", "mail ann@example.com")).await;
    assert_eq!(answer.header("x-proxima-pii"), Some("email"));
    assert_ne!(answer.text(), UPSTREAM_ANSWER);
    assert_means_the_upstream_answer(&answer.json());
}

#[tokio::test]
async fn an_answer_the_cache_keeps_goes_as_the_upstream_wrote_it_and_is_served_again() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock).section("[cache]\nexact = { ttl = \"1h\" }\n")).await;
    mock.enqueue(Reply::raw(200, "application/json", UPSTREAM_ANSWER));

    // The fill keeps the answer but does not change it: read whole, it still goes as it came.
    let first = gw.chat_ok(chat_body("chat", "hi")).await;
    assert_eq!(first.header("x-proxima-cache"), Some("miss"));
    assert_eq!(first.text(), UPSTREAM_ANSWER);

    // What it kept is the whole answer, not an outline of it.
    let again = gw.chat_ok(chat_body("chat", "hi")).await;
    assert_eq!(again.header("x-proxima-cache"), Some("hit"));
    assert_means_the_upstream_answer(&again.json());
    assert_eq!(mock.received().len(), 1);
}
