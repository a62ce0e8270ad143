//! Provider kinds other than plain OpenAI (Azure, the built-in mock), embeddings and models.

use std::time::Duration;
use tokio::time::Instant;

use mock_upstream::MockUpstream;
use serde_json::{json, Value};

use crate::harness::*;

#[tokio::test]
async fn azure_uses_deployment_urls_api_version_and_api_key_header() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().section(&format!(
        "[providers.az]\nkind = \"azure-openai\"\nbase_url = \"{}\"\napi_key = \"{PROVIDER_KEY}\"\napi_version = \"2024-10-21\"\n\n\
         [models.chat]\ntargets = [{{ provider = \"az\", model = \"my-gpt4o-deployment\" }}]\n\n\
         [models.embed]\ntargets = [{{ provider = \"az\", model = \"my-embedding-deployment\" }}]\n",
        mock.url()
    )))
    .await;

    let answer = gw.chat_ok(chat_body("chat", "hello azure")).await;
    assert_eq!(answer.content(), "hello azure");
    assert_eq!(answer.header("x-proxima-provider"), Some("az"));
    assert_eq!(
        answer.header("x-proxima-model"),
        Some("my-gpt4o-deployment")
    );
    let data = gw
        .stream(stream_body("chat", "streamed azure"))
        .await
        .data()
        .await;
    assert_eq!(
        streamed_content(&chunks_until_done(&data), 0),
        "streamed azure"
    );
    let embedded = gw
        .post_json("/v1/embeddings", &json!({"model": "embed", "input": "x"}))
        .await;
    assert_eq!(embedded.status, 200, "{}", embedded.text());

    let received = mock.received();
    assert_eq!(received.len(), 3);
    for (request, operation) in
        received
            .iter()
            .zip(["chat/completions", "chat/completions", "embeddings"])
    {
        let deployment = if operation == "embeddings" {
            "my-embedding-deployment"
        } else {
            "my-gpt4o-deployment"
        };
        assert_eq!(
            request.path,
            format!("/openai/deployments/{deployment}/{operation}")
        );
        assert_eq!(request.query.as_deref(), Some("api-version=2024-10-21"));
        assert_eq!(request.header("api-key"), Some(PROVIDER_KEY));
        assert!(
            request.header("authorization").is_none(),
            "no Authorization header for Azure"
        );
    }
}

#[tokio::test]
async fn embeddings_float_and_base64_pass_through_unchanged() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(Conf::new().openai("up", &mock).model(
        "embed",
        "up",
        "text-embedding-upstream",
    ))
    .await;
    let direct = |body: Value| {
        let url = format!("{}/v1/embeddings", mock.url());
        async move {
            Answer::read(
                http_client()
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.to_string()),
            )
            .await
            .json()
        }
    };

    // Floats, for several inputs, with dimensions.
    let request = json!({"model": "embed", "input": ["first text", "second"], "dimensions": 4});
    let answer = gw.post_json("/v1/embeddings", &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-proxima-provider"), Some("up"));
    assert_eq!(
        answer.header("x-proxima-model"),
        Some("text-embedding-upstream")
    );
    let body = answer.json();
    let mut upstream_request = request.clone();
    upstream_request["model"] = "text-embedding-upstream".into();
    let expected = direct(upstream_request).await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["object"], "embedding");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(
        body["data"][0]["embedding"],
        expected["data"][0]["embedding"]
    );
    assert_eq!(
        body["data"][1]["embedding"],
        expected["data"][1]["embedding"]
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    let sent = mock.received()[0].json();
    assert_eq!(sent["model"], "text-embedding-upstream");
    assert_eq!(sent["dimensions"], 4);

    // Base64 is passed through as the upstream encoded it, not decoded and re-encoded.
    let request = json!({"model": "embed", "input": "base64 please", "encoding_format": "base64"});
    let body = gw.post_json("/v1/embeddings", &request).await.json();
    let mut upstream_request = request.clone();
    upstream_request["model"] = "text-embedding-upstream".into();
    let expected = direct(upstream_request).await;
    let embedding = body["data"][0]["embedding"]
        .as_str()
        .expect("base64 string");
    assert_eq!(
        embedding,
        expected["data"][0]["embedding"].as_str().unwrap()
    );
    // received: [gateway float, direct float, gateway base64, direct base64]
    let sent = &mock.received()[2].json();
    assert_eq!(sent["encoding_format"], "base64");
}

