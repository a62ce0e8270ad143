//! Client keys: who may call, which models, and that secrets stay out of the logs.

use mock_upstream::MockUpstream;
use serde_json::json;

use crate::harness::*;

const MASTER: &str = "master-key-9b1e55";
const KEY_A: &str = "k-a";

async fn with_keys() -> (MockUpstream, Gateway) {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(
        Conf::new()
            .server(&format!("master_key = \"{MASTER}\""))
            .openai("up", &mock)
            .model("m1", "up", "model-one")
            .model("m2", "up", "model-two")
            .section(&format!(
                "[keys.a]\nkey = \"{KEY_A}\"\nteam = \"alpha\"\nmodels = [\"m1\"]\n"
            )),
    )
    .await;
    (mock, gw)
}

async fn chat_as(gw: &Gateway, header: Option<(&str, String)>, model: &str) -> Answer {
    let mut request = gw
        .client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chat_body(model, "hi").to_string());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    gw.send(request).await
}

fn bearer(key: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {key}")))
}

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401() {
    let (mock, gw) = with_keys().await;
    let error = chat_as(&gw, None, "m1")
        .await
        .assert_error(401, "invalid_api_key");
    assert!(error["message"].as_str().unwrap().contains("Authorization"));
    chat_as(&gw, bearer("k-wrong"), "m1")
        .await
        .assert_error(401, "invalid_api_key");
    chat_as(&gw, Some(("x-api-key", "k-wrong".into())), "m1")
        .await
        .assert_error(401, "invalid_api_key");
    chat_as(&gw, bearer(""), "m1")
        .await
        .assert_error(401, "invalid_api_key");
    // Auth also guards the other endpoints.
    gw.get("/v1/models")
        .await
        .assert_error(401, "invalid_api_key");
    gw.post_json("/v1/embeddings", &json!({"model": "m1", "input": "x"}))
        .await
        .assert_error(401, "invalid_api_key");
    assert_eq!(mock.request_count(), 0);
}

#[tokio::test]
async fn bearer_and_x_api_key_both_work() {
    let (_mock, gw) = with_keys().await;
    let answer = chat_as(&gw, bearer(KEY_A), "m1").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = chat_as(&gw, Some(("x-api-key", KEY_A.into())), "m1").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test]
async fn a_key_may_use_only_its_models() {
    let (mock, gw) = with_keys().await;
    let error = chat_as(&gw, bearer(KEY_A), "m2")
        .await
        .assert_error(403, "model_not_allowed");
    assert!(error["message"].as_str().unwrap().contains("m2"));
    assert_eq!(mock.request_count(), 0);
    // An unknown model is still 404, not 403.
    chat_as(&gw, bearer(KEY_A), "m9")
        .await
        .assert_error(404, "model_not_found");
}

#[tokio::test]
async fn the_master_key_may_use_any_model() {
    let (_mock, gw) = with_keys().await;
    for model in ["m1", "m2"] {
        let answer = chat_as(&gw, bearer(MASTER), model).await;
        assert_eq!(answer.status, 200, "{model}: {}", answer.text());
    }
    let answer = chat_as(&gw, Some(("x-api-key", MASTER.into())), "m2").await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn models_lists_only_what_the_key_may_use() {
    let (_mock, gw) = with_keys().await;
    let ids = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let body = answer.json();
        assert_eq!(body["object"], "list");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let for_a = ids(gw
        .send(gw.client().get(gw.url("/v1/models")).bearer_auth(KEY_A))
        .await);
    assert_eq!(for_a, ["m1"]);
    let for_master = ids(gw
        .send(gw.client().get(gw.url("/v1/models")).bearer_auth(MASTER))
        .await);
    assert_eq!(for_master, ["m1", "m2"]);
}

#[tokio::test]
async fn without_any_key_anonymous_requests_work_on_loopback() {
    let mock = MockUpstream::start().await.unwrap();
    let gw = Gateway::start(one_model(&mock)).await;
    assert_eq!(chat_as(&gw, None, "chat").await.status, 200);
    // SDKs insist on sending some key; with no keys configured it is ignored.
    assert_eq!(
        chat_as(&gw, bearer("sk-whatever"), "chat").await.status,
        200
    );
}

#[tokio::test]
async fn keys_from_the_environment_work_and_never_appear_in_logs() {
    let mock = MockUpstream::start().await.unwrap();
    let client_key = "ck-client-secret-31337";
    let config = temp_file(
        "secrets.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmaster_key = \"{MASTER}\"\n\n\
             [providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"${{UPSTREAM_KEY}}\"\ntimeout = \"500ms\"\n\n\
             [models.chat]\ntargets = [{{ provider = \"up\", model = \"gpt-upstream\" }}]\nretries = 0\n\n\
             [keys.client]\nkey = \"${{CLIENT_KEY}}\"\n",
            mock.url()
        ),
    );
    let mut command = proxima();
    // Trace includes every debug event, and the HTTP libraries' own logs.
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("PROXIMA_LOG", "trace")
        .env("UPSTREAM_KEY", PROVIDER_KEY)
        .env("CLIENT_KEY", client_key);
    let served = Served::start(command);
    let client = http_client();
    let post = |key: &str, body: serde_json::Value| {
        client
            .post(served.url("/v1/chat/completions"))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    // A success, a stream, a rejected key, an upstream error and a timeout all get logged.
    assert_eq!(
        Answer::read(post(client_key, chat_body("chat", "hello")))
            .await
            .status,
        200
    );
    assert_eq!(
        Answer::read(post(MASTER, stream_body("chat", "streamed")))
            .await
            .status,
        200
    );
    assert_eq!(
        Answer::read(post("ck-wrong-key-424242", chat_body("chat", "x")))
            .await
            .status,
        401
    );
    mock.enqueue(mock_upstream::Reply::error(
        401,
        "Incorrect API key provided: sk-up...7f3a9c",
    ));
    assert_eq!(
        Answer::read(post(client_key, chat_body("chat", "x")))
            .await
            .status,
        502
    );
    mock.enqueue(mock_upstream::Reply::hang());
    assert_eq!(
        Answer::read(post(client_key, chat_body("chat", "x")))
            .await
            .status,
        504
    );
    assert_eq!(
        Answer::read(post(client_key, json!({"model": "chat"})))
            .await
            .status,
        400
    );

    // The keys came from the environment and work.
    assert_eq!(
        mock.received()[0].header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );

    let logs = served.stop();
    let _ = std::fs::remove_file(&config);
    assert!(
        logs.contains("request finished"),
        "debug logs should have the usage records: {logs}"
    );
    for secret in [PROVIDER_KEY, client_key, MASTER, "ck-wrong-key-424242"] {
        assert!(
            !logs.contains(secret),
            "the logs contain the secret {secret:?}:\n{logs}"
        );
    }
}