#[tokio::test]
async fn models_endpoint_lists_the_public_models() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .openai("up", &mock)
            .model("zeta", "up", "z")
            .model("alpha", "up", "a")
            .section("[models.\"up/*\"]\ntargets = [{ provider = \"up\", model = \"*\" }]\n"),
    )
    .await;
    let answer = gw.get("/v1/models").await;
    assert_eq!(answer.status, 200);
    let body = answer.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids, ["alpha", "zeta"]);

    // The wildcard is not listed, but serves names under its prefix.
    let answer = gw.chat_ok(chat_body("up/some-model", "wild")).await;
    assert_eq!(answer.header("x-proxima-model"), Some("some-model"));
    assert_eq!(
        mock.received().last().unwrap().json()["model"],
        "some-model"
    );
}

fn builtin_mock(latency: &str) -> Conf {
    Conf::new().section(&format!(
        "[providers.local]\nkind = \"mock\"\nlatency = \"{latency}\"\n\n[models.mock]\ntargets = [{{ provider = \"local\", model = \"mock-1\" }}]\n"
    ))
}

#[tokio::test]
async fn builtin_mock_echoes_with_usage_after_its_latency() {
    let gw = Gateway::start(builtin_mock("150ms")).await;
    let started = Instant::now();
    let answer = gw.chat_ok(chat_body("mock", "echo me back please")).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150), "answered in {took:?}");
    assert!(took < Duration::from_secs(5), "answered in {took:?}");
    assert_eq!(answer.content(), "echo me back please");
    assert_eq!(answer.header("x-proxima-provider"), Some("local"));
    assert_eq!(answer.header("x-proxima-model"), Some("mock-1"));
    let body = answer.json();
    assert_eq!(body["model"], "mock-1");
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn builtin_mock_streams_word_by_word_with_latency_between_chunks() {
    let gw = Gateway::start(builtin_mock("100ms")).await;
    let mut body = stream_body("mock", "one two three four five");
    body["stream_options"] = json!({"include_usage": true});

    let started = Instant::now();
    let mut sse = gw.stream(body).await;
    let events = sse.collect_within(Duration::from_secs(10)).await;
    let data: Vec<String> = events
        .iter()
        .filter_map(|e| e.data().map(str::to_owned))
        .collect();
    let chunks = chunks_until_done(&data);
    assert_eq!(streamed_content(&chunks, 0), "one two three four five");
    let pieces = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(pieces, 5, "one chunk per word");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert_eq!(usage["prompt_tokens"], 6);
    // 100 ms before the first chunk and between each of the ~8 chunks.
    let spread = events.last().unwrap().at - events.first().unwrap().at;
    assert!(
        spread >= Duration::from_millis(500),
        "chunks arrived within {spread:?}: latency not applied between chunks"
    );
    assert!(events.first().unwrap().at - started >= Duration::from_millis(100));
}

#[tokio::test]
async fn builtin_mock_embeds_deterministically() {
    let gw = Gateway::start(builtin_mock("1ms")).await;
    let embed = |input: &str| {
        let body = json!({"model": "mock", "input": input});
        let gw = &gw;
        async move { gw.post_json("/v1/embeddings", &body).await.json() }
    };
    let a = embed("hello").await;
    let b = embed("hello").await;
    let c = embed("world").await;
    assert_eq!(a["data"][0]["embedding"], b["data"][0]["embedding"]);
    assert_ne!(a["data"][0]["embedding"], c["data"][0]["embedding"]);
    assert!(!a["data"][0]["embedding"].as_array().unwrap().is_empty());
}
